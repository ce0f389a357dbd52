"""Prometheus / Alertmanager reads for the probes, the watch step and the report (every call has its own timeout).

Every function takes a :class:`Prom`: the Prometheus backend (URL and this activity's credentials,
``chaosext.core.backends``) and the run's metric contract (``chaosext.core.target``); :func:`prom_of` builds it from a
run context. Queries go through ``prometheus-api-client`` (``PrometheusConnect.custom_query`` /
``custom_query_range``) with those credentials (bearer token, basic auth, custom headers such as ``X-Scope-OrgID``,
CA bundle or insecure). Hand-written, and only where that client has nothing: Prometheus ``GET /api/v1/alerts`` and
Alertmanager ``GET /api/v2/alerts`` (prometheus-api-client 0.7 has no alerts API and no Alertmanager client at all).

Error accounting used everywhere in chaosext (docs/experiment.md, "What counts as an error"):
a request is an error when its status is 5xx, or 401 attributed to a real tenant. A 401 whose token failed on its
own (forged, malformed, expired ...; also chaosext's forgery catalogue, which uses real tenants) is labelled
``__unauthenticated__`` by the services and left out; only a ``no_keys`` 401 (the service could not verify) keeps the
claimed tenant. :data:`PROBE_TENANT` stays excluded for older services. 429 (rate limited) and 403 (tenant mismatch)
are correct answers, not errors.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from chaosext.core.backends import Backend, BackendError
from chaosext.core.names import UNAUTHENTICATED_TENANT
from chaosext.core.poll import retry_until
from chaosext.core.target import PROBE_TENANT, MetricContract
from chaosext.run.context import RunContext

__all__ = [
    "Prom",
    "prom_of",
    "PROBE_TENANT",
    "UNAUTHENTICATED_TENANT",
    "ERROR_SELECTOR",
    "TOTAL_SELECTOR",
    "query",
    "query_range",
    "query_scalar",
    "counts_at",
    "error_rate_between",
    "prometheus_alerts",
    "alertmanager_alerts",
    "latest_sample_time",
    "wait_for_samples",
    "services_where",
    "cache_states",
    "unverified_accepts_between",
]

#: The default contract's selectors (the lab's names). The functions below use the run's contract
#: (``chaosext.core.target``, METRIC_* settings), which equals these unless overridden.
ERROR_SELECTOR = MetricContract().error_selector()
TOTAL_SELECTOR = MetricContract().total_selector()


@dataclass(frozen=True)
class Prom:
    """Prometheus as one activity reads it: the backend (URL + credentials) and the run's metric contract."""

    backend: Backend
    contract: MetricContract = field(default_factory=MetricContract)

    @property
    def url(self) -> str:
        """The Prometheus base URL."""
        return self.backend.url.rstrip("/")


def prom_of(ctx: RunContext) -> Prom:
    """The run's Prometheus (PROMETHEUS_URL, the activity's credentials, the run's metric contract)."""
    return Prom(ctx.backend("prometheus"), ctx.cfg.metrics)


T = TypeVar("T")


def _connect(prom: Prom, timeout: float, session: requests.Session) -> PrometheusConnect:
    """A PrometheusConnect on ``session`` (this run's Prometheus credentials), no retries: the caller's timeout is the
    bound. Needs prometheus-api-client >= 0.7 (``session``, ``timeout`` and ``retry`` arguments)."""
    # the client annotates timeout as int, but hands it to requests, which takes seconds as a float
    return PrometheusConnect(url=prom.url, session=session, timeout=timeout,  # type: ignore[arg-type]
                             retry=Retry(total=0, raise_on_status=False))


def _call(prom: Prom, what: str, fn: Callable[[], T]) -> T:
    """Run ``fn()``; turn the client's errors into BackendError (a requests.RequestException) saying why."""
    try:
        return fn()
    except PrometheusApiClientException as exc:
        text = str(exc)
        if "Status Code 401" in text or "Status Code 403" in text:
            raise BackendError(
                f"Prometheus at {prom.url} refused {what} ({text[:40]}) with {prom.backend.auth.described}: give its "
                f"credentials "
                f"(prometheus_bearer_token, or prometheus_username/prometheus_password, or prometheus_headers) in "
                f"the experiment's secrets or the environment") from None
        raise BackendError(f"Prometheus at {prom.url}: {what} failed: {text[:300]}") from None
    except requests.exceptions.SSLError:
        raise BackendError(f"Prometheus at {prom.url}: TLS verification failed; set PROMETHEUS_CA_BUNDLE "
                           f"to its CA's PEM file") from None


