"""What the metrics domain measures: the expiry alerts and the request counters (the services' key-cache states are
:mod:`chaosext.metrics.cache`).

Plain measurements for the judges in ``chaosext.outage`` (baseline and recovery probes, the watch step, the outage
checks). Prometheus is read through :mod:`chaosext.metrics.prom` with the run's metric contract.
"""
from __future__ import annotations

import math
import time

import requests

from chaosext.metrics import prom
from chaosext.metrics.prom import prom_of
from chaosext.run.context import RunContext

__all__ = ["Counts", "active_expiry_alerts", "firing_now", "fired_since", "in_alertmanager", "quietest_tenant_rate",
           "error_counts_between", "loaded_alert_rules", "expiry_rules_gap"]

#: (errors, requests) the services counted in a window (``error_counts_between``)
Counts = tuple[float, float]


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


def error_counts_between(ctx: RunContext, start: float, end: float) -> Counts | None:
    """(errors, requests) the services counted between ``start`` and ``end`` (unix s): per series, a counter reset
    (a restarted service) neither makes it negative nor hides what the new process counted
    (``chaosext.metrics.prom.error_rate_between``); None when Prometheus does not answer."""
    try:
        res = prom.error_rate_between(prom_of(ctx), start, end)
    except (requests.RequestException, RuntimeError, ValueError):
        return None
    return float(res["errors"]), float(res["requests"])


def loaded_alert_rules(ctx: RunContext) -> set[str]:
    """The names of the alerting rules Prometheus has loaded (``GET /api/v1/rules?type=alert``)."""
    body = prom_of(ctx).backend.get("/api/v1/rules", params={"type": "alert"}, timeout=10).json()
    return {str(r.get("name")) for g in (body.get("data") or {}).get("groups") or [] for r in g.get("rules") or []
            if r.get("type", "alerting") == "alerting"}


def expiry_rules_gap(ctx: RunContext) -> str:
    """Why the expiry alerts cannot be judged ('' when they can): none named, or not loaded in Prometheus (then
    "none fired" would pass vacuously)."""
    names = ctx.cfg.expiry_alerts
    if not names:
        return "no expiry alert is named (EXPIRY_ALERTS, expiry_alerts in TARGET_FILE): alerting cannot be judged"
    try:
        missing = sorted(set(names) - loaded_alert_rules(ctx))
    except (requests.RequestException, ValueError, AttributeError) as exc:
        return f"Prometheus' loaded rules could not be read ({type(exc).__name__}): alerting cannot be judged"
    if missing:
        return (f"Prometheus at {ctx.cfg.prometheus_url} has no alerting rule named {', '.join(missing)} "
                f"(EXPIRY_ALERTS): 'it did not fire' would prove nothing; load the rules or fix EXPIRY_ALERTS")
    return ""
