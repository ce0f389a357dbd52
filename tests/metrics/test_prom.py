"""The Prometheus reads behind the probes (chaosext.metrics.prom): error-rate arithmetic, services where a selector
held, unverified accepts, and the errors that say what to give (the cache states: tests/metrics/test_cache.py),
against a stub answering Prometheus' documented ``GET /api/v1/query`` shapes (``{"status": "success", "data":
{"resultType": "vector", "result": [...]}}``, and ``"matrix"`` with the raw samples for a range-vector selector)."""
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
from tests.promutil import raw

pytestmark = [pytest.mark.contract]

Stub = Callable[[Handler], JsonStub]


def vector(*samples: tuple[dict[str, str], float]) -> tuple[int, dict[str, Any]]:
    """An instant-vector answer: (labels, value) per sample."""
    return 200, {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [1000.0, str(value)]} for labels, value in samples]}}


def req(service: str, tenant: str, status: str) -> dict[str, str]:
    return {"service": service, "tenant": tenant, "status": status, "route": "/api/v1/x"}


def prom_at(url: str, contract: MetricContract | None = None) -> prom.Prom:
    """The Prometheus at ``url`` (no credentials) read with ``contract`` (default: the lab's names)."""
    return prom.Prom(backends.backend("prometheus", url, ExperimentConfig()), contract or MetricContract())


def test_error_rate_counts_series_that_appear_during_the_window(stub: Stub) -> None:
    """A 401 series born in the outage counts from 0 (PromQL's increase() would lose its first value)."""
    start, end = 1000.0, 1060.0
    s = stub(raw([(req("policy", "t01", "200"), [(990, 1000), (1020, 1500), (1050, 2000)]),
                  (req("policy", "t01", "401"), [(1020, 10), (1050, 30)])],
                 expect_selector=prom.TOTAL_SELECTOR))
    res = prom.error_rate_between(prom_at(s.url), start, end)
    assert (res["errors"], res["requests"], res["error_rate"]) == (30.0, 1030.0, 30 / 1030)


def test_a_restart_inside_the_window_neither_zeroes_the_count_nor_hides_errors(stub: Stub) -> None:
    """policy restarts in the window: its counters begin again at 0. Summed counters at the end minus at the start
    would be negative (clipped to "no requests"); counted per series every request and every 5xx is there."""
    start, end = 100.0, 160.0
    s = stub(raw([(req("policy", "t01", "200"), [(96, 5000), (110, 5100), (130, 40), (150, 90)]),
                  (req("policy", "t01", "503"), [(96, 3), (110, 3), (130, 7), (150, 12)]),
                  (req("vuln", "t02", "200"), [(96, 700), (110, 720), (130, 760), (150, 800)])]))
    res = prom.error_rate_between(prom_at(s.url), start, end, services=("policy", "vuln"))
    # policy: 100 before the restart + 90 after; 503: 7 + 5 after the restart; vuln: 100
    assert res["requests"] == 100 + 90 + 12 + 100 and res["errors"] == 12
    assert res["services"] == {"policy": 202, "vuln": 100} and res["problems"] == []
    assert res["top_errors"] == [{"status": "503", "service": "policy", "tenant": "t01", "errors": 12}]


def test_a_service_that_vanished_in_the_window_is_named(stub: Stub) -> None:
    """notify is scraped every 10 s until 120, then never again (SIGKILLed): it keeps what it counted, and the
    traffic check names it; a driven service with no series at all is named too."""
    start, end = 100.0, 180.0
    every10 = [float(t) for t in range(90, 181, 10)]
    s = stub(raw([(req("policy", "t01", "200"), [(t, 10 * t) for t in every10]),
                  (req("notify", "t01", "200"), [(t, 10 * t) for t in every10 if t <= 120])]))
    res = prom.error_rate_between(prom_at(s.url), start, end, services=("policy", "notify", "vuln"))
    assert res["services"] == {"policy": 800, "notify": 200, "vuln": 0}
    assert [p.split(":")[0] for p in res["problems"]] == ["notify", "vuln"]
    assert "last scraped 60s before the window's end" in res["problems"][0]
    assert "no sample" in res["problems"][1]


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
    s = stub(raw([(req("policy", "t01", "500"), [(0.5, 5), (1.5, 5), (2.0, 5)]),
                  (req("policy", "t01", "200"), [(0.5, 100), (1.5, 100), (2.0, 100)])]))
    res = prom.error_rate_between(prom_at(s.url), 1.0, 2.0)
    assert (res["errors"], res["requests"], res["error_rate"]) == (0.0, 0.0, 0.0)
    empty = stub(raw([]))  # no series at all
    assert prom.error_rate_between(prom_at(empty.url), 1.0, 2.0)["error_rate"] == 0.0


