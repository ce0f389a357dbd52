"""The Prometheus reads behind the probes (chaosext.metrics.prom): error-rate arithmetic, cache states, unverified
accepts, and the errors that say what to give, against a stub answering Prometheus' documented
``GET /api/v1/query`` shapes (``{"status": "success", "data": {"resultType": "vector", "result": [...]}}``)."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from chaosext.core import backends
from chaosext.core.config import ExperimentConfig
from chaosext.core.target import MetricContract
from chaosext.metrics import prom
from tests.jsonstub import Handler, JsonStub

pytestmark = [pytest.mark.contract]

Stub = Callable[[Handler], JsonStub]


def vector(*samples: tuple[dict[str, str], float]) -> tuple[int, dict[str, Any]]:
    """An instant-vector answer: (labels, value) per sample."""
    return 200, {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [1000.0, str(value)]} for labels, value in samples]}}


def counters(errors: dict[float, float | None], total: dict[float, float | None]) -> Handler:
    """A Prometheus whose summed error and request counters have these values at these times (None: no series)."""
    def handler(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        assert path == "/api/v1/query"
        at = float(q["time"])
        is_errors = q["query"] == f"sum({prom.ERROR_SELECTOR})"
        assert is_errors or q["query"] == f"sum({prom.TOTAL_SELECTOR})", q["query"]
        value = (errors if is_errors else total)[at]
        return vector(({}, value)) if value is not None else vector()
    return handler


def prom_at(url: str, contract: MetricContract | None = None) -> prom.Prom:
    """The Prometheus at ``url`` (no credentials) read with ``contract`` (default: the lab's names)."""
    return prom.Prom(backends.backend("prometheus", url, ExperimentConfig()), contract or MetricContract())


def test_error_rate_counts_series_that_appear_during_the_window(stub: Stub) -> None:
    """Counters at the end minus at the start; the 401 series born in the outage counts from 0 (increase() would
    miss its first value)."""
    start, end = 1000.0, 1060.0

    def promapi(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        t = float(q["time"])
        errors = q["query"].startswith(f"sum({prom.ERROR_SELECTOR}")
        value = (0 if t == start else 30) if errors else (1000 if t == start else 2000)
        result = [] if errors and t == start else [{"metric": {}, "value": [t, str(value)]}]
        assert 'tenant!~"chaosext-probe|__unauthenticated__"' in q["query"]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    s = stub(promapi)
    res = prom.error_rate_between(prom_at(s.url), start, end)
    assert res == {"errors": 30.0, "requests": 1000.0, "error_rate": 0.03}


def test_errors_are_5xx_and_401_of_real_tenants_only() -> None:
    """D1: 429 and 403 are correct answers; the forged-token probe and unauthenticated requests are no tenant's."""
    error_status = re.search(r'status=~"([^"]+)"', prom.ERROR_SELECTOR)
    assert error_status is not None
    pattern = re.compile(error_status.group(1))
    assert [s for s in ("200", "401", "403", "404", "429", "500", "503") if pattern.fullmatch(s)] == \
        ["401", "500", "503"]
    for selector in (prom.ERROR_SELECTOR, prom.TOTAL_SELECTOR):
        assert f'tenant!~"{prom.PROBE_TENANT}|{prom.UNAUTHENTICATED_TENANT}"' in selector


def test_no_request_in_the_window_is_a_zero_rate_not_a_division_by_zero(stub: Stub) -> None:
    s = stub(counters({1.0: 5, 2.0: 5}, {1.0: 100, 2.0: 100}))
    assert prom.error_rate_between(prom_at(s.url), 1.0, 2.0) == {"errors": 0.0, "requests": 0.0, "error_rate": 0.0}
    empty = stub(counters({1.0: None, 2.0: None}, {1.0: None, 2.0: None}))  # no series at all
    assert prom.error_rate_between(prom_at(empty.url), 1.0, 2.0)["error_rate"] == 0.0


def test_a_counter_reset_in_the_window_never_gives_a_negative_count(stub: Stub) -> None:
    """A service restarted during the window: its counters start again from 0; nothing negative is reported."""
    s = stub(counters({1.0: 50, 2.0: 3}, {1.0: 5000, 2.0: 200}))
    res = prom.error_rate_between(prom_at(s.url), 1.0, 2.0)
    assert res["errors"] >= 0 and res["requests"] >= 0 and 0.0 <= res["error_rate"] <= 1.0


def test_the_error_rate_follows_the_metric_contract(stub: Stub) -> None:
    """METRIC_* settings: another counter, status label, no tenant label; the same arithmetic."""
    contract = MetricContract.parse({"requests": "http_server_requests_seconds_count", "status_label": "code",
                                     "tenant_label": "none", "error_status": "5.."})
    seen: list[str] = []

    def handler(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        seen.append(q["query"])
        errors = "code=~" in q["query"]
        return vector(({}, {(True, 10.0): 1, (True, 20.0): 7, (False, 10.0): 100, (False, 20.0): 300}[
            errors, float(q["time"])]))

    s = stub(handler)
    assert prom.error_rate_between(prom_at(s.url, contract), 10.0, 20.0) == {"errors": 6.0, "requests": 200.0,
                                                                        "error_rate": 0.03}
    assert 'sum(http_server_requests_seconds_count{code=~"5.."})' in seen
    assert "sum(http_server_requests_seconds_count{})" in seen


def test_a_scalar_answer_is_one_sample_and_query_scalar_sums_the_samples(stub: Stub) -> None:
    def handler(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        if q["query"].startswith("scalar("):
            return 200, {"status": "success", "data": {"resultType": "scalar", "result": [1000.0, "4.5"]}}
        return vector(({"service": "a"}, 2), ({"service": "b"}, 3.5))

    s = stub(handler)
    assert prom.query(prom_at(s.url), "scalar(x)") == [{"metric": {}, "value": [1000.0, "4.5"]}]
    assert prom.query_scalar(prom_at(s.url), "scalar(x)") == 4.5
    assert prom.query_scalar(prom_at(s.url), "x") == 5.5


def test_services_where_a_selector_held_in_the_range(stub: Stub) -> None:
    """Services whose series was >= 1 at any time of the range before ``at`` (max_over_time), each once, sorted."""
    queries: list[dict[str, str]] = []

    def handler(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        queries.append(q)
        return vector(({"service": "vuln"}, 1), ({"service": "notify"}, 0), ({"service": "policy"}, 1))

    s = stub(handler)
    expired = MetricContract().cache_expired
    assert prom.services_where(prom_at(s.url), expired, at=500.0, range_seconds=12.2) == ["policy", "vuln"]
    assert queries[-1]["query"] == f"max by (service) (max_over_time({expired}[13s]))"
    assert float(queries[-1]["time"]) == 500.0
    prom.services_where(prom_at(s.url), expired)
    assert queries[-1]["query"] == f"max by (service) ({expired})" and "time" not in queries[-1]


def test_cache_states_per_service_from_the_labs_state_gauge(stub: Stub) -> None:
    s = stub(lambda m, p, q, b: vector(({"service": "policy", "state": "stale"}, 1),
                                       ({"service": "vuln", "state": "fresh"}, 1)))
    assert prom.cache_states(prom_at(s.url)) == {"policy": "stale", "vuln": "fresh"}


def test_cache_states_from_a_contracts_expired_and_stale_series(stub: Stub) -> None:
    """A service exporting its own cache gauges (METRIC_CACHE_EXPIRED / METRIC_CACHE_STALE): expired beats stale,
    a service with the series at 0 is fresh, a service without them is absent."""
    contract = MetricContract.parse({"service_label": "app", "cache_expired": "keys_expired",
                                     "cache_stale": "keys_stale"})

    def handler(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        if "keys_expired" in q["query"]:
            return vector(({"app": "orders"}, 1), ({"app": "billing"}, 0), ({"app": "audit"}, 0))
        return vector(({"app": "orders"}, 1), ({"app": "billing"}, 1), ({"app": "audit"}, 0))

    s = stub(handler)
    assert prom.cache_states(prom_at(s.url, contract)) == {"orders": "expired", "billing": "stale", "audit": "fresh"}


def test_unverified_accepts_are_the_increase_per_service(stub: Stub) -> None:
    """Tokens accepted without a verified key between start and end; a service absent at the start counts from 0,
    services without an increase are left out."""
    at = {10.0: [({"service": "policy"}, 2), ({"service": "vuln"}, 5)],
          20.0: [({"service": "policy"}, 2), ({"service": "vuln"}, 9), ({"service": "notify"}, 1)]}
    s = stub(lambda m, p, q, b: vector(*at[float(q["time"])]))
    assert prom.unverified_accepts_between(prom_at(s.url), 10.0, 20.0) == {"vuln": 4.0, "notify": 1.0}


def test_refused_credentials_say_what_to_give(stub: Stub) -> None:
    s = stub(lambda m, p, q, b: (401, {"status": "error", "error": "unauthorized"}))
    with pytest.raises(backends.BackendError, match=r"refused .* give its credentials \(prometheus_bearer_token"):
        prom.query(prom_at(s.url), "up")
    broken = stub(lambda m, p, q, b: (422, {"status": "error", "errorType": "bad_data", "error": "parse error"}))
    with pytest.raises(backends.BackendError, match=f"Prometheus at {broken.url}: query 'up\\(' failed"):
        prom.query(prom_at(broken.url), "up(")
