"""Reading each service's JWKS cache state through its own signal (chaosext.metrics.cache, docs/target.md "What each
check needs from the target"): a JSON field of an HTTP endpoint in the target's own words, PromQL per state, or the
metric contract's METRIC_CACHE_* series by the service label — and a service no signal speaks for is ``unknown``,
never ``fresh``: the checks that need the state say they could not judge it.

Prometheus is a stub answering its documented ``GET /api/v1/query`` shape (``{"status": "success", "data":
{"resultType": "vector", "result": [{"metric": {...}, "value": [t, "v"]}]}}``); the services' health endpoints are
stubs answering the JSON the description names.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaosext.core.config import load_config
from chaosext.metrics.cache import CacheReading, read_caches, services_in_state
from chaosext.metrics.checks import check_judgeable
from chaosext.outage.hypothesis import jwks_caches_fresh
from chaosext.run.context import RunContext
from tests.jsonstub import Handler, JsonStub
from tests.targetutil import NOWHERE, description, target_config

pytestmark = [pytest.mark.contract]

Stub = Callable[[Handler], JsonStub]
Samples = list[tuple[dict[str, str], float]]


class Prometheus:
    """Answers each instant query from ``answers`` (the exact PromQL -> samples; any other query: no series, or 500
    while ``broken``), keeping every query asked."""

    def __init__(self) -> None:
        self.answers: dict[str, Samples] = {}
        self.asked: list[str] = []
        self.broken = False

    def __call__(self, method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        if path == "/api/v1/rules":
            return 200, {"status": "success", "data": {"groups": []}}
        assert path == "/api/v1/query", path
        self.asked.append(q["query"])
        if self.broken:
            return 500, {"status": "error", "errorType": "internal", "error": "boom"}
        return 200, {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": labels, "value": [1000.0, str(v)]} for labels, v in self.answers.get(q["query"], [])]}}


class Health:
    """A service's health document (``doc``; None: the endpoint answers 503 text)."""

    def __init__(self, doc: Any) -> None:
        self.doc = doc

    def __call__(self, method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        return (200, self.doc) if self.doc is not None else (503, "starting")


ORDERS_CACHE = {"fresh": 'keys_cached{app="orders"} > 0 and fetch_failing{app="orders"} == 0',
                "stale": 'fetch_failing{app="orders"} == 1 and keys_cached{app="orders"} > 0',
                "expired": 'keys_cached{app="orders"} == bool 0'}


def _ctx(tmp_path: Path, prometheus: str, services: dict[str, Any], **settings: str) -> RunContext:
    doc = description(services=services, prometheus={"url": prometheus})
    return RunContext(load_config(target_config(tmp_path, doc, **settings)))


def _http_service(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": NOWHERE, "routes": ["GET /invoices"],
            "cache": {"http": {"url": url + "/health", "field": "auth.jwks.status", "age_field": "auth.jwks.age",
                               "states": {"fresh": ["ok", "good"], "stale": ["degraded"], "expired": ["failed"],
                                          "empty": ["starting"]}, **extra}}}


def test_an_http_signal_reads_the_targets_own_words(stub: Stub, tmp_path: Path) -> None:
    health = Health({"auth": {"jwks": {"status": "degraded", "age": 42.5}}})
    billing = stub(health)
    ctx = _ctx(tmp_path, stub(Prometheus()).url, {"billing": _http_service(billing.url)})
    assert read_caches(ctx) == {"billing": CacheReading("stale", 42.5, "http")}
    health.doc = {"auth": {"jwks": {"status": "good"}}}  # several words for a state; no age field: no age
    assert read_caches(ctx) == {"billing": CacheReading("fresh", None, "http")}
    health.doc = {"auth": {"jwks": {"status": "failed", "age": "long"}}}
    assert read_caches(ctx)["billing"] == CacheReading("expired", None, "http")


@pytest.mark.parametrize("doc, detail", [
    ({"auth": {"jwks": {"status": "rebooting"}}}, "auth.jwks.status='rebooting'"),  # a word the target did not map
    ({"auth": {}}, "auth.jwks.status=None"),  # the field is not there
    (None, "JSONDecodeError"),  # not JSON
])
def test_an_http_signal_that_says_nothing_we_know_is_unknown(stub: Stub, tmp_path: Path, doc: Any,
                                                             detail: str) -> None:
    billing = stub(Health(doc))
    ctx = _ctx(tmp_path, stub(Prometheus()).url, {"billing": _http_service(billing.url)})
    reading = read_caches(ctx)["billing"]
    assert (reading.state, reading.source) == ("unknown", "http") and detail in reading.detail, reading


def test_an_http_signal_that_does_not_answer_is_unknown(stub: Stub, tmp_path: Path, unused_port: int) -> None:
    ctx = _ctx(tmp_path, stub(Prometheus()).url, {"billing": _http_service(f"http://127.0.0.1:{unused_port}")})
    reading = read_caches(ctx)["billing"]
    assert reading.state == "unknown" and "ConnectionError" in reading.detail


def test_a_prometheus_signal_is_the_state_whose_expression_holds_the_worse_winning(stub: Stub,
                                                                                 tmp_path: Path) -> None:
    p = Prometheus()
    ctx = _ctx(tmp_path, stub(p).url, {"orders": {"url": NOWHERE, "routes": ["GET /v2/orders"],
                                                  "cache": {"prometheus": ORDERS_CACHE}}})
    p.answers = {ORDERS_CACHE["fresh"]: [({"app": "orders"}, 1)]}
    assert read_caches(ctx) == {"orders": CacheReading("fresh", None, "prometheus")}
    assert set(p.asked) <= set(ORDERS_CACHE.values())  # the target's expressions, as written
    p.answers[ORDERS_CACHE["expired"]] = [({"app": "orders"}, 1)]  # two at once (a scrape between two gauges)
    assert read_caches(ctx)["orders"].state == "expired"
    p.answers = {ORDERS_CACHE["stale"]: [({"app": "orders"}, 0)], ORDERS_CACHE["fresh"]: [({"app": "orders"}, 0.5)]}
    assert read_caches(ctx)["orders"] == CacheReading("unknown", None, "prometheus", "no state expression holds")
    p.broken = True
    reading = read_caches(ctx)["orders"]
    assert reading.state == "unknown" and "query failed" in reading.detail


def test_without_a_signal_of_its_own_the_contracts_series_by_the_service_label(stub: Stub, tmp_path: Path) -> None:
    """The lab's ``jwks_cache_state{state}`` gauge (the METRIC_CACHE_* defaults), one query a state for every service
    without a signal of its own."""
    p = Prometheus()
    bare = {"url": NOWHERE, "routes": ["GET /x"]}
    ctx = _ctx(tmp_path, stub(p).url, {"policy": bare, "vuln": bare, "notify": bare, "audit": bare})
    p.answers = {
        'max by (service) (jwks_cache_state{state="stale"})': [({"service": "policy"}, 1), ({"service": "vuln"}, 0),
                                                               ({"service": "notify"}, 0)],
        'max by (service) (jwks_cache_state{state="fresh"})': [({"service": "policy"}, 0), ({"service": "vuln"}, 1),
                                                               ({"service": "notify"}, 0)],
        'max by (service) (jwks_cache_state{state="empty"})': [({"service": "notify"}, 0)]}
    got = read_caches(ctx)
    assert {n: r.state for n, r in got.items()} == {"policy": "stale", "vuln": "fresh", "notify": "unknown",
                                                    "audit": "unknown"}
    assert got["policy"].source == "metrics"
    assert "no cache series for notify" in got["notify"].detail and "services.notify.cache" in got["notify"].detail


def test_a_contract_of_its_own_expired_beats_stale_and_all_zero_is_never_fresh(stub: Stub, tmp_path: Path) -> None:
    """Gauges of the target's own naming (METRIC_CACHE_* any PromQL, by METRIC_SERVICE_LABEL): a service whose every
    series is 0 — an empty cache among them — is not read as fresh."""
    p = Prometheus()
    bare = {"url": NOWHERE, "routes": ["GET /x"]}
    ctx = _ctx(tmp_path, stub(p).url, {"orders": bare, "billing": bare, "audit": bare},
               metric_service_label="app", metric_cache_expired="keys_expired", metric_cache_stale="keys_stale",
               metric_cache_fresh="keys_cached > 0", metric_cache_empty="keys_cached == bool 0")
    p.answers = {"max by (app) (keys_expired)": [({"app": "orders"}, 1), ({"app": "billing"}, 0),
                                                 ({"app": "audit"}, 0)],
                 "max by (app) (keys_stale)": [({"app": "orders"}, 1), ({"app": "billing"}, 1), ({"app": "audit"}, 0)]}
    assert {n: r.state for n, r in read_caches(ctx).items()} == {"orders": "expired", "billing": "stale",
                                                                "audit": "unknown"}


def test_each_service_is_read_through_its_own_kind_of_signal(stub: Stub, tmp_path: Path) -> None:
    p = Prometheus()
    billing = stub(Health({"auth": {"jwks": {"status": "starting"}}}))
    ctx = _ctx(tmp_path, stub(p).url, {
        "orders": {"url": NOWHERE, "routes": ["GET /v2/orders"], "cache": {"prometheus": ORDERS_CACHE}},
        "billing": _http_service(billing.url), "shipping": {"url": NOWHERE, "routes": ["GET /parcels"]}})
    p.answers = {ORDERS_CACHE["stale"]: [({"app": "orders"}, 1)],
                 'max by (service) (jwks_cache_state{state="expired"})': [({"service": "shipping"}, 1),
                                                                          ({"service": "orders"}, 1)]}
    got = read_caches(ctx)
    assert [(n, r.state, r.source) for n, r in got.items()] == [
        ("orders", "stale", "prometheus"), ("billing", "empty", "http"), ("shipping", "expired", "metrics")]


def test_the_states_held_in_a_window_come_from_each_services_prometheus_signal(stub: Stub, tmp_path: Path) -> None:
    """services_in_state: the target's own expression over the window (a subquery), the contract's for services
    without one, nothing for a JSON endpoint (it has no history: the watch's ticks are its record)."""
    p = Prometheus()
    billing = stub(Health({"auth": {"jwks": {"status": "failed"}}}))
    ctx = _ctx(tmp_path, stub(p).url, {
        "orders": {"url": NOWHERE, "routes": ["GET /v2/orders"], "cache": {"prometheus": ORDERS_CACHE}},
        "billing": _http_service(billing.url), "shipping": {"url": NOWHERE, "routes": ["GET /parcels"]}})
    own = f"max_over_time(({ORDERS_CACHE['expired']})[30s:])"
    contract = 'max by (service) (max_over_time((jwks_cache_state{state="expired"})[30s:]))'
    p.answers = {own: [({"app": "orders"}, 1)], contract: [({"service": "shipping"}, 1), ({"service": "billing"}, 1)]}
    assert services_in_state(ctx, "expired", 1000.0, 1030.0) == {"orders", "shipping"}
    assert own in p.asked and contract in p.asked
    assert services_in_state(ctx, "stale", 1000.0, 1030.0) == set()


def test_a_service_with_no_cache_signal_is_not_judged_never_fresh(stub: Stub, tmp_path: Path) -> None:
    """jwks-caches-fresh passes only what it could read; a service no signal speaks for is a gap it names, and
    doctor lists the same gap before the run."""
    p = Prometheus()
    services = {"orders": {"url": NOWHERE, "routes": ["GET /v2/orders"], "cache": {"prometheus": ORDERS_CACHE}},
                "shipping": {"url": NOWHERE, "routes": ["GET /x"]}}
    conf = target_config(tmp_path, description(services=services, prometheus={"url": stub(p).url}))
    ctx = RunContext(load_config(conf))
    p.answers = {ORDERS_CACHE["fresh"]: [({"app": "orders"}, 1)]}
    res = jwks_caches_fresh(configuration=conf)
    assert res["ok"] is True and res["not_judged"] is True and res["not_fresh"] == []
    assert res["states"] == {"orders": "fresh", "shipping": "unknown"} and "shipping" in res["gap"]
    warnings = {f.name: f for f in check_judgeable(ctx)}
    gap = warnings["not judged: cache of shipping"]
    assert not gap.ok and not gap.required and "services.shipping.cache" in gap.fix
    assert "not judged: cache of orders" not in warnings
    p.answers[ORDERS_CACHE["stale"]] = [({"app": "orders"}, 1)]  # a known bad state still fails
    res = jwks_caches_fresh(configuration=conf)
    assert res["ok"] is False and res["not_fresh"] == ["orders"]
