"""The steady state around the outage: the experiment's hypothesis probes, judged live before the fault (the
baseline) and again after the restore (the recovery).

Each probe is a thin Chaos Toolkit adapter: it looks its run up (``chaosext.run.context.run_context``), takes the
phase from the run record (``baseline`` before any outage, ``recovery`` after it) and judges the domains' plain
measurements (``chaosext.metrics.measure``, ``chaosext.auth.measure``, ``chaosext.audit.measure``). A recovery check
retries until it holds or RECOVERY_SECONDS after the restore have passed; a baseline check runs once.
"""
import time
from typing import Any

from chaosext.audit.measure import LIVE_ACTIONS, PIPELINE_WAIT_SECONDS, services_recorded
from chaosext.auth.measure import ForgeryPlan, valid_token_statuses
from chaosext.core.poll import retry_until
from chaosext.core.settings import Configuration, Secrets
from chaosext.metrics import prom
from chaosext.metrics.measure import active_expiry_alerts, cache_states, services_in_state
from chaosext.outage.notebook import load_notebook
from chaosext.run.context import RunContext, run_context
from chaosext.run.record import CheckResult

#: the Chaos Toolkit probes (``chaos discover``); ``error_rate`` and ``alerts_clear`` are what they judge, for the drill
__all__ = ["jwks_caches_fresh", "valid_tokens_accepted", "forged_tokens_refused", "error_rate_within_max",
           "expiry_alerts_clear", "audit_pipeline_healthy"]


