"""A service that exports other metric names (Spring-Boot style ``http_server_requests_seconds_count{status,
tenant_id,application}`` and its own cache gauges), scraped by a real Prometheus the test starts, judged through
overridden METRIC_* settings — and the same data under the default contract is not judged as if it were fine.
"""
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaosext.core.config import load_config
from chaosext.core.target import ContractError, MetricContract
from chaosext.metrics import prom
from chaosext.metrics.cache import CacheReading, read_caches
from chaosext.outage.evidence import query_ranges
from chaosext.run.context import RunContext
from tests.promutil import exporter, scraping, wait_scraped

OVERRIDES = {
    "metric_requests": "http_server_requests_seconds_count",
    "metric_requests_matchers": 'uri!~"/actuator.*"',
    "metric_tenant_label": "tenant_id",
    "metric_service_label": "application",
    "metric_cache_expired": 'auth_jwks_keys_usable{usable="false"}',
    "metric_cache_stale": "auth_jwks_keys_stale",
    "metric_unverified_accepts": 'auth_tokens_accepted_total{verified="false"}',
}


class SpringLike:
    """/actuator/prometheus of a service that names things its own way; counts are set by the test."""

    def __init__(self) -> None:
        self.requests: Counter = Counter()  # (tenant, status, uri) -> count
        self.keys_usable = 1
        self.unverified = 0
        self.lock = threading.Lock()

    def text(self) -> str:
        lines = ["# TYPE http_server_requests_seconds_count counter"]
        with self.lock:
            for (tenant, status, uri), n in sorted(self.requests.items()):
                lines.append(f'http_server_requests_seconds_count{{application="orders",tenant_id="{tenant}",'
                             f'status="{status}",uri="{uri}"}} {n}')
            lines += ["# TYPE auth_jwks_keys_usable gauge",
                      f'auth_jwks_keys_usable{{application="orders",usable="true"}} {self.keys_usable}',
                      f'auth_jwks_keys_usable{{application="orders",usable="false"}} {1 - self.keys_usable}',
                      "# TYPE auth_jwks_keys_stale gauge", 'auth_jwks_keys_stale{application="orders"} 0',
                      "# TYPE auth_tokens_accepted_total counter",
                      f'auth_tokens_accepted_total{{application="orders",verified="false"}} {self.unverified}']
        return "\n".join(lines) + "\n"

    def add(self, tenant: str, status: int, n: int, uri: str = "/api/orders") -> None:
        with self.lock:
            self.requests[(tenant, str(status), uri)] += n


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SpringLike, str]]:
    """The stub service and a real Prometheus scraping it every second; yields (stub, prometheus URL)."""
    tmp = tmp_path_factory.mktemp("contract")
    svc = SpringLike()
    with exporter(svc.text) as target, scraping(tmp, {"orders": (target, "/actuator/prometheus")}) as url:
        yield svc, url


def _ctx(url: str, tmp_path: Path, settings: dict[str, str]) -> RunContext:
    """A run's context reading Prometheus at ``url`` with these METRIC_* settings (the service is "orders")."""
    return RunContext(load_config({"prometheus_url": url, "chaosext_lab_dir": str(tmp_path / "no-lab"),
                                   "service_urls": "orders=http://127.0.0.1:9", **settings}))


@pytest.mark.e2e
@pytest.mark.lab
def test_error_rate_cache_state_and_unverified_accepts_through_overridden_selectors(
        scraped: tuple[SpringLike, str], tmp_path: Path) -> None:
    svc, url = scraped
    svc.add("t01", 200, 100)
    svc.add("t02", 200, 100)
    svc.add("t01", 500, 1)  # error series exist before the window (rate() cannot see a series' first value)
    svc.add("t02", 401, 1)
    start = wait_scraped(url, "http_server_requests_seconds_count")
    # "the outage": 50 good, 5 server errors, 3 401s of a real tenant; client noise and chaosext's probe excluded;
    # the scrape endpoint itself is not a request of the API (METRIC_REQUESTS_MATCHERS)
    svc.add("t01", 200, 30)
    svc.add("t02", 200, 20)
    svc.add("t01", 500, 5)
    svc.add("t02", 401, 3)
    svc.add("__unauthenticated__", 401, 40)
    svc.add("chaosext-probe", 401, 7)
    svc.add("t01", 200, 1000, uri="/actuator/prometheus")
    svc.keys_usable = 0
    svc.unverified = 2
    end = wait_scraped(url, "http_server_requests_seconds_count")

    ctx = _ctx(url, tmp_path, OVERRIDES)
    p = prom.prom_of(ctx)
    res = prom.error_rate_between(p, start, end)
    assert (res["errors"], res["requests"]) == (8, 58)
    assert res["error_rate"] == pytest.approx(8 / 58)
    assert prom.services_where(p, ctx.cfg.metrics.cache_expired) == ["orders"]
    assert prom.services_where(p, ctx.cfg.metrics.cache_stale) == []
    # what the baseline/recovery cache probe reads: the service has no signal of its own, the contract's series say
    assert read_caches(ctx) == {"orders": CacheReading("expired", None, "metrics")}
    assert prom.unverified_accepts_between(p, start, end) == {"orders": 2}
    # the report plots the same error rate, per service under the plots' "service" label
    time.sleep(4)  # a few more scrapes, so the plot's 10 s rate windows hold several samples
    plotted = query_ranges(p, start, time.time())["error_rate"]
    assert [s["metric"] for s in plotted] == [{"service": "orders"}]
    assert max(float(v) for _, v in plotted[0]["values"]) > 0

    # the default contract finds none of this service's requests: no "0 % errors" pass from the wrong names
    default = _ctx(url, tmp_path, {})
    assert prom.error_rate_between(prom.prom_of(default), start, end)["requests"] == 0
    assert prom.services_where(prom.prom_of(default), default.cfg.metrics.cache_expired) == []


