"""The recovery's error rate counts only what the services did after every cache was fresh again.

The moment a cache is seen fresh comes from the target's own signal — for the lab an HTTP endpoint read at once —
while the request counters reach Prometheus only at its next scrape. Errors a service made before it recovered but
that Prometheus scraped after that moment must not be charged to the recovery window (the expiry drill's healthy lab
failed recovery with 1-14 % errors that were all made before the caches were fresh).

Prometheus is a stub holding the counters' raw samples as it would scrape them (every 2 s here) and answering a
range-vector query with them, in its documented ``matrix`` shape (tests/promutil.raw).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chaosext.outage.hypothesis import error_rate_within_max
from chaosext.run.record import edit_run
from tests.jsonstub import Handler, JsonStub
from tests.promutil import Series, raw
from tests.runutil import run_dir, start_run

pytestmark = [pytest.mark.contract]

SCRAPE_SECONDS = 2.0


def scraped_counters(fresh_at: float, until: float) -> Series:
    """One service that answered 50 errors/s while its cache was expired (the 20 s until ``fresh_at``) and none
    after, out of 100 requests/s, scraped every 2 s: at fresh_at - 1.5, fresh_at + 0.5, ... (one scrape straddles
    the recovery, carrying 75 errors made before it)."""
    first = fresh_at - 60.0 + 0.5
    times = [first + k * SCRAPE_SECONDS for k in range(int((until - first) / SCRAPE_SECONDS) + 1)]

    def errors(t: float) -> float:
        return 50.0 * max(0.0, min(t, fresh_at) - (fresh_at - 20.0))

    labels = {"service": "orders", "tenant": "t01", "route": "/v2/orders"}
    return [({**labels, "status": "200"}, [(t, 100.0 * (t - first) - errors(t)) for t in times]),
            ({**labels, "status": "503"}, [(t, errors(t)) for t in times])]


def test_errors_made_before_the_caches_were_fresh_are_not_the_recoverys(stub: Callable[[Handler], JsonStub],
                                                                       tmp_path: Path) -> None:
    now = time.time()
    fresh_at = now - 10.0
    conf = start_run(tmp_path, prometheus_url=stub(raw(scraped_counters(fresh_at, now))).url,
                     service_urls="orders=http://127.0.0.1:9", error_rate_max="0.01")
    with edit_run(run_dir(conf)) as run:
        run.begin_outage(fresh_at - 30.0, "ab12cd34", None)
        run.end_outage(fresh_at - 5.0, "", None)
        run.recovered_at = fresh_at  # every cache fresh again, seen through its signal
    res = error_rate_within_max(configuration=conf)
    assert res["phase"] == "recovery" and res["requests"] >= 50, res
    assert res["errors"] == 0 and res["ok"] is True, res
