"""What the watch observes on one tick: the services, the fault, Prometheus' counters, the alerts, k6.

Each function only reads (HTTP GETs, the fault driver's ``verify``, the forged requests the no-fail-open check sends)
and never raises for an unreachable component: the tick records what it could see. :func:`tick_rates` is the pure
error-rate arithmetic over Prometheus' cumulative counters.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chaosext.auth.measure import ForgeryPlan, call
from chaosext.egress.base import Driver, FaultSpec
from chaosext.load.probes import k6_live_metrics
from chaosext.metrics.cache import read_caches
from chaosext.metrics.measure import Counts
from chaosext.outage.notebook import ServiceObservation
from chaosext.run.context import RunContext
from chaosext.run.record import CheckResult, K6Snapshot

__all__ = ["TickRates", "tick_rates", "fault_check", "forged_counts", "observe_services", "k6_snapshot"]


@dataclass(frozen=True)
class TickRates:
    """Server-side error rates of a tick: since the outage started (``overall``) and over the last tick."""

    overall: float
    recent: float
    requests: float
    recent_requests: float


def tick_rates(total: Counts, tick: Counts) -> TickRates:
    """Rates since the outage began (``total``: what every tick so far counted, summed) and over the last tick
    (``tick``: what was counted since the previous tick). Both are counts of a window (increases, restarts handled:
    ``chaosext.metrics.measure.error_counts_between``), never a difference of two cumulative sums, so a service that
    restarts cannot make them negative; clipped at 0 all the same."""
    c_err, c_tot = max(0.0, total[0]), max(0.0, total[1])
    d_err, d_tot = max(0.0, tick[0]), max(0.0, tick[1])
    return TickRates(overall=c_err / c_tot if c_tot > 0 else 0.0, recent=d_err / d_tot if d_tot > 0 else 0.0,
                     requests=c_tot, recent_requests=d_tot)


def fault_check(spec: FaultSpec, driver: Driver) -> tuple[bool, str]:
    """(holds, detail): does the fault still make the JWKS unreachable from the target? (the driver's own verify:
    rules in place and a fresh connection from inside the target failing the way the mode says)."""
    try:
        check = driver.verify(spec)
    except Exception as exc:
        return False, f"verify failed: {type(exc).__name__}: {exc}"
    if check.get("blocked"):
        return True, ""
    probes = [p for t in check.get("targets") or [] for p in t.get("probes") or []]
    reachable = [p.get("address") for p in probes if p.get("reachable")]
    return False, f"reachable at {','.join(reachable)}" if reachable else "rules/keys of the fault missing"


def forged_counts(attempts: Iterable[Mapping[str, Any]], refused_statuses: Iterable[int]) -> dict[str, dict[str, int]]:
    """Per service: forged requests {tried, refused, accepted (2xx), inconclusive (anything else)}."""
    refused = set(refused_statuses)
    per: dict[str, dict[str, int]] = {}
    for a in attempts:
        c = per.setdefault(str(a["service"]), {"tried": 0, "refused": 0, "accepted": 0, "inconclusive": 0})
        c["tried"] += 1
        status = int(a["status"])
        c["refused" if status in refused else "accepted" if 200 <= status < 300 else "inconclusive"] += 1
    return per


def observe_services(ctx: RunContext, tokens: Mapping[str, str], forged: ForgeryPlan | None, tick: int,
                     start: float) -> tuple[dict[str, ServiceObservation], CheckResult | None]:
    """One round of checks against every service, all requests in parallel (a slow answer cannot stall the tick):
    the cache state (each service's own signal, ``chaosext.metrics.cache``), each tenant's valid token, and this
    tick's forged tokens.

    Returns the per-service observations and the forgery judge's result for the tick (None without a plan); the
    forged requests are timed from ``start`` (the block)."""
    cfg = ctx.cfg
    valid_jobs: dict[tuple[str, str], Future[int]] = {}
    with ThreadPoolExecutor(max_workers=min(32, len(cfg.services) * (len(tokens) + 1) + 2)) as pool:
        rounds = pool.submit(forged.round, cfg, tick) if forged is not None else None
        caches = pool.submit(read_caches, ctx)
        for name, svc in cfg.services.items():
            for tenant, tok in tokens.items():
                valid_jobs[(name, tenant)] = pool.submit(call, cfg, svc, tok, tenant)
    out = {name: ServiceObservation(state=r.state, age=r.age) for name, r in caches.result().items()}
    for (service, tenant), fut in valid_jobs.items():
        out[service].valid[tenant] = fut.result()
    if rounds is None or forged is None:
        return out, None
    attempts = rounds.result()
    for service, counts in forged_counts(attempts, cfg.refused_statuses).items():
        out.setdefault(service, ServiceObservation()).forged = counts
    return out, forged.judge(cfg, attempts, start)


def k6_snapshot(address: str) -> K6Snapshot | None:
    """k6's cumulative request and failure counters now (REST API of this run's k6; None when unavailable)."""
    if not address:
        return None
    live = k6_live_metrics(address=address)
    if not live.get("reachable"):
        return None
    reqs, failed = live.get("http_reqs"), live.get("http_req_failed_rate")
    return K6Snapshot(t=time.time(), http_reqs=float(reqs) if isinstance(reqs, (int, float)) else None,
                      http_req_failed_rate=float(failed) if isinstance(failed, (int, float)) else None)
