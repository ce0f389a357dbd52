"""What the metric checks need, before anything changes (``chaosext doctor`` and the run's pre-flight): Prometheus and
Alertmanager answering with the given credentials, and the metric contract's series in Prometheus."""
from __future__ import annotations

import time

import requests

from chaosext.core.backends import BackendError
from chaosext.core.config import DEFAULT_ALERTS
from chaosext.core.findings import HTTP_TIMEOUT, Finding
from chaosext.core.poll import retry_until
from chaosext.metrics import prom
from chaosext.metrics.cache import read_caches, signal_of
from chaosext.metrics.measure import expiry_rules_gap
from chaosext.run.context import RunContext

__all__ = ["check_ready", "check_metrics", "check_judgeable", "FIRST_SCRAPE_WAIT_SECONDS"]

#: how long doctor waits for a Prometheus that has scraped nothing yet (a lab that has just started)
FIRST_SCRAPE_WAIT_SECONDS = 20.0


def _scraped(p: prom.Prom) -> bool:
    try:
        return bool(prom.query(p, "count(up)", timeout=HTTP_TIMEOUT))
    except requests.RequestException:
        return False


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
    # a Prometheus that has just started (right after `chaosext lab up`) has scraped nothing yet: wait for its first
    # scrape before telling anyone their metric names are wrong
    scraped = retry_until(lambda: _scraped(p), bool, time.time() + FIRST_SCRAPE_WAIT_SECONDS, 1.0)
    if not scraped:
        return [Finding("metric: scrapes", False, f"Prometheus at {p.url} has not scraped any target yet (no `up` "
                        f"series after {FIRST_SCRAPE_WAIT_SECONDS:.0f} s)", "check its scrape configuration names the "
                        "services; if it has just started, run doctor again in a minute", required=False)]
    wanted = [("metric: requests", c.total_selector(), "METRIC_REQUESTS / METRIC_TENANT_LABEL / "
               "METRIC_REQUESTS_MATCHERS")]
    if any(signal_of(s) == "metrics" for s in ctx.cfg.services.values()):  # some service is read through them
        wanted += [("metric: cache fresh", c.cache_fresh, "METRIC_CACHE_FRESH"),
                   ("metric: cache stale", c.cache_stale, "METRIC_CACHE_STALE"),
                   ("metric: cache expired", c.cache_expired, "METRIC_CACHE_EXPIRED"),
                   ("metric: cache empty", c.cache_empty, "METRIC_CACHE_EMPTY")]
    out = []
    # the key-lookup counter feeds only the shipped (or rendered) jwks_cache_miss_spike alert: a target that names
    # its own expiry alerts need not export it
    if set(ctx.cfg.expiry_alerts) & set(DEFAULT_ALERTS):
        wanted.append(("metric: cache lookups", c.cache_lookups, "METRIC_CACHE_LOOKUPS"))
    else:
        out.append(Finding("metric: cache lookups", True, "not needed: EXPIRY_ALERTS names the target's own alerts "
                           "(only the shipped jwks_cache_miss_spike reads METRIC_CACHE_LOOKUPS)", required=False))
    wanted.append(("metric: unverified accepts", c.unverified_accepts, "METRIC_UNVERIFIED_ACCEPTS"))
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
        if n:
            out.append(Finding(name, True, f"{selector}: {n} series"))
        elif name == "metric: requests":
            out.append(Finding(name, False, f"{selector}: no request counted yet", "normal before any traffic (the "
                               f"run's k6 makes some); if the services have served requests, set {named} to the "
                               f"counter they export (docs/experiment.md, 'Adapting to your services' metrics')",
                               required=False))
        else:
            out.append(Finding(name, False, f"{selector}: no series in Prometheus although it scrapes", f"set {named} "
                               f"to what your services export (docs/experiment.md, 'Adapting to your services' "
                               f"metrics), or give the services a cache signal in TARGET_FILE", required=False))
    return out


def check_judgeable(ctx: RunContext) -> list[Finding]:
    """What the metric checks will not be able to judge on this target (warnings, listed before the run): a service
    whose cache state no signal gives, expiry alerts that are not named or not loaded in Prometheus."""
    out = []
    unknown = {name: r.detail for name, r in read_caches(ctx).items() if r.state == "unknown"}
    for name, detail in unknown.items():
        out.append(Finding(f"not judged: cache of {name}", False, f"its JWKS cache state cannot be read ({detail}); "
                           "jwks-caches-fresh, cached-key-fallback and auth-degraded-audited will say so",
                           f"give services.{name}.cache in TARGET_FILE (docs/target.md) or METRIC_CACHE_* series",
                           required=False))
    if gap := expiry_rules_gap(ctx):
        out.append(Finding("not judged: expiry alerts", False, gap,
                           "name the alerts that fire when a cache expires (EXPIRY_ALERTS) and load them",
                           required=False))
    return out
