"""The game-day drill ``experiments/jwks-expiry-drill.json``: the outage deliberately outlasts the cache's max-stale.

It passes only if, once a service's cache expired, the service fails CLOSED (valid tokens refused with a status in
REFUSED_STATUSES, every forged token refused: ``no-fail-open``), every expired service audited ``auth.expired``, the
expiry alerts fired in Prometheus and reached Alertmanager; the baseline before and the recovery after the restore
are the main experiment's own hypothesis (caches fresh, tokens accepted, forgeries refused, errors below the max,
alerts resolved, auth.recovered audited). Same configuration names and extension code as the main experiment
(docs/experiment.md, "The expiry drill").

``fails_closed_after_expiry`` is also in the drill's hypothesis: in the baseline it refuses to start when
OUTAGE_SECONDS cannot outlast JWKS_MAX_STALE; ``judge_drill`` (:mod:`chaosext.outage.judge`) runs every drill check
once and keeps the results.
"""
import time

from chaosext.audit.measure import PIPELINE_WAIT_SECONDS, services_of
from chaosext.audit.sources import read_events, role_mapped
from chaosext.core.poll import retry_until
from chaosext.core.settings import Configuration, Secrets
from chaosext.outage.checks import alerts_match_cache_state
from chaosext.outage.hypothesis import alerts_clear, dry
from chaosext.outage.judging import Judging, recorded_or_judged
from chaosext.run.context import RunContext, run_context
from chaosext.run.record import CheckResult

#: the Chaos Toolkit probes of the drill's hypothesis; ``fails_closed``, ``expiry_audited`` and ``expiry_alerts_fired``
#: are its outage checks (``judge_drill``)
__all__ = ["fails_closed_after_expiry", "alerts_clear_before_fault"]

#: the outage must outlast max-stale by this much so every service is seen expired for a few watch ticks
EXPIRY_MARGIN_SECONDS = 8.0


def _drill_can_work(ctx: RunContext) -> CheckResult:
    """Before the fault: OUTAGE_SECONDS must outlast JWKS_MAX_STALE by a margin, else the drill tests nothing."""
    cfg = ctx.cfg
    need = cfg.jwks_max_stale + EXPIRY_MARGIN_SECONDS
    ok = cfg.outage_seconds > need
    return {"phase": "before-fault", "ok": ok, "why": "" if ok else (
        f"OUTAGE_SECONDS={cfg.outage_seconds} cannot outlast the cache (JWKS_MAX_STALE={cfg.jwks_max_stale:g}); "
        f"the drill needs OUTAGE_SECONDS > {need:g} (or a lab with a shorter --jwks-max-stale)")}


def fails_closed(judging: Judging) -> CheckResult:
    """Once a service's cache expired, it refused valid tokens (REFUSED_STATUSES, not 2xx, not 5xx) on every watch
    tick; and every service did expire (else the drill tested nothing)."""
    cfg = judging.cfg
    first = judging.notebook.first_seen("expired")
    refused = set(cfg.refused_statuses)
    checks, failures = 0, []
    for obs in judging.notebook.observations:
        for service, s in obs.services.items():
            if service not in first or obs.t < first[service]:
                continue
            for tenant, status in s.valid.items():
                checks += 1
                if status not in refused:
                    failures.append({"service": service, "tenant": tenant, "status": status,
                                     "elapsed": round(obs.elapsed, 1)})
    never = sorted(set(cfg.services) - set(first))
    why = []
    if never:
        why.append(f"never seen expired: {', '.join(never)} (outage shorter than their max-stale?)")
    if failures:
        why.append(f"{len(failures)} valid-token request(s) after expiry were not refused with "
                   f"{'/'.join(map(str, sorted(refused)))} (200 = fail-open, 5xx = crash)")
    return {"phase": "outage", "ok": checks > 0 and not never and not failures, "checks": checks,
            "expired_services": sorted(first), "never_expired": never, "failures": failures[:10],
            "why": "; ".join(why) or ("" if checks else "no valid-token check ran after expiry")}


def fails_closed_after_expiry(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """Once a service's cache expired, it refused valid tokens (REFUSED_STATUSES, not 2xx, not 5xx) on every watch
    tick; and every service did expire (else the drill tested nothing).

    Before the fault: checks the drill can work at all (OUTAGE_SECONDS > JWKS_MAX_STALE + a margin). After the
    outage: the result ``judge_drill`` recorded."""
    ctx = run_context(configuration, secrets)
    return dry(ctx) or recorded_or_judged(ctx, fails_closed, before=_drill_can_work)


def expiry_audited(judging: Judging) -> CheckResult:
    """Every service whose cache expired recorded ``auth.expired`` in the audit store (AUDIT_SOURCE)."""
    cfg = judging.cfg
    expired = set(judging.notebook.first_seen("expired"))
    deadline = time.time() + PIPELINE_WAIT_SECONDS.get(cfg.audit_kind, 10.0)
    if not role_mapped(judging.ctx, "expired"):
        return {"phase": "outage", "ok": True, "not_judged": True, "affected": sorted(expired),
                "gap": "the target names no audit action for failing closed (audit.actions.expired in TARGET_FILE)"}
    events = retry_until(lambda: read_events(judging.ctx, "expired", judging.start - 5, time.time() + 5,
                                             tuple(sorted(expired))),
                         lambda found: expired <= services_of(found), deadline, 2.0)
    missing = sorted(expired - services_of(events))
    return {"phase": "outage", "ok": bool(expired) and not missing, "affected": sorted(expired), "missing": missing,
            "events": len(events), "note": "" if expired else "no service expired: nothing to audit"}


def expiry_alerts_fired(judging: Judging) -> CheckResult:
    """The cache expired AND every EXPIRY_ALERTS alert fired in Prometheus and reached Alertmanager (the main
    experiment's alerts-fire-iff-cache-expired, with expiry required)."""
    res = dict(alerts_match_cache_state(judging))
    if not res.get("cache_expired"):
        res.update(ok=False, why="the cache never expired, so the expiry alerts were not exercised")
    return res


def alerts_clear_before_fault(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """Baseline: no expiry alert is active before the fault (else expiry-alerts-fired would prove nothing).

    Recovery: not required. The drill makes the alerts fire on purpose, and over their 5-minute windows they resolve
    minutes after the restore, past RECOVERY_SECONDS; the drill judges that they fired (``expiry-alerts-fired``)."""
    ctx = run_context(configuration, secrets)
    if (skipped := dry(ctx)) is not None:
        return skipped
    if ctx.record().outage_window() is None:
        return alerts_clear(ctx)
    return {"phase": "recovery", "ok": True,
            "note": "the drill fired the expiry alerts on purpose; they resolve with their 5-minute windows, after "
                    "RECOVERY_SECONDS (judged: expiry-alerts-fired)"}
