"""The outage checks that read the metrics (chaosext.outage.checks) judged from a recorded outage, without a lab:
which expiry alerts must fire given the services' cache states (alerts_match_cache_state, expired_services), and the
server- and client-side error rates over the outage window.

Prometheus and Alertmanager are stubs answering their documented shapes (``GET /api/v1/query`` instant vectors,
``GET /api/v1/rules`` the loaded rule groups, ``GET /api/v2/alerts`` a list of alerts with ``labels``); the run
record and the outage notebook are written the way the watch step records an outage (``record_outage`` below is the
one place that knows their layout).
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaosext.core.config import DEFAULT_ALERTS
from chaosext.metrics.checks import check_judgeable
from chaosext.outage import checks
from chaosext.outage.judging import Judging, judging_of
from chaosext.outage.notebook import Notebook, save_notebook
from chaosext.run.context import run_context
from chaosext.run.record import Outage, edit_run
from tests.jsonstub import Handler, JsonStub
from tests.runutil import run_dir, start_run
from tests.targetutil import description, write_target

pytestmark = [pytest.mark.contract]

MISS, ERROR_RATE = DEFAULT_ALERTS  # the expiry alerts: jwks_cache_miss_spike, tenant_error_rate_gt_0_5pct


class Monitoring:
    """What the stub Prometheus and Alertmanager report: services whose cache-expired series was 1, the alerting
    rules Prometheus has loaded, alerts that were firing (Prometheus ``ALERTS``), alerts Alertmanager holds, and
    request counters at given times."""

    def __init__(self) -> None:
        self.expired: set[str] = set()
        self.rules: set[str] | None = {MISS, ERROR_RATE, "tenant_latency_p95_high"}  # None: /api/v1/rules fails
        self.firing: set[str] = set()
        self.in_alertmanager: set[str] = set()
        #: raw request-counter samples: (labels, [(time, value), ...]) per series
        self.requests: list[tuple[dict[str, str], list[tuple[float, float]]]] = []
        self.queries: list[str] = []

    def prometheus(self, method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        if path == "/api/v1/rules":
            if self.rules is None:
                return 503, "unavailable"
            alerting = [{"name": n, "query": "vector(1)", "duration": 10, "labels": {}, "annotations": {},
                         "alerts": [], "health": "ok", "type": "alerting", "state": "inactive"}
                        for n in sorted(self.rules)]
            recording = [{"name": "tenant:requests:rate5m", "query": "vector(1)", "health": "ok",
                          "type": "recording"}]
            groups = [{"name": "tenant-alerts", "file": "/etc/prometheus/alerts.yaml", "interval": 2,
                       "rules": alerting if q.get("type") == "alert" else alerting + recording}]
            return 200, {"status": "success", "data": {"groups": groups}}
        assert path == "/api/v1/query", path
        query = q["query"]
        self.queries.append(query)
        if 'jwks_cache_state{state="expired"}' in query:
            result = [{"metric": {"service": s}, "value": [0, "1"]} for s in sorted(self.expired)]
        elif query.startswith("max by (alertname)"):
            asked = re.search(r'alertname=~"([^"]+)"', query)
            assert asked is not None, query
            names = set(asked.group(1).split("|"))
            result = [{"metric": {"alertname": n}, "value": [0, "1"]} for n in sorted(self.firing & names)]
        elif query.startswith("max(timestamp("):
            result = [{"metric": {}, "value": [0, str(time.time() + 3600)]}]  # scraped past the window's end
        elif query.startswith("tenant_requests_total{") and (rng := re.search(r"\[(\d+)s\]$", query)):
            at, n = float(q["time"]), float(rng.group(1))
            return 200, {"status": "success", "data": {"resultType": "matrix", "result": [
                {"metric": labels, "values": [[t, str(v)] for t, v in samples if at - n < t <= at]}
                for labels, samples in self.requests]}}
        else:  # the quietest tenant's rate: no answer
            result = []
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    def alertmanager(self, method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        assert path == "/api/v2/alerts", path
        return 200, [{"labels": {"alertname": n, "severity": "critical"}, "status": {"state": "active"}}
                     for n in sorted(self.in_alertmanager)]


@pytest.fixture
def monitoring(stub: Callable[[Handler], JsonStub]) -> tuple[Monitoring, dict[str, str]]:
    """(state of the stubs, their URLs as the experiment's configuration gives them)."""
    m = Monitoring()
    return m, {"prometheus_url": stub(m.prometheus).url, "alertmanager_url": stub(m.alertmanager).url}


#: the services of the recorded outages below (no cache signal of their own: the metric contract's series)
SERVICE_URLS = "policy=http://127.0.0.1:9,vuln=http://127.0.0.1:9,notify=http://127.0.0.1:9"


def configuration(tmp_path: Path, urls: dict[str, str], **settings: str) -> dict[str, str]:
    """A run of its own (run record in tmp_path), no lab, no waiting for alerts."""
    return start_run(tmp_path, **{"alert_wait_seconds": "0", "service_urls": SERVICE_URLS, **urls, **settings})


def record_outage(conf: dict[str, str], states: list[dict[str, str]], start: float = 0.0, end: float = 0.0,
                  alerts_seen: dict[str, dict[str, float]] | None = None, k6: dict[str, Any] | None = None) -> None:
    """Record an outage the way the watch step does: the window (with k6's counters at its start and end) in the run
    record; one observation per tick with every service's cache state (``states``) and the alerts the watch saw
    firing in the outage notebook."""
    end = end or time.time() - 1
    start = start or end - 30
    observations = [{"t": start + i + 1, "elapsed": i + 1, "services": {n: {"state": s} for n, s in tick.items()}}
                    for i, tick in enumerate(states)]
    with edit_run(run_dir(conf)) as run:
        run.outage = Outage.from_json({"start": start, "end": end, "aborted": False, "reason": "", "k6": k6 or {}})
    save_notebook(run_dir(conf), Notebook.from_json(
        {"observations": observations, "alerts_seen": alerts_seen or {"prometheus": {}, "alertmanager": {}}}))


def judging(conf: dict[str, str]) -> Judging:
    """The recorded outage, as ``judge_outage`` hands it to every check."""
    found = judging_of(run_context(conf))
    assert found is not None
    return found


STALE = {"policy": "stale", "vuln": "stale"}
EXPIRED = {"policy": "expired", "vuln": "stale"}


def test_no_outage_recorded_is_never_a_pass(monitoring: tuple[Monitoring, dict[str, str]], tmp_path: Path) -> None:
    from chaosext.outage.judge import judge_outage

    _, urls = monitoring
    conf = configuration(tmp_path, urls)
    assert judging_of(run_context(conf)) is None
    res = judge_outage(configuration=conf)
    assert res["ok"] is False and res["failed"] == ["no-outage"] and res["checks"] == {}


def test_an_expired_cache_needs_every_expiry_alert_firing_and_in_alertmanager(
        monitoring: tuple[Monitoring, dict[str, str]], tmp_path: Path) -> None:
    m, urls = monitoring
    conf = configuration(tmp_path, urls)
    record_outage(conf, [STALE, EXPIRED])
    m.firing = m.in_alertmanager = {MISS, ERROR_RATE, "tenant_latency_p95_high"}
    res = checks.alerts_match_cache_state(judging(conf))
    assert res["ok"] is True and res["cache_expired"] is True and res["expired_services"] == ["policy"]
    assert res["firing_prometheus"] == sorted([MISS, ERROR_RATE]) and res["expected"] == [MISS, ERROR_RATE]


def test_an_expired_cache_with_an_alert_missing_fails_naming_it(monitoring: tuple[Monitoring, dict[str, str]],
                                                                 tmp_path: Path) -> None:
    m, urls = monitoring
    conf = configuration(tmp_path, urls)
    record_outage(conf, [EXPIRED])
    m.firing = {MISS, ERROR_RATE}
    m.in_alertmanager = {MISS}  # fired, but never reached Alertmanager (routing, inhibition ...)
    res = checks.alerts_match_cache_state(judging(conf))
    assert res["ok"] is False and res["cache_expired"] is True
    assert f"missing in Alertmanager: ['{ERROR_RATE}']" in res["why"]
    m.in_alertmanager = {MISS, ERROR_RATE}
    m.firing = {ERROR_RATE}
    res = checks.alerts_match_cache_state(judging(conf))
    assert res["ok"] is False and f"not firing in Prometheus: ['{MISS}']" in res["why"]


def test_a_cache_that_never_expired_must_fire_no_expiry_alert(monitoring: tuple[Monitoring, dict[str, str]],
                                                              tmp_path: Path) -> None:
    """Serving stale keys within max-stale is the cache doing its job: an expiry alert then is a false alarm."""
    m, urls = monitoring
    conf = configuration(tmp_path, urls)
    record_outage(conf, [STALE, STALE])
    m.firing = m.in_alertmanager = {"tenant_latency_p95_high"}  # other alerts are not this check's business
    res = checks.alerts_match_cache_state(judging(conf))
    assert res["ok"] is True and res["cache_expired"] is False and res["expired_services"] == []
    m.in_alertmanager = {MISS}
    res = checks.alerts_match_cache_state(judging(conf))
    assert res["ok"] is False and f"cache never expired but these alerts fired: ['{MISS}']" in res["why"]


def test_an_expiry_only_prometheus_saw_counts_too(monitoring: tuple[Monitoring, dict[str, str]],
                                                  tmp_path: Path) -> None:
    """The watch ticks every few seconds; the services' cache-expired series can catch an expiry between two ticks."""
    m, urls = monitoring
    conf = configuration(tmp_path, urls)
    record_outage(conf, [STALE])
    m.expired = {"notify"}
    res = checks.alerts_match_cache_state(judging(conf))
    assert res["ok"] is False and res["cache_expired"] is True and res["expired_services"] == ["notify"]
    assert checks.expired_services(judging(conf)) == {"notify": "prometheus"}
    assert any("max_over_time(" in q and 'jwks_cache_state{state="expired"}' in q for q in m.queries)


def test_alerts_the_watch_saw_count_although_they_resolved_since(monitoring: tuple[Monitoring, dict[str, str]],
                                                                 tmp_path: Path) -> None:
    _, urls = monitoring
    conf = configuration(tmp_path, urls)
    now = time.time()
    record_outage(conf, [EXPIRED], alerts_seen={"prometheus": {MISS: now - 10, ERROR_RATE: now - 9},
                                                "alertmanager": {MISS: now - 8, ERROR_RATE: now - 7}})
    res = checks.alerts_match_cache_state(judging(conf))
    assert res["ok"] is True, res["why"]
    assert checks.expired_services(judging(conf)) == {"policy": "healthz"}


def _series(service: str, status: str, samples: list[tuple[float, float]]) -> tuple[dict[str, str],
                                                                                 list[tuple[float, float]]]:
    return {"service": service, "tenant": "t01", "status": status, "route": "/r"}, samples


def test_server_error_rate_over_the_outage_window(monitoring: tuple[Monitoring, dict[str, str]],
                                                  tmp_path: Path) -> None:
    m, urls = monitoring
    conf = configuration(tmp_path, urls, error_rate_max="0.01", service_urls="policy=http://127.0.0.1:9")
    start, end = 1000.0, 1030.0
    record_outage(conf, [STALE], start=start, end=end)
    every5 = [start - 5 + 5 * i for i in range(8)]  # scraped every 5 s, from before the window to its end
    m.requests = [_series("policy", "200", [(t, 5000 + 33 * (t - every5[0])) for t in every5]),
                  _series("policy", "500", [(t, 10 + (t >= 1010) * 4) for t in every5])]
    res = checks.server_error_rate(judging(conf))
    assert (res["ok"], res["errors"], res["requests"], res["services"]) == (True, 4, 990 + 4, {"policy": 994})
    assert res["error_rate"] == pytest.approx(4 / 994, abs=1e-5)
    m.requests[1] = _series("policy", "500", [(t, 10 + (t >= 1010) * 30) for t in every5])
    res = checks.server_error_rate(judging(conf))
    assert res["ok"] is False and res["error_rate"] == pytest.approx(30 / 1020, abs=1e-5)
    assert res["top_errors"] == [{"status": "500", "service": "policy", "tenant": "t01", "errors": 30}]
    m.requests = [_series("policy", "200", [(t, 5000) for t in every5])]
    res = checks.server_error_rate(judging(conf))
    assert res["ok"] is False and "policy: no request counted in the window" in res["note"]


def test_a_service_killed_in_the_outage_fails_the_server_side_check_by_name(
        monitoring: tuple[Monitoring, dict[str, str]], tmp_path: Path) -> None:
    """policy is SIGKILLed halfway through: its series stop at its last scrape; the requests counted elsewhere are
    all fine, yet the check fails, naming policy (the dead service's failed requests are nowhere in Prometheus)."""
    m, urls = monitoring
    conf = configuration(tmp_path, urls, service_urls="policy=http://127.0.0.1:9,vuln=http://127.0.0.1:9")
    start, end = 1000.0, 1060.0
    record_outage(conf, [STALE], start=start, end=end)
    every2 = [start - 2 + 2 * i for i in range(32)]
    m.requests = [_series("vuln", "200", [(t, 50 * t) for t in every2]),
                  _series("policy", "200", [(t, 50 * t) for t in every2 if t <= 1030])]
    res = checks.server_error_rate(judging(conf))
    assert res["ok"] is False and res["error_rate"] == 0.0 and res["services"] == {"policy": 1500, "vuln": 3000}
    assert "policy: its request counter was last scraped 30s before the window's end" in res["note"]


@pytest.mark.parametrize("k6, ok, rate", [
    ({"start": {"http_reqs": 1000, "http_req_failed_rate": 0.0}, "end": {"http_reqs": 3000,
                                                                         "http_req_failed_rate": 0.002}}, True, 0.003),
    ({"start": {"http_reqs": 1000, "http_req_failed_rate": 0.01}, "end": {"http_reqs": 2000,
                                                                          "http_req_failed_rate": 0.1}}, False, 0.19),
    ({"start": {"http_reqs": 1000, "http_req_failed_rate": 0.2}, "end": {"http_reqs": 1000,
                                                                         "http_req_failed_rate": 0.2}}, False, None),
])
def test_client_error_rate_from_k6s_counters_at_the_outages_start_and_end(
        monitoring: tuple[Monitoring, dict[str, str]], tmp_path: Path, k6: dict[str, Any], ok: bool,
        rate: float | None) -> None:
    """k6 reports a cumulative request count and failure rate; the outage's own rate is failures(end) - failures(start)
    over requests(end) - requests(start). No request in the outage is no pass."""
    _, urls = monitoring
    conf = configuration(tmp_path, urls, error_rate_max="0.01")
    record_outage(conf, [STALE], k6=k6)
    res = checks.client_error_rate(judging(conf))
    assert res["ok"] is ok and res["error_rate"] == rate


def test_expiry_alerts_prometheus_has_not_loaded_are_not_judged(monitoring: tuple[Monitoring, dict[str, str]],
                                                                tmp_path: Path) -> None:
    """"No expiry alert fired" proves nothing when the rules that would fire are not loaded: the check says it could
    not judge (``not_judged`` and the gap), never a silent pass; doctor lists the same gap before the run."""
    m, urls = monitoring
    conf = configuration(tmp_path, urls)
    record_outage(conf, [STALE, STALE])
    m.rules = {MISS, "tenant_latency_p95_high"}  # tenant_error_rate_gt_0_5pct is not loaded
    res = checks.alerts_match_cache_state(judging(conf))
    assert res["ok"] is True and res["not_judged"] is True and "cache_expired" not in res
    assert f"no alerting rule named {ERROR_RATE}" in res["gap"] and MISS not in res["gap"]
    assert not any(q.startswith("max by (alertname)") for q in m.queries)  # nothing was judged from ALERTS
    gap = {f.name: f for f in check_judgeable(run_context(conf))}["not judged: expiry alerts"]
    assert not gap.ok and not gap.required and ERROR_RATE in gap.detail and "EXPIRY_ALERTS" in gap.fix
    m.rules = None  # Prometheus cannot say which rules it loaded
    res = checks.alerts_match_cache_state(judging(conf))
    assert res["not_judged"] is True and "could not be read" in res["gap"]
    m.rules = {MISS, ERROR_RATE}  # every rule there: judged again
    res = checks.alerts_match_cache_state(judging(conf))
    assert "not_judged" not in res and res["ok"] is True and res["cache_expired"] is False
    assert "not judged: expiry alerts" not in {f.name for f in check_judgeable(run_context(conf))}


def test_a_target_that_names_no_expiry_alert_is_not_judged(monitoring: tuple[Monitoring, dict[str, str]],
                                                          tmp_path: Path) -> None:
    _, urls = monitoring
    conf = configuration(tmp_path, urls, target_file=write_target(tmp_path, description(expiry_alerts=[])))
    record_outage(conf, [EXPIRED])
    res = checks.alerts_match_cache_state(judging(conf))
    assert res["ok"] is True and res["not_judged"] is True and res["expected"] == []
    assert "no expiry alert is named" in res["gap"]