def query(prom: Prom, promql: str, at: float | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Instant query -> the ``data.result`` vector (list of {"metric": {...}, "value": [ts, "v"]})."""
    params = {"time": f"{at:.3f}"} if at is not None else {}  # custom_query treats {} as no parameters
    with prom.backend.auth.session_for(prom.url) as session:
        pc = _connect(prom, timeout, session)
        result = _call(prom, f"query {promql!r}", lambda: pc.custom_query(promql, params=params))
    # custom_query returns data.result without data.resultType: a scalar result is the bare [ts, "v"] pair
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return [{"metric": {}, "value": result}]
    vector: list[dict[str, Any]] = result
    return vector


def query_range(prom: Prom, promql: str, start: float, end: float, step: float,
                timeout: float = 10.0) -> list[dict[str, Any]]:
    """Range query -> the ``data.result`` matrix (list of {"metric": {...}, "values": [[ts, "v"], ...]})."""
    with prom.backend.auth.session_for(prom.url) as session:
        pc = _connect(prom, timeout, session)
        matrix: list[dict[str, Any]] = _call(prom, f"query_range {promql!r}", lambda: pc.custom_query_range(
            promql, start_time=datetime.fromtimestamp(start, UTC),
            end_time=datetime.fromtimestamp(end, UTC), step=f"{step:g}s"))
    return matrix


def query_scalar(prom: Prom, promql: str, at: float | None = None, timeout: float = 10.0) -> float:
    """Sum of every sample the query returns (0.0 when it returns nothing)."""
    return sum(float(s["value"][1]) for s in query(prom, promql, at, timeout))


def counts_at(prom: Prom, at: float | None = None) -> tuple[float, float]:
    """(errors, total) request counters summed over every service at time ``at`` (now when None)."""
    c = prom.contract
    return (query_scalar(prom, f"sum({c.error_selector()})", at),
            query_scalar(prom, f"sum({c.total_selector()})", at))


def error_rate_between(prom: Prom, start: float, end: float) -> dict[str, Any]:
    """Server-side error rate of requests counted between ``start`` and ``end`` (unix seconds).

    Counter values at ``end`` minus those at ``start`` (a series absent at ``start`` counts from 0, which
    ``increase()`` would miss for the 401 series that first appear during an outage).
    """
    e0, t0 = counts_at(prom, start)
    e1, t1 = counts_at(prom, end)
    errors, total = max(0.0, e1 - e0), max(0.0, t1 - t0)
    return {"errors": errors, "requests": total, "error_rate": (errors / total) if total else 0.0}


def latest_sample_time(prom: Prom, metric: str = "") -> float:
    """Unix time of the newest sample of ``metric`` (default: the contract's request counter); 0.0 when none."""
    res = query(prom, f"max(timestamp({metric or prom.contract.requests}))")
    return float(res[0]["value"][1]) if res else 0.0


def services_where(prom: Prom, selector: str, at: float | None = None, range_seconds: float = 0.0) -> list[str]:
    """Services (the contract's service label) for which ``selector`` is >= 1 at ``at``, or at any time in the
    ``range_seconds`` before it. Used with the contract's ``cache_expired`` / ``cache_stale`` selectors."""
    c = prom.contract
    inner = f"max_over_time({selector}[{max(1, int(range_seconds + 0.999))}s])" if range_seconds else selector
    return sorted({c.service_of(s) for s in query(prom, c.by_service(inner), at) if float(s["value"][1]) >= 1})


def cache_states(prom: Prom, at: float | None = None) -> dict[str, str]:
    """Per service, its key cache's state from its metrics: the lab's ``jwks_cache_state{state}`` (fresh, stale,
    expired, ...) under the default contract; else ``expired`` / ``stale`` / ``fresh`` from the contract's
    METRIC_CACHE_EXPIRED and METRIC_CACHE_STALE series. Services without such series are absent."""
    c = prom.contract
    if c.is_lab:
        return {s["metric"].get("service", "?"): s["metric"].get("state", "?")
                for s in query(prom, "max by (service, state) (jwks_cache_state) == 1", at)}
    present = {c.service_of(s) for sel in (c.cache_expired, c.cache_stale)
               for s in query(prom, c.by_service(sel), at)}
    expired = set(services_where(prom, c.cache_expired, at))
    stale = set(services_where(prom, c.cache_stale, at))
    return {svc: "expired" if svc in expired else "stale" if svc in stale else "fresh" for svc in present}


def unverified_accepts_between(prom: Prom, start: float, end: float) -> dict[str, float]:
    """Per service: tokens accepted without a verified signature between ``start`` and ``end`` (the contract's
    ``unverified_accepts`` counter; a fail-open service). Empty when none."""
    c = prom.contract
    if not c.unverified_accepts:  # METRIC_UNVERIFIED_ACCEPTS=off
        return {}

    def at(t: float) -> dict[str, float]:
        return {c.service_of(s): float(s["value"][1])
                for s in query(prom, c.by_service(c.unverified_accepts, "sum"), t)}

    before, after = at(start), at(end)
    return {svc: n - before.get(svc, 0.0) for svc, n in after.items() if n - before.get(svc, 0.0) > 0}


def prometheus_alerts(prom: Prom, timeout: float = 10.0) -> list[dict[str, Any]]:
    """``GET /api/v1/alerts`` -> list of {"labels": {...}, "state": "pending|firing", ...}."""
    r = prom.backend.get("/api/v1/alerts", timeout=timeout)
    alerts: list[dict[str, Any]] = r.json()["data"]["alerts"]
    return alerts


def alertmanager_alerts(alertmanager: Backend, timeout: float = 10.0) -> list[dict[str, Any]]:
    """``GET /api/v2/alerts`` -> list of {"labels": {...}, "status": {"state": "active|suppressed|..."}, ...}."""
    r = alertmanager.get("/api/v2/alerts", timeout=timeout)
    alerts: list[dict[str, Any]] = r.json()
    return alerts


def wait_for_samples(prom: Prom, until: float, timeout: float = 30.0) -> bool:
    """Wait (up to ``timeout`` s) until Prometheus holds a request-counter sample at or after ``until``."""
    def reached() -> bool:
        try:
            return latest_sample_time(prom) >= until
        except (requests.RequestException, RuntimeError):
            return False

    return retry_until(reached, bool, time.time() + timeout, 1.0)
