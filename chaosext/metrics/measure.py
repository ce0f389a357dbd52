"""What the metrics domain measures: the services' key-cache states, the expiry alerts, the request counters.

Plain measurements for the judges in ``chaosext.outage`` (baseline and recovery probes, the watch step, the outage
checks). Prometheus is read through :mod:`chaosext.metrics.prom` with the run's metric contract; a service's
``/healthz`` ``jwks`` block (:func:`health`) is the lab's convenience where a service exports no cache series.
"""
from __future__ import annotations

import math
import time
from typing import Any

import requests

from chaosext.metrics import prom
from chaosext.metrics.prom import prom_of
from chaosext.run.context import RunContext

__all__ = ["Counts", "health", "cache_states", "active_expiry_alerts", "firing_now", "fired_since", "in_alertmanager",
           "services_in_state", "quietest_tenant_rate", "error_counts"]

#: (errors, requests) cumulative counters, as Prometheus sums them (``chaosext.metrics.prom.counts_at``)
Counts = tuple[float, float]


def health(url: str, timeout: float = 3.0) -> dict[str, Any]:
    """The service's ``/healthz`` ``jwks`` block ({"state": ..., "age_seconds": ...}); {} when unavailable."""
    try:
        r = requests.get(url + "/healthz", timeout=timeout)
        return dict(r.json().get("jwks") or {})
    except (requests.RequestException, ValueError, AttributeError):
        return {}


def cache_states(ctx: RunContext) -> dict[str, tuple[str, str]]:
    """service -> (state, source): from the metric contract's cache series in Prometheus; ``/healthz`` only where the
    service has no such series (a lab convenience); ``unknown`` / ``none`` when neither answers."""
    cfg = ctx.cfg
    states: dict[str, tuple[str, str]] = {}
    try:
        for svc, state in prom.cache_states(prom_of(ctx)).items():
            if svc in cfg.services:
                states[svc] = (state, "prometheus")
    except (requests.RequestException, RuntimeError, ValueError):
        pass
    for svc, url in cfg.services.items():
        if svc not in states:
            h = health(url)
            states[svc] = (h.get("state", "unknown"), "healthz" if h else "none")
    return states


def active_expiry_alerts(ctx: RunContext) -> dict[str, list[str]]:
    """EXPIRY_ALERTS active now: firing or pending in Prometheus, active in Alertmanager."""
    cfg = ctx.cfg
    names = set(cfg.expiry_alerts)
    in_prom = sorted({f"{a['labels'].get('alertname')} ({a.get('state')})" for a in
                      prom.prometheus_alerts(prom_of(ctx))
                      if a["labels"].get("alertname") in names and a.get("state") in ("firing", "pending")})
    in_am = sorted({a["labels"].get("alertname") for a in prom.alertmanager_alerts(ctx.backend("alertmanager"))
                    if a["labels"].get("alertname") in names
                    and (a.get("status") or {}).get("state", "active") != "unprocessed"})
    return {"prometheus": in_prom, "alertmanager": in_am}


def firing_now(ctx: RunContext) -> tuple[set[str], set[str]]:
    """EXPIRY_ALERTS firing in Prometheus, and present in Alertmanager, now (empty when either does not answer)."""
    names = set(ctx.cfg.expiry_alerts)
    try:
        in_prom = {str(a["labels"].get("alertname")) for a in prom.prometheus_alerts(prom_of(ctx))
                   if a.get("state") == "firing"} & names
    except (requests.RequestException, KeyError, ValueError):
        in_prom = set()
    try:
        in_am = {str(a["labels"].get("alertname"))
                 for a in prom.alertmanager_alerts(ctx.backend("alertmanager"))} & names
    except (requests.RequestException, KeyError, ValueError):
        in_am = set()
    return in_prom, in_am


def fired_since(ctx: RunContext, names: tuple[str, ...], since: float) -> set[str]:
    """Alert names that were firing at any time since ``since`` (Prometheus' ALERTS series)."""
    rng = max(1, math.ceil(time.time() - since))
    regex = "|".join(names)
    res = prom.query(prom_of(ctx), f'max by (alertname) (max_over_time(ALERTS{{alertname=~"{regex}",'
                                   f'alertstate="firing"}}[{rng}s]))')
    return {s["metric"]["alertname"] for s in res if float(s["value"][1]) >= 1}


def in_alertmanager(ctx: RunContext, names: tuple[str, ...]) -> set[str]:
    """Which of ``names`` Alertmanager holds now."""
    return {a["labels"].get("alertname") for a in prom.alertmanager_alerts(ctx.backend("alertmanager"))} & set(names)


def services_in_state(ctx: RunContext, state: str, start: float, end: float) -> set[str]:
    """Services whose cache series of ``state`` (``expired``: METRIC_CACHE_EXPIRED, ``stale``: METRIC_CACHE_STALE)
    was 1 at any time in [start, end]; empty when Prometheus does not answer."""
    c = ctx.cfg.metrics
    selector = c.cache_expired if state == "expired" else c.cache_stale
    rng = max(1, math.ceil(end - start))
    try:
        return set(prom.services_where(prom_of(ctx), selector, end, rng)) & set(ctx.cfg.services)
    except (requests.RequestException, RuntimeError):
        return set()


def quietest_tenant_rate(ctx: RunContext, at: float) -> float | None:
    """The lowest per-tenant, per-service request rate over 5 minutes at ``at`` (the alerts' traffic guards use the
    same window), real tenants only; None when Prometheus has no answer. Explains a missing per-tenant alert."""
    try:
        c = ctx.cfg.metrics
        if not c.tenant_label:
            return None
        real_tenants = c.requests_selector(c.tenant_label + '!~"__.*__"')
        res = prom.query(prom_of(ctx), f"min(sum by ({c.tenant_label}, {c.service_label}) "
                                       f"(rate({real_tenants}[5m])))", at=at)
    except (requests.RequestException, RuntimeError, ValueError):
        return None
    return float(res[0]["value"][1]) if res else None


def error_counts(ctx: RunContext, at: float | None = None, fallback: Counts = (0.0, 0.0)) -> Counts:
    """Prometheus' (errors, requests) counters at ``at`` (now); ``fallback`` when Prometheus does not answer."""
    try:
        return prom.counts_at(prom_of(ctx), at)
    except (requests.RequestException, RuntimeError):
        return fallback