def test_the_error_rate_follows_the_metric_contract(stub: Stub) -> None:
    """METRIC_* settings: another counter, status label, no tenant label; the same arithmetic."""
    contract = MetricContract.parse({"requests": "http_server_requests_seconds_count", "status_label": "code",
                                     "tenant_label": "none", "error_status": "5.."})
    s = stub(raw([({"code": "500", "service": "a"}, [(5.0, 1), (15.0, 4), (20.0, 7)]),
                  ({"code": "200", "service": "a"}, [(5.0, 99), (15.0, 200), (20.0, 293)])],
                 expect_selector="http_server_requests_seconds_count{}"))
    res = prom.error_rate_between(prom_at(s.url, contract), 10.0, 20.0)
    assert (res["errors"], res["requests"], res["error_rate"]) == (6.0, 200.0, 0.03)
    assert res["top_errors"] == [{"status": "500", "service": "a", "tenant": "", "errors": 6}]


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


def test_unverified_accepts_count_through_the_first_scrape_after_the_end(stub: Stub) -> None:
    """Tokens accepted without a verified key: a service absent at the start counts from 0, services without an
    increase are left out, and what was accepted on the last tick before the end (scraped 1.5 s after it, later
    than the old `end + 1 s` query looked) counts; a later scrape does not."""
    sel = MetricContract().unverified_accepts
    s = stub(raw([({"service": "policy"}, [(9.0, 2), (19.0, 2), (21.5, 2)]),
                  ({"service": "vuln"}, [(9.0, 5), (19.0, 9), (21.5, 12), (23.5, 40)]),
                  ({"service": "notify"}, [(19.0, 1)])], expect_selector=sel))
    assert prom.unverified_accepts_between(prom_at(s.url), 10.0, 20.0) == {"vuln": 7.0, "notify": 1.0}


def test_refused_credentials_say_what_to_give(stub: Stub) -> None:
    s = stub(lambda m, p, q, b: (401, {"status": "error", "error": "unauthorized"}))
    with pytest.raises(backends.BackendError, match=r"refused .* give its credentials \(prometheus_bearer_token"):
        prom.query(prom_at(s.url), "up")
    broken = stub(lambda m, p, q, b: (422, {"status": "error", "errorType": "bad_data", "error": "parse error"}))
    with pytest.raises(backends.BackendError, match=f"Prometheus at {broken.url}: query 'up\\(' failed"):
        prom.query(prom_at(broken.url), "up(")


def test_a_window_from_the_next_scrape_leaves_out_what_the_straddling_scrape_carries(stub: Stub) -> None:
    """The recovery window starts at a moment seen through another signal (every cache fresh at 100): the scrape at
    101 also holds the 503s made between 99 and 100. Counted from each target's first scrape at or after the start,
    only what came after it counts; a series born after that scrape (a 401 at 105) counts whole."""
    s = stub(raw([(req("policy", "t01", "200"), [(99, 1000), (101, 1100), (103, 1300), (105, 1500)]),
                  (req("policy", "t01", "503"), [(99, 10), (101, 40), (103, 40), (105, 40)]),
                  (req("policy", "t01", "401"), [(105, 2)])]))
    exact = prom.error_rate_between(prom_at(s.url), 100.0, 106.0)
    assert (exact["requests"], exact["errors"]) == (100 + 400 + 30 + 2, 30 + 2)
    recovery = prom.error_rate_between(prom_at(s.url), 100.0, 106.0, from_next_scrape=True)
    assert (recovery["requests"], recovery["errors"]) == (400 + 2, 2)
