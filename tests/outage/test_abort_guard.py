"""The abort decision on its own: observations and a clock in, stop or go on out (no lab, no process, no sleep)."""
from __future__ import annotations

from chaosext.outage.guard import SIGTERM_REASON, AbortGuard, decide
from chaosext.outage.notebook import Observation

GUARD = AbortGuard(max_error_rate=0.5, after_seconds=30)
END_BY = 1_000.0


def ticks(*rates: float | None, every: float = 5.0, start: float = 100.0) -> list[Observation]:
    """One observation per rate, ``every`` seconds apart; None = a tick that counted no request."""
    return [Observation(t=start + i * every, elapsed=i * every, recent_error_rate=rate or 0.0,
                        recent_requests=0.0 if rate is None else 100.0)
            for i, rate in enumerate(rates)]


def test_errors_above_the_threshold_for_the_whole_delay_abort() -> None:
    obs = ticks(0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9)  # t = 100 .. 130
    d = decide(GUARD, obs, now=130.0, end_by=END_BY)
    assert d.stop and d.reason == "abort guard: error rate above 50% for 30s"


def test_not_yet_long_enough_goes_on() -> None:
    obs = ticks(0.9, 0.9, 0.9, 0.9, 0.9, 0.9)  # t = 100 .. 125: 25 s above
    assert not decide(GUARD, obs, now=125.0, end_by=END_BY).stop
    assert decide(GUARD, obs, now=131.0, end_by=END_BY).stop  # the clock decides, not the number of ticks


def test_a_dip_resets_the_delay() -> None:
    obs = ticks(0.9, 0.9, 0.9, 0.9, 0.1, 0.9, 0.9, 0.9)  # the dip at t=120; above again from t=125
    assert GUARD.above_since(obs) == 125.0
    assert not decide(GUARD, obs, now=135.0, end_by=END_BY).stop
    assert decide(GUARD, obs, now=155.0, end_by=END_BY).reason.startswith("abort guard")


def test_a_tick_without_requests_or_at_the_threshold_resets_too() -> None:
    assert GUARD.above_since(ticks(0.9, 0.9, None)) is None  # Prometheus did not answer: no requests counted
    assert GUARD.above_since(ticks(0.9, None, 0.9)) == 110.0
    assert GUARD.above_since(ticks(0.9, 0.5)) is None  # "above" is strictly above
    assert not decide(GUARD, ticks(0.9, 0.9, 0.9, 0.9, 0.9, 0.9, None), now=130.0, end_by=END_BY).stop


def test_a_threshold_above_one_disables_the_guard() -> None:
    off = AbortGuard(max_error_rate=2.0, after_seconds=0)
    everything_fails = ticks(*[1.0] * 50)
    assert not decide(off, everything_fails, now=400.0, end_by=END_BY).stop
    assert decide(off, everything_fails, now=END_BY, end_by=END_BY).reason == ""  # only the planned end


def test_the_planned_end_stops_without_a_reason() -> None:
    obs = ticks(0.0, 0.0)
    assert decide(GUARD, obs, now=END_BY - 0.1, end_by=END_BY).stop is False
    d = decide(GUARD, obs, now=END_BY, end_by=END_BY)
    assert d.stop and d.reason == ""


def test_sigterm_stops_first_whatever_the_rest_says() -> None:
    d = decide(GUARD, ticks(0.0), now=101.0, end_by=END_BY, terminating=True)
    assert d.stop and d.reason == SIGTERM_REASON == "interrupted (SIGTERM)"
    aborting = ticks(*[0.9] * 10)
    assert decide(GUARD, aborting, now=200.0, end_by=END_BY, terminating=True).reason == SIGTERM_REASON


def test_no_observation_yet_goes_on() -> None:
    assert decide(GUARD, [], now=100.0, end_by=END_BY).stop is False
