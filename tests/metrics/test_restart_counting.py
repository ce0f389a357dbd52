"""Counts that survive restarts, against a real Prometheus scraping two lab-like services: a service restarted inside
the window (its counters begin again at 0) neither zeroes the request count nor hides its errors, and the safety
control's baseline count and the baseline probe agree."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaosext.metrics import prom
from chaosext.outage.hypothesis import error_rate_within_max
from chaosext.run.context import run_context
from chaosext.safety import controls
from tests.promutil import exporter, prom_at, scraping, wait_scraped
from tests.runutil import start_run

pytestmark = [pytest.mark.e2e, pytest.mark.lab]


class Service:
    """The /metrics of one lab service process: ``tenant_requests_total`` set by the test; ``restart()`` is a new
    process (every counter gone, back at 0)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    def add(self, tenant: str, status: int, n: int) -> None:
        with self.lock:
            self.counts[(tenant, str(status))] += n

    def restart(self, *served: tuple[str, int, int]) -> None:
        """A new process that has served ``(tenant, status, n)`` by its first scrape (one atomic change)."""
        with self.lock:
            self.counts = Counter({(tenant, str(status)): n for tenant, status, n in served})

    def text(self) -> str:
        with self.lock:
            lines = [f'tenant_requests_total{{tenant="{t}",service="{self.name}",route="/api/v1/x",status="{s}"}} '
                     f'{n}' for (t, s), n in sorted(self.counts.items())]
        return "# TYPE tenant_requests_total counter\n" + "\n".join(lines) + "\n"


@pytest.fixture
def lab_like(tmp_path: Path) -> Iterator[tuple[Service, Service, str]]:
    policy, vuln = Service("policy"), Service("vuln")
    with exporter(policy.text) as p, exporter(vuln.text) as v, \
            scraping(tmp_path, {"policy": (p, "/metrics"), "vuln": (v, "/metrics")}) as url:
        yield policy, vuln, url


def test_a_restart_in_the_window_neither_zeroes_the_count_nor_hides_errors(lab_like, tmp_path: Path) -> None:
    policy, vuln, url = lab_like
    policy.add("t01", 200, 5000)  # the previous process served a lot
    policy.add("t01", 503, 3)
    vuln.add("t02", 200, 700)
    for _ in range(3):  # samples of the old process well before the window (a series first seen in it counts whole)
        wait_scraped(url, "tenant_requests_total", every_series=True)
    start = wait_scraped(url, "tenant_requests_total", every_series=True)
    policy.add("t01", 200, 100)
    vuln.add("t02", 200, 50)
    wait_scraped(url, "tenant_requests_total", every_series=True)
    # a new process: 40 good requests, 7 503s (more than the old process's 3), 4 401s (a new series)
    policy.restart(("t01", 200, 40), ("t01", 503, 7), ("t02", 401, 4))
    vuln.add("t02", 200, 50)
    end = wait_scraped(url, "tenant_requests_total", every_series=True)

    res = prom.error_rate_between(prom_at(url), start, end)
    assert (res["requests"], res["errors"]) == (100 + 40 + 7 + 4 + 100, 7 + 4)
    res = prom.error_rate_between(prom_at(url), start, end, ("policy", "vuln"))
    assert res["services"] == {"policy": 151, "vuln": 100} and res["problems"] == []
    assert res["top_errors"] == [{"status": "503", "service": "policy", "tenant": "t01", "errors": 7},
                                 {"status": "401", "service": "policy", "tenant": "t02", "errors": 4}]

    # the safety control's warm-up count and the baseline probe: the same window, the same count
    seconds = int(end - start) + 1  # from about 1 s before the start
    configuration = start_run(tmp_path, prometheus_url=url, baseline_seconds=str(seconds), baseline_min_requests="1",
                              service_urls="policy=http://127.0.0.1:9,vuln=http://127.0.0.1:9")
    control_count = controls._wait_for_baseline_traffic(run_context(configuration))
    probe = error_rate_within_max(configuration=configuration)
    assert control_count == probe["requests"] == 251, (control_count, probe)
    assert probe["ok"] is False and probe["error_rate"] == pytest.approx(11 / 251, abs=1e-5)
    assert probe["top_errors"][0] == {"status": "503", "service": "policy", "tenant": "t01", "errors": 7}
