"""latency-within-slo reads the p95 of what a user waits for, on a real Prometheus.

A service that refuses forged tokens slowly (an unknown kid makes its JWKS library try a fetch the outage holds up)
answers 401 after a second or more; the requests it serves stay fast. With a status label on the latency histogram
(express-prom-bundle's ``status_code``), the p95 is that of the 2xx requests; a histogram without one (the lab's) is
judged over every request, and the result says which.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from chaosext.core.target import MetricContract
from chaosext.metrics import prom
from tests.promutil import exporter, prom_at, scraping, wait_scraped

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

BUCKETS = ("0.05", "0.3", "2.5", "+Inf")


class Histograms:
    """``labelled_seconds`` (with ``status_code``) and ``plain_seconds`` (without) of service ``orders``: n fast 200s
    (all under 50 ms) and n slow 401s (about 2 s)."""

    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def text(self) -> str:
        with self.lock:
            n = self.n
        fast = {"0.05": n, "0.3": n, "2.5": n, "+Inf": n}
        slow = {"0.05": 0, "0.3": 0, "2.5": n, "+Inf": n}
        lines = ["# TYPE labelled_seconds histogram", "# TYPE plain_seconds histogram"]
        for code, counts in (("200", fast), ("401", slow)):
            lines += [f'labelled_seconds_bucket{{service="orders",status_code="{code}",le="{le}"}} {counts[le]}'
                      for le in BUCKETS]
            lines += [f'labelled_seconds_count{{service="orders",status_code="{code}"}} {n}']
        lines += [f'plain_seconds_bucket{{service="orders",le="{le}"}} {fast[le] + slow[le]}' for le in BUCKETS]
        lines += [f'plain_seconds_count{{service="orders"}} {2 * n}']
        return "\n".join(lines) + "\n"


def test_the_p95_is_of_the_served_requests_when_the_histogram_has_a_status_label(tmp_path: Path) -> None:
    h = Histograms()
    with exporter(h.text) as target, scraping(tmp_path, {"orders": (target, "/metrics")}) as url:
        wait_scraped(url, "labelled_seconds_count")
        start = time.time()  # the window holds samples before and after the requests (as an outage window does)
        for _ in range(2):
            wait_scraped(url, "labelled_seconds_count")
        with h.lock:
            h.n = 100
        for _ in range(2):
            wait_scraped(url, "labelled_seconds_count")
        end = time.time()

        def p95_of(histogram: str) -> tuple[dict[str, float], str]:
            p = prom_at(url)
            p = prom.Prom(p.backend, MetricContract(latency_histogram=histogram, status_label="status_code",
                                                    service_label="service"))
            return prom.latency_p95_by_service(p, start, end)

        served, scope = p95_of("labelled_seconds")
        every, plain_scope = p95_of("plain_seconds")
    assert scope == "2xx" and served["orders"] <= 0.05, served
    assert plain_scope == "all" and every["orders"] > 0.3, every
