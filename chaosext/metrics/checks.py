"""What the metric checks need, before anything changes (``chaosext doctor`` and the run's pre-flight): Prometheus and
Alertmanager answering with the given credentials, and the metric contract's series in Prometheus."""
from __future__ import annotations

import requests

from chaosext.core.backends import BackendError
from chaosext.core.findings import HTTP_TIMEOUT, Finding
from chaosext.metrics import prom
from chaosext.run.context import RunContext

__all__ = ["check_ready", "check_metrics"]


def check_ready(ctx: RunContext, name: str) -> Finding:
    """``name`` (prometheus or alertmanager) answers ``GET /-/ready`` with 2xx, with the run's credentials."""
    env = name.upper() + "_URL"
    backend = ctx.backend(name)
    full = backend.url.rstrip("/") + "/-/ready"
    origin = ctx.cfg.origins.get(f"{name}_url", "default")
    full += f" ({origin})"
    try:
        backend.get("/-/ready", timeout=HTTP_TIMEOUT)
    except BackendError as exc:
        return Finding(name, False, f"{full}: {exc}",
                       f"give {name}'s credentials ({name.upper()}_BEARER_TOKEN, {name.upper()}_USERNAME/_PASSWORD, "
                       f"{name.upper()}_HEADERS) or {name.upper()}_CA_BUNDLE; or wait until it is ready")
    except requests.RequestException as exc:
        return Finding(name, False, f"{full} unreachable: {type(exc).__name__}",
                       f"start it (chaosext lab up), or point {env} at a running {name}")
    return Finding(name, True, f"{full} ready")


def check_metrics(ctx: RunContext) -> list[Finding]:
    """Prometheus holds series for every selector of the metric contract (METRIC_* settings). Missing series are
    warnings (a service without traffic has no request series yet); a request counter without the status or service
    label is an error (the error rate could not be judged)."""
    p = prom.prom_of(ctx)
    c = p.contract
    wanted = [("metric: requests", c.total_selector(), "METRIC_REQUESTS / METRIC_TENANT_LABEL / "
               "METRIC_REQUESTS_MATCHERS"),
              ("metric: cache expired", c.cache_expired, "METRIC_CACHE_EXPIRED"),
              ("metric: cache stale", c.cache_stale, "METRIC_CACHE_STALE"),
              ("metric: cache lookups", c.cache_lookups, "METRIC_CACHE_LOOKUPS"),
              ("metric: unverified accepts", c.unverified_accepts, "METRIC_UNVERIFIED_ACCEPTS")]
    out = []
    for name, selector, named in wanted:
        if not selector:  # METRIC_UNVERIFIED_ACCEPTS=off
            out.append(Finding(name, True, f"{named}=off: not checked", required=False))
            continue
        try:
            found = prom.query(p, f"count({selector})", timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            out.append(Finding(name, False, f"{selector}: {exc}", "check PROMETHEUS_URL and its credentials"))
            continue
        n = int(float(found[0]["value"][1])) if found else 0
        if n and name == "metric: requests":
            labels = {lbl for s in prom.query(p, f"topk(1, {selector})", timeout=HTTP_TIMEOUT) for lbl in s["metric"]}
            missing = [lbl for lbl in (c.status_label, c.service_label) if lbl not in labels]
            if missing:
                out.append(Finding(name, False, f"{selector} has no label(s) {', '.join(missing)}",
                                   "set METRIC_STATUS_LABEL / METRIC_SERVICE_LABEL to the labels your services use"))
                continue
        # no series at all may also mean no traffic yet (a fresh lab): a warning; wrong labels on series are an error
        out.append(Finding(name, bool(n), f"{selector}: {n} series" if n else
                           f"{selector}: no series in Prometheus (no traffic yet, or other metric names?)",
                           "" if n else f"set {named} to what your services export (docs/experiment.md, "
                                        f"'Adapting to your services' metrics')", required=False))
    return out
