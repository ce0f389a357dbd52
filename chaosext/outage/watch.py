"""The watch step: ``watch_outage``, between ``block-jwks-egress`` and ``restore-jwks-egress`` in the method.

It is declared a *probe* in the experiments because it never changes the system under test: it sends GETs, valid and
forged tokens, asks the fault driver to verify (read-only) and reads Prometheus, Alertmanager and k6. What it writes
is the run's own record: the outage window on its timeline (``chaosext.run.record``) and one observation per tick
in the outage notebook (``chaosext.outage.notebook``),
which the outage checks judge afterwards (``chaosext.outage.judge``) — during the outage is the only time they can be
seen. Ending the outage early is a decision (``chaosext.outage.guard``), not an action: the watch returns, and the
restore step that follows restores and records why.
"""
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chaoslib.exceptions import InterruptExecution

from chaosext.auth.measure import ensure_tokens, forgery_plan
from chaosext.core import signals
from chaosext.core.settings import Configuration, Secrets
from chaosext.egress import build_driver
from chaosext.egress.actions import run_fault
from chaosext.metrics.measure import error_counts_between, firing_now
from chaosext.outage.guard import SIGTERM_REASON, AbortGuard, decide
from chaosext.outage.notebook import Notebook, Observation, save_notebook
from chaosext.outage.observe import fault_check, k6_snapshot, observe_services, tick_rates
from chaosext.run.context import run_context

__all__ = ["watch_outage"]

logger = logging.getLogger("chaostoolkit")


def watch_outage(duration_seconds: int = 0, configuration: Configuration = None,
                 secrets: Secrets = None) -> dict[str, Any]:
    """Watch the services through the outage (OUTAGE_SECONDS unless ``duration_seconds`` > 0), then return.

    Records the outage window (start now, end on return) in the run file; every WATCH_INTERVAL seconds checks that the
    fault still holds (the JWKS unreachable from the target), checks valid and forged tokens against every service,
    notes which expiry alerts fire and prints a progress line. Ends early, without changing anything itself, when the
    abort guard decides to (server-side error rate above ABORT_ERROR_RATE for ABORT_AFTER_SECONDS) or on SIGTERM: the
    restore step that follows restores and records why. Returns at once when this run applied no fault (a dry run,
    or a fault that failed) — there is no outage to watch. A probe that records: it never changes the system, it
    writes only this run's own run file (what the outage checks judge). Returns a summary dict.
    """
    ctx = run_context(configuration, secrets)
    cfg = ctx.cfg
    spec = run_fault(ctx)
    if spec is None:
        why = "dry run: no fault was applied" if ctx.dry_run else "this run applied no fault"
        logger.info("[outage] not watching: %s", why)
        return {"watched": False, "reason": why, "ticks": 0}
    driver = build_driver(spec.via, spec.options, secrets)
    duration = duration_seconds if duration_seconds > 0 else cfg.outage_seconds
    interval = max(1.0, cfg.watch_interval)
    guard = AbortGuard(cfg.abort_error_rate, cfg.abort_after_seconds)
    tokens = ensure_tokens(ctx)
    forged = forgery_plan(ctx) if tokens else None
    run = ctx.record()
    k6_address = run.k6.address if run.k6 is not None else ""
    start = time.time()
    end_by = start + duration
    with ctx.edit() as run:
        run.begin_outage(start, spec.run_id, k6_snapshot(k6_address))
    notebook = Notebook()
    if ctx.run_dir is not None:
        save_notebook(ctx.run_dir, notebook)  # a fresh notebook for this outage
    counted_to, total, reason, tick = start, (0.0, 0.0), "", 0
    observations: list[Observation] = []
    logger.info("[outage] JWKS blocked for %ss (fault %s); watching %s every %.0fs", duration, spec.run_id,
                ",".join(cfg.services), interval)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        while True:
            now = time.time()
            if signals.terminating():  # before another round of requests
                reason = SIGTERM_REASON
                break
            held = pool.submit(fault_check, spec, driver)
            services, forgery = observe_services(ctx, tokens, forged, tick, start)
            holds, detail = held.result()
            # what the services counted since the last tick Prometheus answered (restarts handled); none now:
            # counted with the next tick instead
            counts = error_counts_between(ctx, counted_to, now)
            if counts is not None:
                counted_to, total = now, (total[0] + counts[0], total[1] + counts[1])
            rates = tick_rates(total, counts or (0.0, 0.0))
            in_prom, in_am = firing_now(ctx)
            obs = Observation(t=now, elapsed=now - start, error_rate=rates.overall, recent_error_rate=rates.recent,
                              requests=rates.requests, recent_requests=rates.recent_requests, fault_holds=holds,
                              fault_detail=detail, services=services)
            observations.append(obs)
            notebook.add_tick(obs, forgery, in_prom, in_am)
            if ctx.run_dir is not None:
                save_notebook(ctx.run_dir, notebook)
            cache = " ".join(f"{n}={s.state}" for n, s in services.items())
            logger.info("[outage] %4.0fs left | error rate %.2f%% (last %.0fs: %.2f%%) of %d req | cache %s%s%s",
                        max(0.0, end_by - now), rates.overall * 100, interval, rates.recent * 100, rates.requests,
                        cache, " | alerts " + ",".join(sorted(in_prom | in_am)) if in_prom or in_am else "",
                        "" if holds else f" | OUTAGE NOT HOLDING: JWKS {detail}")
            decision = decide(guard, observations, now, end_by, signals.terminating())
            if decision.stop:
                reason = decision.reason
                break
            time.sleep(max(0.0, min(now + interval, end_by) - time.time()))  # a steady cadence: the checks take time
            tick += 1
    except (KeyboardInterrupt, InterruptExecution) as exc:
        reason = f"interrupted ({type(exc).__name__})"
        raise
    finally:
        pool.shutdown(wait=False)
        end = time.time()
        with ctx.edit() as run:
            run.end_outage(end, reason, k6_snapshot(k6_address))
        if reason.startswith("abort guard"):
            logger.warning("[outage] %s: ending the outage now (the restore step restores)", reason)
    logger.info("[outage] over after %.0fs%s", end - start, f" ({reason})" if reason else "")
    return {"watched": True, "start": start, "end": end, "seconds": round(end - start, 1), "aborted": bool(reason),
            "reason": reason, "ticks": tick + 1, "fault_run_id": spec.run_id}
