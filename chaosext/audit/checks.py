"""What the audit checks need, before anything changes (``chaosext doctor`` and the run's pre-flight): AUDIT_SOURCE
readable with the given credentials."""
from __future__ import annotations

import os
import time

import requests

from chaosext.audit.sources import read_events
from chaosext.core.backends import BackendError
from chaosext.core.findings import Finding
from chaosext.core.target import AUDIT_ROLES
from chaosext.run.context import RunContext

__all__ = ["check_audit", "check_audit_mapping"]


def check_audit(ctx: RunContext) -> Finding:
    """AUDIT_SOURCE is readable with the given credentials (file directory present; Loki / ClickHouse answer)."""
    cfg = ctx.cfg
    name = f"audit source ({cfg.audit_kind})"
    if cfg.audit_kind == "file" and not os.path.isdir(os.path.dirname(cfg.audit_location) or "."):
        return Finding(name, False, f"{cfg.audit_source}: directory does not exist",
                       "start the lab, or set AUDIT_SOURCE to file:<path the services write>, loki:<url> or "
                       "clickhouse:<url>")
    now = time.time()
    try:
        events = read_events(ctx, "", now - 86400, now, tuple(cfg.services))
    except BackendError as exc:
        kind = cfg.audit_kind.upper()
        return Finding(name, False, f"{cfg.audit_source}: {exc}",
                       f"give {kind}'s credentials (docs/experiment.md, 'Secrets and authenticated backends')")
    except (requests.RequestException, OSError, ValueError, RuntimeError) as exc:
        return Finding(name, False, f"{cfg.audit_source}: {type(exc).__name__}: {str(exc)[:200]}",
                       "set AUDIT_SOURCE to file:<path>, loki:<url> or clickhouse:<url> reachable from here")
    return Finding(name, True, f"{cfg.audit_source}: readable ({len(events)} event(s) in the last 24 h)")


def check_audit_mapping(ctx: RunContext) -> list[Finding]:
    """The audit actions the target does not name (warnings, listed before the run): the checks that look for them
    will say they could not judge."""
    uses = {"degraded": "auth-degraded-audited", "recovered": "the recovery's audit-pipeline-healthy",
            "expired": "the drill's auth-expired-audited", "rejected": "the baseline's audit-pipeline-healthy (proof "
                                                                      "the pipeline is alive)"}
    return [Finding(f"not judged: audit {role}", False, f"the target names no audit action for {role!r}: {uses[role]} "
                    f"cannot be judged", f"give audit.actions.{role} in TARGET_FILE (docs/target.md)", required=False)
            for role in AUDIT_ROLES if not ctx.cfg.audit.action(role)]
