"""Small Prometheus / Alertmanager HTTP helpers (every call has its own timeout).

Error accounting used everywhere in chaosext (docs/experiment.md, "What counts as an error"):
a request is an error when its status is 5xx, or 401 attributed to a real tenant. A 401 whose token failed on its
own (forged, malformed, expired ...; also chaosext's forgery catalogue, which uses real tenants) is labelled
``__unauthenticated__`` by the services and left out; only a ``no_keys`` 401 (the service could not verify) keeps the
claimed tenant. :data:`PROBE_TENANT` stays excluded for older services. 429 (rate limited) and 403 (tenant mismatch)
are correct answers, not errors.
"""
from __future__ import annotations

import time
from typing import Any

import requests

__all__ = [
    "PROBE_TENANT",
    "UNAUTHENTICATED_TENANT",
    "ERROR_SELECTOR",
    "TOTAL_SELECTOR",
    "query",
    "query_scalar",
    "counts_at",
    "error_rate_between",
    "prometheus_alerts",
    "alertmanager_alerts",
    "latest_sample_time",
    "wait_for_samples",
]

#: Tenant (header and claim) of chaosext's own forged-token requests, excluded from every error rate.
PROBE_TENANT = "chaosext-probe"
#: The lab labels a request whose token never authenticated for a tenant it has not yet admitted with this value, so
#: the forged-token requests (tenant chaosext-probe) land there. k6's tenants are admitted before the fault.
UNAUTHENTICATED_TENANT = "__unauthenticated__"
_EXCLUDED = f'tenant!~"{PROBE_TENANT}|{UNAUTHENTICATED_TENANT}"'
ERROR_SELECTOR = f'tenant_requests_total{{status=~"5..|401",{_EXCLUDED}}}'
TOTAL_SELECTOR = f'tenant_requests_total{{{_EXCLUDED}}}'


def query(base_url: str, promql: str, at: float | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Instant query -> the ``data.result`` vector (list of {"metric": {...}, "value": [ts, "v"]})."""
    params: dict[str, Any] = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    r = requests.get(base_url.rstrip("/") + "/api/v1/query", params=params, timeout=timeout)
    r.raise_for_status()
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus query {promql!r} failed: {body.get('error', body)}")
    data = body["data"]
    if data.get("resultType") == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def query_scalar(base_url: str, promql: str, at: float | None = None, timeout: float = 10.0) -> float:
    """Sum of every sample the query returns (0.0 when it returns nothing)."""
    return sum(float(s["value"][1]) for s in query(base_url, promql, at, timeout))


def counts_at(base_url: str, at: float | None = None) -> tuple[float, float]:
    """(errors, total) request counters summed over every service at time ``at`` (now when None)."""
    return (query_scalar(base_url, f"sum({ERROR_SELECTOR})", at),
            query_scalar(base_url, f"sum({TOTAL_SELECTOR})", at))


def error_rate_between(base_url: str, start: float, end: float) -> dict[str, Any]:
    """Server-side error rate of requests counted between ``start`` and ``end`` (unix seconds).

    Counter values at ``end`` minus those at ``start`` (a series absent at ``start`` counts from 0, which
    ``increase()`` would miss for the 401 series that first appear during an outage).
    """
    e0, t0 = counts_at(base_url, start)
    e1, t1 = counts_at(base_url, end)
    errors, total = max(0.0, e1 - e0), max(0.0, t1 - t0)
    return {"errors": errors, "requests": total, "error_rate": (errors / total) if total else 0.0}


def latest_sample_time(base_url: str, metric: str = "tenant_requests_total") -> float:
    """Unix time of the newest sample of ``metric`` Prometheus holds (0.0 when none)."""
    res = query(base_url, f"max(timestamp({metric}))")
    return float(res[0]["value"][1]) if res else 0.0


def prometheus_alerts(base_url: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """``GET /api/v1/alerts`` -> list of {"labels": {...}, "state": "pending|firing", ...}."""
    r = requests.get(base_url.rstrip("/") + "/api/v1/alerts", timeout=timeout)
    r.raise_for_status()
    return r.json()["data"]["alerts"]


def alertmanager_alerts(base_url: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """``GET /api/v2/alerts`` -> list of {"labels": {...}, "status": {"state": "active|suppressed|..."}, ...}."""
    r = requests.get(base_url.rstrip("/") + "/api/v2/alerts", timeout=timeout)
    r.raise_for_status()
    return r.json()


def wait_for_samples(base_url: str, until: float, timeout: float = 30.0) -> bool:
    """Wait (up to ``timeout`` s) until Prometheus holds a request-counter sample at or after ``until``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if latest_sample_time(base_url) >= until:
                return True
        except (requests.RequestException, RuntimeError):
            pass
        time.sleep(1.0)
    return False
