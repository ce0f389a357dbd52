"""The steady state around the outage: the experiment's hypothesis probes, judged live before the fault (the
baseline) and again after the restore (the recovery).

Each probe is a thin Chaos Toolkit adapter: it looks its run up (``chaosext.run.context.run_context``), takes the
phase from the run record (``baseline`` before any outage, ``recovery`` after it) and judges the domains' plain
measurements (``chaosext.metrics.measure``, ``chaosext.auth.measure``, ``chaosext.audit.measure``). A recovery check
retries until it holds or RECOVERY_SECONDS after the restore have passed; a baseline check runs once.
"""
import time
from typing import Any

from chaosext.audit.measure import PIPELINE_WAIT_SECONDS, services_recorded
from chaosext.audit.sources import role_mapped
from chaosext.auth.judge import with_coverage
from chaosext.auth.measure import ForgeryPlan, valid_token_statuses
from chaosext.core.poll import retry_until
from chaosext.core.settings import Configuration, Secrets
from chaosext.metrics import prom
from chaosext.metrics.cache import read_caches, services_in_state
from chaosext.metrics.measure import active_expiry_alerts
from chaosext.outage.checks import error_rate_result
from chaosext.outage.notebook import load_notebook
from chaosext.run.context import RunContext, run_context
from chaosext.run.record import CheckResult

#: the Chaos Toolkit probes (``chaos discover``); ``error_rate`` and ``alerts_clear`` are what they judge, for the drill
__all__ = ["jwks_caches_fresh", "valid_tokens_accepted", "forged_tokens_refused", "error_rate_within_max",
           "expiry_alerts_clear", "audit_pipeline_healthy"]


def dry(ctx: RunContext) -> CheckResult | None:
    """A dry run (``chaos run --dry actions``) changes nothing and starts no load: a probe then judges nothing and says
    so (``ok``, so the rehearsal shows no false alarm; ``chaosext verdict`` says DRY RUN). None outside a dry run."""
    if not ctx.dry_run:
        return None
    return {"phase": "dry-run", "ok": True, "not_judged": True,
            "note": f"dry run ({ctx.dry_run}): nothing was started or injected, so nothing is judged"}


