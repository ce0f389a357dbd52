"""The game-day drill ``experiments/jwks-expiry-drill.json``: the outage deliberately outlasts the cache's max-stale.

It passes only if, once a service's cache expired, the service fails CLOSED (valid tokens refused with a status in
REFUSED_STATUSES, every forged token refused: ``no-fail-open``), every expired service audited ``auth.expired``, the
expiry alerts fired in Prometheus and reached Alertmanager; the baseline before and the recovery after the restore
are the main experiment's own hypothesis (caches fresh, tokens accepted, forgeries refused, errors below the max,
alerts resolved, auth.recovered audited). Same configuration names and extension code as the main experiment
(docs/experiment.md, "The expiry drill").

``fails_closed_after_expiry`` is also in the drill's hypothesis: in the baseline it refuses to start when
OUTAGE_SECONDS cannot outlast JWKS_MAX_STALE; ``judge_drill`` (``chaosext.outage.judge``) runs every outage check once
and keeps the results.
"""
import time
from collections.abc import Callable

from chaoslib.types import Configuration, Secrets

from chaosext.audit.sources import read_events
from chaosext.core.config import ExperimentConfig, load_config
from chaosext.core.errors import activity
from chaosext.core.judging import Judging, outage_check
from chaosext.core.runfile import CheckResult, Run, load_run
from chaosext.metrics.probes import alerts_match_cache_state, expiry_alerts_clear

__all__ = ["fails_closed_after_expiry", "expiry_audited", "expiry_alerts_fired", "alerts_clear_before_fault"]

#: the outage must outlast max-stale by this much so every service is seen expired for a few watch ticks
EXPIRY_MARGIN_SECONDS = 8.0
#: seconds to wait for audit events still on their way through the pipeline
AUDIT_WAIT_SECONDS = {"file": 5.0, "loki": 30.0, "clickhouse": 30.0}


def _expired_at(run: Run) -> dict[str, float]:
    """Per service: when the watch step first saw its cache expired."""
    first: dict[str, float] = {}
    for obs in run.observations:
        for service, s in obs.services.items():
            if s.state == "expired":
                first.setdefault(service, obs.t)
    return first


def _drill_can_work(cfg: ExperimentConfig) -> CheckResult:
    """Before the fault: OUTAGE_SECONDS must outlast JWKS_MAX_STALE by a margin, else the drill tests nothing."""
    need = cfg.jwks_max_stale + EXPIRY_MARGIN_SECONDS
    ok = cfg.outage_seconds > need
    return {"phase": "before-fault", "ok": ok, "why": "" if ok else (
        f"OUTAGE_SECONDS={cfg.outage_seconds} cannot outlast the cache (JWKS_MAX_STALE={cfg.jwks_max_stale:g}); "
        f"the drill needs OUTAGE_SECONDS > {need:g} (or a lab with a shorter --jwks-max-stale)")}


@activity
@outage_check(before=_drill_can_work)
def fails_closed_after_expiry(judging: Judging) -> CheckResult:
    """Once a service's cache expired, it refused valid tokens (REFUSED_STATUSES, not 2xx, not 5xx) on every watch
    tick; and every service did expire (else the drill tested nothing).

    Before the fault: checks the drill can work at all (OUTAGE_SECONDS > JWKS_MAX_STALE + a margin)."""
    cfg, run = judging.cfg, judging.run
    first = _expired_at(run)
    refused = set(cfg.refused_statuses)
    checks, failures = 0, []
    for obs in run.observations:
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


def _after_the_fault(note: str) -> Callable[[ExperimentConfig], CheckResult]:
    """A ``before`` for ``outage_check``: before the fault, ok with ``note`` (the check waits for the outage)."""
    return lambda cfg: {"phase": "before-fault", "ok": True, "note": note}


@activity
@outage_check(before=_after_the_fault("auth.expired is judged after the fault"))
def expiry_audited(judging: Judging) -> CheckResult:
    """Every service whose cache expired recorded ``auth.expired`` in the audit store (AUDIT_SOURCE)."""
    cfg = judging.cfg
    expired = set(_expired_at(judging.run))
    deadline = time.time() + AUDIT_WAIT_SECONDS.get(cfg.audit_kind, 10.0)
    while True:
        events = read_events(cfg.audit_source, "auth.expired", judging.start - 5, time.time() + 5,
                             tuple(sorted(expired)), cfg.audit_sql)
        missing = sorted(expired - {e.get("service") for e in events})
        if not missing or time.time() >= deadline:
            break
        time.sleep(2.0)
    return {"phase": "outage", "ok": bool(expired) and not missing, "affected": sorted(expired), "missing": missing,
            "events": len(events), "note": "" if expired else "no service expired: nothing to audit"}


@activity
@outage_check(before=_after_the_fault("alerting is judged after the fault"))
def expiry_alerts_fired(judging: Judging) -> CheckResult:
    """The cache expired AND every EXPIRY_ALERTS alert fired in Prometheus and reached Alertmanager (the main
    experiment's alerts-fire-iff-cache-expired, with expiry required)."""
    res = dict(alerts_match_cache_state(configuration=judging.configuration))
    if not res.get("cache_expired"):
        res.update(ok=False, why="the cache never expired, so the expiry alerts were not exercised")
    return res


@activity
def alerts_clear_before_fault(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """Baseline: no expiry alert is active before the fault (else expiry-alerts-fired would prove nothing).

    Recovery: not required. The drill makes the alerts fire on purpose, and over their 5-minute windows they resolve
    minutes after the restore, past RECOVERY_SECONDS; the drill judges that they fired (``expiry-alerts-fired``)."""
    cfg = load_config(configuration)
    if load_run(cfg.run_dir).outage_window() is None:
        return expiry_alerts_clear(configuration=configuration)
    return {"phase": "recovery", "ok": True,
            "note": "the drill fired the expiry alerts on purpose; they resolve with their 5-minute windows, after "
                    "RECOVERY_SECONDS (judged: expiry-alerts-fired)"}