def _contract(tmp_path: Path, **settings: str) -> MetricContract:
    """The run's metric contract as the settings are resolved (``load_config`` parses it once into ``cfg.metrics``)."""
    return load_config({"chaosext_lab_dir": str(tmp_path / "no-lab"), **settings}).metrics


def test_bad_metric_settings_are_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="METRIC_REQUESTS="):
        _contract(tmp_path, metric_requests="http requests")
    with pytest.raises(ContractError, match="METRIC_SERVICE_LABEL"):
        _contract(tmp_path, metric_service_label="app-name")
    with pytest.raises(ContractError, match="METRIC_CACHE_EXPIRED"):
        _contract(tmp_path, metric_cache_expired="max(x > 0")
    with pytest.raises(ContractError, match="METRIC_CACHE_FRESH"):
        _contract(tmp_path, metric_cache_fresh='keys{app="x"')
    expression = "max by (application) (keys_cached) == 0"  # any PromQL whose series carry the service label
    assert _contract(tmp_path, metric_cache_empty=expression).cache_empty == expression
    with pytest.raises(ContractError, match="METRIC_REQUESTS_MATCHERS"):
        _contract(tmp_path, metric_requests_matchers='{job="api"}')
    no_tenant = _contract(tmp_path, metric_tenant_label="none", metric_error_status="5..")
    assert no_tenant.error_selector() == 'tenant_requests_total{status=~"5.."}'


def test_the_defaults_are_the_lab_names_the_error_rate_always_used(tmp_path: Path) -> None:
    assert prom.ERROR_SELECTOR == ('tenant_requests_total{status=~"5..|401",'
                                   'tenant!~"chaosext-probe|__unauthenticated__"}')
    assert prom.TOTAL_SELECTOR == 'tenant_requests_total{tenant!~"chaosext-probe|__unauthenticated__"}'
    assert _contract(tmp_path) == MetricContract()


@pytest.mark.e2e
@pytest.mark.lab
def test_doctor_finds_the_services_metrics_only_through_the_right_settings(
        scraped: tuple[SpringLike, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from chaosext.metrics.checks import check_metrics

    svc, url = scraped
    svc.add("t03", 200, 1)
    wait_scraped(url, "http_server_requests_seconds_count")
    by_name = {c.name: c for c in check_metrics(_ctx(url, tmp_path, {}))}  # the lab's names: it has none of them
    assert by_name["metric: requests"].status == "warn" and "METRIC_REQUESTS" in by_name["metric: requests"].fix
    assert by_name["metric: cache expired"].status == "warn"
    for key, value in OVERRIDES.items():
        monkeypatch.setenv(key.upper(), value)
    by_name = {c.name: c for c in check_metrics(_ctx(url, tmp_path, {}))}  # the settings from the environment
    assert by_name["metric: requests"].ok and by_name["metric: cache expired"].ok
    assert by_name["metric: unverified accepts"].ok
    assert by_name["metric: cache lookups"].status == "warn"  # this service has no lookup counter: optional
    monkeypatch.setenv("EXPIRY_ALERTS", "JwksKeysExpired")  # the team's own alert: nothing reads the lookups
    lookups = {c.name: c for c in check_metrics(_ctx(url, tmp_path, {}))}["metric: cache lookups"]
    assert lookups.ok and "not needed" in lookups.detail
    monkeypatch.delenv("EXPIRY_ALERTS")
    monkeypatch.setenv("METRIC_SERVICE_LABEL", "service")
    requests_check = {c.name: c for c in check_metrics(_ctx(url, tmp_path, {}))}["metric: requests"]
    assert requests_check.status == "MISSING" and "no label(s) service" in requests_check.detail