def jwks_caches_fresh(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """Every service's JWKS cache is fresh (its cache series in Prometheus, else its ``/healthz``), live.

    Baseline: fresh before the fault (a stale or expired cache is already degraded). Recovery: every service fetched
    the JWKS again within RECOVERY_SECONDS of the restore (``not_recovered`` names the ones that did not). The
    moment they all are is noted in the run record (``recovered_at``): the recovery's error-rate window starts there.
    """
    ctx = run_context(configuration, secrets)
    run = ctx.record()
    phase = run.phase
    states = retry_until(lambda: cache_states(ctx), lambda st: all(state == "fresh" for state, _ in st.values()),
                         run.recovery_deadline(ctx.cfg.recovery_seconds), 1.0)
    bad = sorted(s for s, (state, _) in states.items() if state != "fresh")
    if phase == "recovery" and not bad:
        with ctx.edit() as recorded:
            recorded.recovered_at = time.time()
    key = "not_recovered" if phase == "recovery" else "not_fresh"
    return {"phase": phase, "ok": not bad, key: bad, "states": {s: st for s, (st, _) in states.items()},
            "source": sorted({src for _, src in states.values()})}


def valid_tokens_accepted(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """Valid tokens of several tenants are accepted (200) by every service, live.

    Baseline (before the fault): at once. Recovery (after the restore): retried until every service accepts them or
    RECOVERY_SECONDS have passed since the restore.
    """
    ctx = run_context(configuration, secrets)
    run = ctx.record()
    result = retry_until(lambda: valid_token_statuses(ctx), lambda r: bool(r["ok"]),
                         run.recovery_deadline(ctx.cfg.recovery_seconds), 1.0)
    return {**result, "phase": run.phase}


def forged_tokens_refused(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """The whole forgery catalogue (every variant, ``chaosext.auth.forgery``) is refused by every service on its read
    and write route, live: the baseline before the fault and the recovery after the restore.

    A refusal is a status in REFUSED_STATUSES; 2xx is a fail-open finding; anything else is inconclusive and fails
    too (``why`` says which statuses to allow). ``classes`` shows tried/refused/accepted/inconclusive per class."""
    ctx = run_context(configuration, secrets)
    plan = ForgeryPlan(ctx)
    judged = plan.judge(ctx.cfg, plan.round(ctx.cfg), None)
    return {"phase": ctx.record().phase, **judged}


def error_rate(ctx: RunContext) -> CheckResult:
    """The server-side error rate of the live window (see :func:`error_rate_within_max`)."""
    cfg = ctx.cfg
    run = ctx.record()
    phase = run.phase
    p = prom.prom_of(ctx)
    if phase == "baseline":
        end = time.time()
        start, want = end - cfg.baseline_seconds, cfg.baseline_min_requests
        res = prom.error_rate_between(p, start, end)
    else:
        start = run.recovery_start()
        want = min(cfg.baseline_min_requests, 50)
        deadline = max(run.recovery_deadline(cfg.recovery_seconds), time.time() + 5)
        while True:
            end = time.time()
            res = prom.error_rate_between(p, start, end)
            if (res["requests"] >= want and end - start >= 5) or end >= deadline:
                break
            time.sleep(1.0)
    ok = res["requests"] >= want and res["error_rate"] < cfg.error_rate_max
    note = "" if res["requests"] >= want else (
        f"only {res['requests']:.0f} requests in the window (need {want}): is k6 running, and is PROMETHEUS_URL "
        f"the one that scrapes the services?")
    return {"phase": phase, "ok": ok, "error_rate": round(res["error_rate"], 5), "errors": round(res["errors"]),
            "requests": round(res["requests"]), "max": cfg.error_rate_max, "window_seconds": round(end - start, 1),
            "note": note}


def error_rate_within_max(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """Server-side error rate (Prometheus) below ERROR_RATE_MAX, live.

    Baseline (before the fault): over the last BASELINE_SECONDS, which must hold at least BASELINE_MIN_REQUESTS
    requests (the safety control's k6 warms it up). Recovery (after the restore): from the moment every service's
    cache was fresh again (else the restore) until now, waiting for enough requests within RECOVERY_SECONDS.
    """
    return error_rate(run_context(configuration, secrets))


def alerts_clear(ctx: RunContext) -> CheckResult:
    """No expiry alert active (see :func:`expiry_alerts_clear`)."""
    cfg = ctx.cfg
    run = ctx.record()
    phase = run.phase
    active = retry_until(lambda: active_expiry_alerts(ctx), lambda a: not a["prometheus"] and not a["alertmanager"],
                         run.recovery_deadline(cfg.recovery_seconds), 2.0)
    clear = not active["prometheus"] and not active["alertmanager"]
    return {"phase": phase, "ok": clear, "expected_clear": list(cfg.expiry_alerts),
            "active_prometheus": active["prometheus"], "active_alertmanager": active["alertmanager"],
            "why": "no expiry alert active" if clear else
            ("expiry alerts already active before the fault" if phase == "baseline" else
             f"expiry alerts still active {cfg.recovery_seconds}s after the restore")}


def expiry_alerts_clear(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """None of EXPIRY_ALERTS firing or pending (Prometheus) nor active (Alertmanager), live.

    Baseline: an alert already active means the system is unhealthy (and a new alert could not be told from an old
    one), so no fault is injected. Recovery: every expiry alert that fired has resolved within RECOVERY_SECONDS.
    """
    return alerts_clear(run_context(configuration, secrets))


def _degraded_services(ctx: RunContext, start: float, end: float) -> set[str]:
    """Services that served stale keys or failed closed during the outage (they must audit auth.recovered)."""
    notebook = load_notebook(ctx.run_dir)
    found = notebook.services_seen("stale") | notebook.services_seen("expired") \
        | services_in_state(ctx, "stale", start, end)
    return found & set(ctx.cfg.services)


def audit_pipeline_healthy(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """The audit pipeline works, live.

    Baseline (before the fault): AUDIT_SOURCE answers and holds at least one event of every service from the last
    BASELINE_SECONDS (the forged-token check, run just before in the hypothesis, makes every healthy service audit a
    rejection). Recovery (after the restore): ``auth.recovered`` for every service that was degraded during the
    outage, within RECOVERY_SECONDS.
    """
    ctx = run_context(configuration, secrets)
    cfg = ctx.cfg
    run = ctx.record()
    phase = run.phase
    actions: tuple[str, ...]
    wait = PIPELINE_WAIT_SECONDS.get(cfg.audit_kind, 10.0)
    if phase == "baseline":
        since = time.time() - cfg.baseline_seconds
        want, actions = set(cfg.services), LIVE_ACTIONS
        deadline = time.time() + wait
    else:
        start, end = run.outage_window() or (time.time(), time.time())
        since, want, actions = start - 5, _degraded_services(ctx, start, end), ("auth.recovered",)
        deadline = max(end + cfg.recovery_seconds, time.time() + wait)

    found: tuple[set[str], int] = retry_until(lambda: services_recorded(ctx, actions, since, time.time() + 5, want),
                                             lambda f: want <= f[0], deadline, 2.0)
    recorded, count = found
    missing = sorted(want - recorded)
    what = "an audit event" if phase == "baseline" else "auth.recovered"
    out: dict[str, Any] = {"phase": phase, "ok": not missing, "expected": sorted(want), "missing": missing,
                           "events": count, "source": cfg.audit_kind,
                           "why": "" if not missing else f"no {what} from {', '.join(missing)} in {cfg.audit_source}"}
    return out