def jwks_caches_fresh(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """Every service's JWKS cache is fresh (read through its cache signal: ``chaosext.metrics.cache``), live.

    Baseline: fresh before the fault (a stale or expired cache is already degraded). Recovery: every service fetched
    the JWKS again within RECOVERY_SECONDS of the restore (``not_recovered`` names the ones that did not). The
    moment they all are is noted in the run record (``recovered_at``): the recovery's error-rate window starts there.
    """
    ctx = run_context(configuration, secrets)
    if (skipped := dry(ctx)) is not None:
        return skipped
    run = ctx.record()
    phase = run.phase
    states = retry_until(lambda: read_caches(ctx), lambda st: all(r.state in ("fresh", "unknown") for r in st.values()),
                         run.recovery_deadline(ctx.cfg.recovery_seconds), 1.0)
    unknown = sorted(s for s, r in states.items() if r.state == "unknown")
    bad = sorted(s for s, r in states.items() if r.state not in ("fresh", "unknown"))
    if phase == "recovery" and not bad and not unknown:
        with ctx.edit() as recorded:
            recorded.recovered_at = time.time()
    key = "not_recovered" if phase == "recovery" else "not_fresh"
    out: CheckResult = {"phase": phase, "ok": not bad, key: bad, "states": {s: r.state for s, r in states.items()},
                        "source": sorted({r.source for r in states.values()})}
    if unknown:  # no signal says: an honest gap, never a silent "fresh"
        out["not_judged"] = True
        out["unknown"] = {s: states[s].detail for s in unknown}
        out["gap"] = f"the cache state of {', '.join(unknown)} cannot be read: " + "; ".join(
            states[s].detail for s in unknown)
    return out


def valid_tokens_accepted(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """Valid tokens of several tenants are accepted (200) by every service, live.

    Baseline (before the fault): at once. Recovery (after the restore): retried until every service accepts them or
    RECOVERY_SECONDS have passed since the restore.
    """
    ctx = run_context(configuration, secrets)
    if (skipped := dry(ctx)) is not None:
        return skipped
    run = ctx.record()
    result = retry_until(lambda: valid_token_statuses(ctx), lambda r: bool(r["ok"]),
                         run.recovery_deadline(ctx.cfg.recovery_seconds), 1.0)
    return {**result, "phase": run.phase}


def forged_tokens_refused(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """The whole forgery catalogue (``chaosext.auth.forgery``: every class for every tenant the run drives, every
    variant for the first) is refused by every service on its read and write route, live: the baseline before the
    fault and the recovery after the restore.

    A refusal is a status in REFUSED_STATUSES; 2xx is a fail-open finding; anything else is inconclusive and fails
    too (``why`` says which statuses to allow). ``classes`` shows tried/refused/accepted/inconclusive per class."""
    ctx = run_context(configuration, secrets)
    if (skipped := dry(ctx)) is not None:
        return skipped
    plan = ForgeryPlan(ctx)
    judged = with_coverage(plan.judge(ctx.cfg, plan.round(ctx.cfg), None), plan.tenants)
    return {"phase": ctx.record().phase, **judged}


def error_rate(ctx: RunContext) -> CheckResult:
    """The server-side error rate of the live window (see :func:`error_rate_within_max`)."""
    cfg = ctx.cfg
    run = ctx.record()
    phase = run.phase
    p = prom.prom_of(ctx)
    services = tuple(cfg.services)
    if phase == "baseline":
        end = time.time()
        start, want = end - cfg.baseline_seconds, cfg.baseline_min_requests
        res = prom.error_rate_between(p, start, end, services)
    else:
        start = run.recovery_start()
        want = min(cfg.baseline_min_requests, 50)
        deadline = max(run.recovery_deadline(cfg.recovery_seconds), time.time() + 5)
        while True:
            end = time.time()
            # from each service's first scrape after the recovery began: the scrape straddling it also carries the
            # errors made before the caches were fresh again
            res = prom.error_rate_between(p, start, end, services, from_next_scrape=True)
            if (res["requests"] >= want and end - start >= 5 and not res["problems"]) or end >= deadline:
                break
            time.sleep(1.0)
    return error_rate_result(cfg, phase, res, start, end, want)


def error_rate_within_max(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """Server-side error rate (Prometheus) below ERROR_RATE_MAX, live.

    Baseline (before the fault): over the last BASELINE_SECONDS, which must hold at least BASELINE_MIN_REQUESTS
    requests (the safety control's k6 warms it up). Recovery (after the restore): from each service's first scrape
    after the moment every service's cache was fresh again (else the restore) until now — the scrape straddling that
    moment also carries errors made before it — waiting for enough requests within RECOVERY_SECONDS. Every service
    the run drives must show traffic in the window; counted per series, restarts included
    (``chaosext.metrics.prom.error_rate_between``).
    """
    ctx = run_context(configuration, secrets)
    return dry(ctx) or error_rate(ctx)


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
    ctx = run_context(configuration, secrets)
    return dry(ctx) or alerts_clear(ctx)


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
    rejection: the target's ``audit.actions.rejected``; any event counts). Recovery (after the restore): the target's
    ``recovered`` action for every service that was degraded during the outage, within RECOVERY_SECONDS. A target
    that names no such action cannot be judged here: the result says so (``gap``), never a silent pass.
    """
    ctx = run_context(configuration, secrets)
    if (skipped := dry(ctx)) is not None:
        return skipped
    cfg = ctx.cfg
    run = ctx.record()
    phase = run.phase
    wait = PIPELINE_WAIT_SECONDS.get(cfg.audit_kind, 10.0)
    gap = ""
    if phase == "baseline":
        since, want, roles = time.time() - cfg.baseline_seconds, set(cfg.services), ("",)
        deadline = time.time() + wait
        what = "an audit event"
    else:
        start, end = run.outage_window() or (time.time(), time.time())
        since, want, roles = start - 5, _degraded_services(ctx, start, end), ("recovered",)
        deadline = max(end + cfg.recovery_seconds, time.time() + wait)
        what = f"{cfg.audit.action('recovered') or 'recovered'} (audit.actions.recovered)"
        if not role_mapped(ctx, "recovered"):
            return {"phase": phase, "ok": True, "expected": sorted(want), "missing": [], "events": 0,
                    "source": cfg.audit_kind, "not_judged": True,
                    "gap": "the target names no audit action for a recovery (audit.actions.recovered in "
                           "TARGET_FILE): whether the services audited their recovery cannot be judged"}

    found: tuple[set[str], int] = retry_until(lambda: services_recorded(ctx, roles, since, time.time() + 5, want),
                                             lambda f: want <= f[0], deadline, 2.0)
    recorded, count = found
    missing = sorted(want - recorded)
    if phase == "baseline" and missing and not role_mapped(ctx, "rejected"):
        gap = (f"no audit event from {', '.join(missing)} before the fault, and the target names no action it "
               f"audits a refused token with (audit.actions.rejected): the pipeline's liveness cannot be proven")
    out: dict[str, Any] = {"phase": phase, "ok": not missing or bool(gap), "expected": sorted(want),
                           "missing": missing, "events": count, "source": cfg.audit_kind,
                           "why": "" if not missing else f"no {what} from {', '.join(missing)} in {cfg.audit_source}"}
    if gap:
        out.update(not_judged=True, gap=gap)
    return out
