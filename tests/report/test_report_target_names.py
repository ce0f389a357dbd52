"""The report's latency and cache-state plots read the target's own names (its metric contract and its services' own
cache signals), and a plot that cannot be drawn for the target says why instead of showing an empty chart."""
from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from chaosext.core.config import load_config
from chaosext.core.target import CacheSignal, MetricContract, Service
from chaosext.lab.testing import free_ports
from chaosext.metrics import prom
from chaosext.outage.evidence import evidence_plan, query_ranges
from chaosext.report.plots import make_plots
from chaosext.run.context import RunContext

#: /actuator/prometheus of a Spring-like "orders": 300 requests of 20 ms (all in the 50 ms bucket), keys gone
SPRING = "\n".join([
    "# TYPE http_server_requests_seconds histogram",
    *(f'http_server_requests_seconds_bucket{{application="orders",tenant_id="t01",status="200",le="{le}"}} {{n}}'
      for le in ("0.05", "+Inf")),
    'http_server_requests_seconds_count{application="orders",tenant_id="t01",status="200"} {n}',
    'http_server_requests_seconds_sum{application="orders",tenant_id="t01",status="200"} {s}',
    "# TYPE auth_jwks_keys_usable gauge",
    'auth_jwks_keys_usable{application="orders",usable="false"} 1', ""])
SETTINGS = {"metric_requests": "http_server_requests_seconds_count", "metric_tenant_label": "tenant_id",
            "metric_service_label": "application", "metric_latency_histogram": "http_server_requests_seconds",
            "metric_cache_expired": 'auth_jwks_keys_usable{usable="false"}'}


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping the Spring-like service every second (its count grows by 300 a second); its URL."""
    born = time.time()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            n = int((time.time() - born) * 300)
            body = SPRING.replace("{n}", str(n)).replace("{s}", str(n * 0.02)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (port,) = free_ports(["127.0.0.1"])
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n  - job_name: orders\n"
        "    metrics_path: /actuator/prometheus\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{server.server_address[1]}']}}]\n")
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(20)
        server.shutdown()
        server.server_close()


def _samples(url: str, query: str) -> int:
    try:
        body = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=5).json()
    except requests.RequestException:
        return 0
    return len(body.get("data", {}).get("result", []))


@pytest.mark.e2e
def test_latency_and_cache_plots_are_drawn_from_the_targets_own_names(scraped: str, tmp_path: Path) -> None:
    url = scraped
    start = time.time()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _samples(url, "count_over_time(http_server_requests_seconds_count[1m]) "
                                                            "> 5"):
        time.sleep(0.5)  # rate windows need several scrapes
    ctx = RunContext(load_config({"prometheus_url": url, "chaosext_lab_dir": str(tmp_path / "no-lab"),
                                  "service_urls": "orders=http://127.0.0.1:9", **SETTINGS}))
    plan = evidence_plan(ctx.cfg.metrics, ctx.cfg.services)
    assert "http_server_requests_seconds_bucket{{tenant_id!=" in plan.queries["p95_latency"]
    assert "auth_jwks_keys_usable" in plan.queries["jwks_cache_state"]
    ranges = query_ranges(prom.prom_of(ctx), start, time.time(), plan.queries)
    p95 = [s for s in ranges["p95_latency"] if any(v != "NaN" for _, v in s["values"])]
    assert [s["metric"] for s in p95] == [{"service": "orders"}]
    assert max(float(v) for _, v in p95[0]["values"] if v != "NaN") == pytest.approx(0.0475)
    expired = [s for s in ranges["jwks_cache_state"] if s["metric"] == {"service": "orders", "state": "expired"}]
    assert expired and float(expired[0]["values"][-1][1]) == 1
    plots = {p["key"]: p for p in make_plots(ranges, [], None, (start, time.time()), notes=plan.notes,
                                             cache_gaps=plan.cache_gaps)}
    assert plots["p95_latency"]["png"] and plots["jwks_cache_state"]["png"]
    assert plots["jwks_cache_state"]["note"] == ""

    # the default contract reads none of it: the lab's names are not this target's
    lab = evidence_plan(MetricContract(), ctx.cfg.services)
    blind = query_ranges(prom.prom_of(ctx), start, time.time(), lab.queries)
    assert blind["p95_latency"] == [] and blind["jwks_cache_state"] == []


def test_a_plot_the_target_cannot_have_says_why_instead_of_an_empty_chart() -> None:
    contract = MetricContract.parse({"requests": "http_requests_total", "service_label": "app",
                                     "latency_histogram": "off"})
    services = {"orders": Service("orders", "http://o", cache=CacheSignal(
                    "http", url="http://o/health", state_field="jwks.state", words={"fresh": ("ok",)})),
                "billing": Service("billing", "http://b", cache=CacheSignal(
                    "prometheus", queries={"expired": "billing_keys == bool 0"}))}
    plan = evidence_plan(contract, services)
    assert "p95_latency" not in plan.queries
    assert 'label_replace(max((billing_keys == bool 0)), "service", "billing"' in plan.queries["jwks_cache_state"]
    assert 'label_replace(' in plan.queries["jwks_cache_state"] and '"app"' in plan.queries["jwks_cache_state"]
    now = 1_700_000_000.0
    billing = [{"metric": {"service": "billing", "state": "expired"}, "values": [[now + i, "1"] for i in range(9)]}]
    plots = {p["key"]: p for p in make_plots({"jwks_cache_state": billing}, [], None, (now, now + 10),
                                             notes=plan.notes, cache_gaps=plan.cache_gaps)}
    assert plots["p95_latency"]["png"] == ""
    assert plots["p95_latency"]["note"].startswith("not drawn: the target names no latency histogram")
    assert plots["jwks_cache_state"]["png"], "billing's own signal is drawn"
    assert plots["jwks_cache_state"]["note"].startswith("not drawn for orders: its cache state is read over HTTP")
    alone = {p["key"]: p for p in make_plots({}, [], None, (now, now + 10), notes=plan.notes,
                                             cache_gaps={"orders": plan.cache_gaps["orders"]})}
    assert alone["jwks_cache_state"]["png"] == "" and "orders: its cache state is read over HTTP" in \
        alone["jwks_cache_state"]["note"]
