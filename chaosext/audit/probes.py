"""Audit probe: every service that served stale keys during the outage recorded ``auth.degraded``.

The events are read from AUDIT_SOURCE: the lab's JSONL file, Loki or ClickHouse (``chaosext.audit.sources``).
"Affected" services are those whose JWKS cache was seen stale during the outage (the watch step's ``/healthz``
observations, or ``jwks_cache_state{state="stale"}`` in Prometheus). Never judged before an outage was recorded.
"""
import math
import time

import requests
from chaoslib.types import Configuration, Secrets

from chaosext.audit.sources import AuditEvent, read_events
from chaosext.core.config import ExperimentConfig, load_config
from chaosext.core.errors import activity
from chaosext.core.judging import Judging, outage_check, retry_until
from chaosext.core.runfile import CheckResult, Run, load_run
from chaosext.metrics import contract, prom

__all__ = ["audit_pipeline_healthy", "audit_degraded_recorded"]

#: seconds to wait for events still on their way through the pipeline (collector -> Loki/ClickHouse)
PIPELINE_WAIT_SECONDS = {"file": 5.0, "loki": 30.0, "clickhouse": 30.0}


def _services_seen(run: Run, state: str) -> set[str]:
    """Services the watch step saw with their cache in ``state`` on any tick."""
    return {svc for obs in run.observations for svc, s in obs.services.items() if s.state == state}


def _stale_services(cfg: ExperimentConfig, run: Run, start: float, end: float) -> set[str]:
    """Services that served stale keys in [start, end]: seen by the watch, or in the cache-stale series."""
    found = _services_seen(run, "stale")
    rng = max(1, math.ceil(end - start))
    try:
        # the cache-stale series of the metric contract (METRIC_CACHE_STALE)
        found |= set(prom.services_where(cfg.prometheus_url, contract.current().cache_stale, end, rng))
    except (requests.RequestException, RuntimeError):
        pass
    return {s for s in found if s in cfg.services}


#: actions any healthy service writes (a rejected token is audited, so the live forged-token check leaves events)
LIVE_ACTIONS = ("auth.rejected", "tenant.mismatch", "auth.degraded", "auth.recovered", "auth.expired")


def _degraded_services(cfg: ExperimentConfig, run: Run, start: float, end: float) -> set[str]:
    """Services that served stale keys or failed closed during the outage (they must audit auth.recovered)."""
    found = _stale_services(cfg, run, start, end) | _services_seen(run, "expired")
    return {s for s in found if s in cfg.services}


@activity
def audit_pipeline_healthy(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """The audit pipeline works, live.

    Baseline (before the fault): AUDIT_SOURCE answers and holds at least one event of every service from the last
    BASELINE_SECONDS (the forged-token check, run just before in the hypothesis, makes every healthy service audit a
    rejection). Recovery (after the restore): ``auth.recovered`` for every service that was degraded during the
    outage, within RECOVERY_SECONDS.
    """
    cfg = load_config(configuration)
    run = load_run(cfg.run_dir)
    phase_ = run.phase
    actions: tuple[str, ...]
    if phase_ == "baseline":
        since = time.time() - cfg.baseline_seconds
        want, actions = set(cfg.services), LIVE_ACTIONS
        deadline = time.time() + PIPELINE_WAIT_SECONDS.get(cfg.audit_kind, 10.0)
    else:
        start, end = run.outage_window() or (time.time(), time.time())
        since, want, actions = start - 5, _degraded_services(cfg, run, start, end), ("auth.recovered",)
        deadline = max(end + cfg.recovery_seconds, time.time() + PIPELINE_WAIT_SECONDS.get(cfg.audit_kind, 10.0))

    def look() -> tuple[set[str], int]:
        """The services with an event of ``actions`` since ``since``, and how many events there were."""
        seen: set[str] = set()
        count = 0
        for action in actions:
            events = read_events(cfg.audit_source, action, since, time.time() + 5, tuple(sorted(want)),
                                 cfg.audit_sql)
            count += len(events)
            seen |= {str(e["service"]) for e in events if e.get("service")}
            if want <= seen:
                break
        return seen, count

    recorded, count = retry_until(look, lambda found: want <= found[0], deadline, 2.0)
    missing = sorted(want - recorded)
    what = "an audit event" if phase_ == "baseline" else "auth.recovered"
    return {"phase": phase_, "ok": not missing, "expected": sorted(want), "missing": missing, "events": count,
            "source": cfg.audit_kind,
            "why": "" if not missing else f"no {what} from {', '.join(missing)} in {cfg.audit_source}"}


@activity
@outage_check("auth.degraded")
def audit_degraded_recorded(judging: Judging) -> CheckResult:
    """``auth.degraded`` is in the audit store for each service that served stale keys during the outage.

    ``ok`` false lists the services with no event (``missing``). When no service went stale (outage shorter than
    the TTL), there is nothing to record and ``ok`` is true with ``affected`` empty.
    """
    cfg, (start, end) = judging.cfg, judging.window
    affected = _stale_services(cfg, judging.run, start, end)
    deadline = time.time() + PIPELINE_WAIT_SECONDS.get(cfg.audit_kind, 10.0)

    def services(events: list[AuditEvent]) -> set[str]:
        return {str(e["service"]) for e in events if e.get("service")}

    events = retry_until(lambda: read_events(cfg.audit_source, "auth.degraded", start - 5, time.time() + 5,
                                             tuple(sorted(affected)), cfg.audit_sql),
                         lambda found: affected <= services(found), deadline, 2.0)
    recorded = services(events)
    missing = sorted(affected - recorded)
    return {"phase": "outage", "ok": not missing, "affected": sorted(affected), "recorded": sorted(recorded),
            "missing": missing, "source": cfg.audit_kind, "events": len(events),
            "note": "" if affected else "no service served stale keys during the outage (shorter than the TTL?)"}
