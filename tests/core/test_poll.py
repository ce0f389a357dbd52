"""``chaosext.core.poll.retry_until``: the one poll loop (probes, the baseline warm-up, Prometheus' scrape wait)."""
from __future__ import annotations

from chaosext.core.poll import retry_until


def test_retry_until_stops_when_done_or_past_the_deadline() -> None:
    calls: list[int] = []
    assert retry_until(lambda: calls.append(1) or len(calls), lambda n: n >= 3, deadline=float("inf"),
                       interval=0.0) == 3
    calls.clear()
    assert retry_until(lambda: calls.append(1) or len(calls), lambda n: False, deadline=0.0, interval=0.0) == 1
