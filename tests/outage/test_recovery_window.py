"""The recovery's error rate counts only what the services did after every cache was fresh again.

The moment a cache is seen fresh now comes from the target's own signal — for the lab an HTTP endpoint read at once —
while the request counters reach Prometheus only at its next scrape. Errors a service made before it recovered but
that Prometheus scraped after that moment must not be charged to the recovery window (the expiry drill's healthy lab
failed recovery with 1-14 % errors that were all made before the caches were fresh).

Prometheus is a stub that answers ``GET /api/v1/query`` as Prometheus does for scraped counters: the value of the
newest scrape at or before the query's time (every 2 s here), ``timestamp()`` the time of that scrape.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaosext.outage.hypothesis import error_rate_within_max
from chaosext.run.record import edit_run
from tests.jsonstub import Handler, JsonStub
from tests.runutil import run_dir, start_run

pytestmark = [pytest.mark.contract]

SCRAPE_SECONDS = 2.0


class ScrapedCounters:
    """Request counters of services that answered 50 errors/s while their caches were expired (until ``fresh_at``)
    and none after, out of 100 requests/s, as Prometheus holds them: sampled every 2 s, the newest sample at or
    before the query's time answers (and the stub never answers with a sample from the future)."""

    def __init__(self, fresh_at: float) -> None:
        self.fresh_at = fresh_at
        self.first = fresh_at - 60.0  # the counters' first scrape
        self.phase = 0.5  # scrapes at fresh_at - 1.5, fresh_at + 0.5, ...: one straddles the recovery

    def scrape_before(self, t: float) -> float:
        k = (min(t, time.time()) - self.first - self.phase) // SCRAPE_SECONDS
        return self.first + self.phase + k * SCRAPE_SECONDS

    def errors(self, t: float) -> float:
        return 50.0 * max(0.0, min(t, self.fresh_at) - (self.fresh_at - 20.0))

    def total(self, t: float) -> float:
        return 100.0 * (t - self.first)

    def __call__(self, method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        assert path == "/api/v1/query", path
        query = q["query"]
        at = float(q.get("time") or time.time())
        scraped = self.scrape_before(at)
        if query.startswith("max(timestamp("):
            value = scraped
        elif re.match(r"sum\(tenant_requests_total\{status=~", query):
            value = self.errors(scraped)
        elif query.startswith("sum(tenant_requests_total{"):
            value = self.total(scraped)
        else:
            return 200, {"status": "success", "data": {"resultType": "vector", "result": []}}
        return 200, {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [at, str(value)]}]}}


@pytest.mark.xfail(strict=True, reason="chaosext/outage/hypothesis.py:56 records recovered_at when the cache signal "
                   "(the lab's: HTTP, read at once) says fresh, and :108 reads Prometheus' counters at that time, "
                   "i.e. at the scrape before it: errors made before recovery but scraped after it fail recovery "
                   "(tests/experiment/test_drill_e2e.py healthy lab: 12-115 such errors in 3 of 3 runs)")
def test_errors_made_before_the_caches_were_fresh_are_not_the_recoverys(stub: Callable[[Handler], JsonStub],
                                                                       tmp_path: Path) -> None:
    fresh_at = time.time() - 10.0
    prometheus = ScrapedCounters(fresh_at)
    conf = start_run(tmp_path, prometheus_url=stub(prometheus).url, service_urls="orders=http://127.0.0.1:9",
                     error_rate_max="0.01")
    with edit_run(run_dir(conf)) as run:
        run.begin_outage(fresh_at - 30.0, "ab12cd34", None)
        run.end_outage(fresh_at - 5.0, "", None)
        run.recovered_at = fresh_at  # every cache fresh again, seen through its signal
    res = error_rate_within_max(configuration=conf)
    assert res["phase"] == "recovery" and res["requests"] >= 50
    assert res["errors"] == 0 and res["ok"] is True, res
