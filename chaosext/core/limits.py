"""Limits on a fault's lifetime: the outage, its deadline margin and the cap (``MAX_OUTAGE_SECONDS``).

The deadline is the outage plus a margin that is small next to it: :func:`deadline_seconds` =
``OUTAGE_SECONDS + max(15, ceil(5 % of OUTAGE_SECONDS))``; :func:`check_deadline` refuses an outage whose deadline
exceeds the cap with the largest outage that fits. The fault's drivers and watchdog enforce the deadline.
"""
from __future__ import annotations

import math

from chaosext.core.errors import ConfigError

__all__ = ["MAX_OUTAGE_SECONDS", "MIN_MARGIN_SECONDS", "MARGIN_FRACTION", "MAX_K6_RATE", "deadline_seconds",
           "check_deadline", "k6_rate_problem"]

#: The default cap on a fault's whole lifetime (outage + margin), seconds.
MAX_OUTAGE_SECONDS = 3600
#: The deadline margin: max(MIN_MARGIN_SECONDS, ceil(MARGIN_FRACTION * outage)).
MIN_MARGIN_SECONDS = 15
MARGIN_FRACTION = 0.05
#: The most requests/s K6_RATE may ask for: ten times the load the tenant script is sized for (5,000/s), far above
#: what one k6 process drives; a larger number is a typo or a load test, not a chaos experiment.
MAX_K6_RATE = 50_000


def k6_rate_problem(rate: int) -> str:
    """'' when ``rate`` (K6_RATE, requests/s) is within (0, MAX_K6_RATE]; else what to set."""
    if rate <= 0:
        return f"K6_RATE={rate} must be a positive number of requests per second (default 200)"
    if rate > MAX_K6_RATE:
        return (f"K6_RATE={rate} is above the limit of {MAX_K6_RATE} requests/s (a chaos experiment's load, not a "
                f"load test); use {MAX_K6_RATE} or less (the tenant script is sized for 5000)")
    return ""


def deadline_seconds(outage_seconds: int) -> int:
    """The fault's deadline for an outage of ``outage_seconds``: the outage + max(15 s, ceil(5 %)).

    Small next to the outage (a 120 s outage ends at 135 s at the latest, a 3000 s one at 3150 s) yet long enough for
    the method to restore on its own first; the heartbeat covers a dead run much sooner."""
    outage = int(outage_seconds)
    return outage + max(MIN_MARGIN_SECONDS, math.ceil(outage * MARGIN_FRACTION))


def check_deadline(outage_seconds: int, max_outage_seconds: int = MAX_OUTAGE_SECONDS) -> int:
    """The deadline of ``outage_seconds`` (:func:`deadline_seconds`) if it fits the cap, else ConfigError saying the
    largest OUTAGE_SECONDS that fits and the MAX_OUTAGE_SECONDS this outage would need."""
    try:
        outage, cap = int(outage_seconds), int(max_outage_seconds)
    except (TypeError, ValueError):
        raise ConfigError(f"OUTAGE_SECONDS={outage_seconds!r} / MAX_OUTAGE_SECONDS={max_outage_seconds!r}: give "
                         f"whole seconds") from None
    if outage <= 0:
        raise ConfigError(f"OUTAGE_SECONDS={outage} must be > 0")
    deadline = deadline_seconds(outage)
    if deadline > cap:
        fits = max((o for o in range(cap, 0, -1) if deadline_seconds(o) <= cap), default=0)
        raise ConfigError(f"OUTAGE_SECONDS={outage} plus its safety margin of {deadline - outage} s gives a fault "
                         f"deadline of {deadline} s, above MAX_OUTAGE_SECONDS={cap}; use OUTAGE_SECONDS={fits} or "
                         f"less, or raise MAX_OUTAGE_SECONDS to {deadline}")
    return deadline
