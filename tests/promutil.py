"""A real Prometheus (the Debian binary) scraping exporters a test controls, for tests of what chaosext reads from it.

    with exporter(lambda: "my_total 3\n") as target, scraping(tmp, {"orders": (target, "/metrics")}) as url:
        prom.query(url, "my_total")

``exporter(text)`` serves ``text()`` (the Prometheus text format) on a free loopback port; ``scraping`` starts
Prometheus with a 1 s scrape interval on its own TSDB and waits until it answers; both stop when the block ends.
Without a Prometheus: ``raw(series)`` is a handler for ``tests.jsonstub`` answering range-vector instant queries with
given raw samples, in Prometheus' documented ``matrix`` shape.
"""
from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from chaosext.core.backends import backend
from chaosext.core.config import ExperimentConfig
from chaosext.lab.testing import free_ports
from chaosext.metrics import prom
from tests.jsonstub import Handler

__all__ = ["exporter", "scraping", "wait_scraped", "prom_at", "raw", "Series"]

#: counter series: (labels, [(time, value), ...]) each
Series = list[tuple[dict[str, str], list[tuple[float, float]]]]


def prom_at(url: str) -> prom.Prom:
    """The Prometheus at ``url`` (no credentials) with the lab's metric names."""
    return prom.Prom(backend("prometheus", url, ExperimentConfig()))


@contextlib.contextmanager
def exporter(text: Callable[[], str]) -> Iterator[str]:
    """Serve ``text()`` on every GET; yields ``host:port``."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def scraping(tmp: Path, jobs: dict[str, tuple[str, str]], extra_job_yaml: str = "") -> Iterator[str]:
    """A Prometheus scraping ``{job: (host:port, metrics path)}`` every second; yields its URL."""
    (port,) = free_ports(["127.0.0.1"])
    config = "global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n"
    for job, (target, path) in jobs.items():
        config += (f"  - job_name: {job}\n    metrics_path: {path}\n{extra_job_yaml}"
                   f"    static_configs: [{{targets: ['{target}']}}]\n")
    (tmp / "prometheus.yml").write_text(config)
    with open(tmp / "prometheus.log", "wb") as log:  # Prometheus keeps its own copy of the descriptor
        proc = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
            try:
                if prom.query(prom_at(url), "up"):
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def wait_scraped(url: str, metric: str, every_series: bool = False) -> float:
    """Wait until Prometheus holds a sample of ``metric`` taken after now (of every series of it with
    ``every_series``: every target scraped again); returns the time it saw it."""
    now = time.time()
    deadline = now + 30
    while time.time() < deadline:
        p = prom_at(url)
        newest = prom.query(p, f"min(timestamp({metric}))") if every_series else None
        seen = float(newest[0]["value"][1]) if newest else prom.latest_sample_time(p, metric)
        if seen > now + 0.5:
            return time.time()
        time.sleep(0.3)
    raise AssertionError(f"Prometheus did not scrape {metric} within 30 s")


def raw(series: Series, expect_selector: str | None = None) -> Handler:
    """A Prometheus holding these counter series (labels, [(time, value), ...]): answers an instant query of
    ``selector[Ns]`` at ``time`` with each series' raw samples in (time - N, time], as a ``matrix`` (Prometheus'
    documented shape for a range-vector instant query)."""
    def handler(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        assert path == "/api/v1/query"
        m = re.fullmatch(r"(.+)\[(\d+)s\]", q["query"])
        assert m, q["query"]
        if expect_selector is not None:
            assert m.group(1) == expect_selector, m.group(1)
        at, rng = float(q["time"]), float(m.group(2))
        result = [{"metric": labels, "values": [[t, str(v)] for t, v in samples if at - rng < t <= at]}
                  for labels, samples in series]
        return 200, {"status": "success", "data": {"resultType": "matrix",
                                                   "result": [r for r in result if r["values"]]}}
    return handler
