"""Limits on a fault's lifetime: the outage (``OUTAGE_SECONDS``), its cap (``MAX_OUTAGE_SECONDS``) and the deadline.

Two names, two meanings: the *outage* is how long the JWKS is meant to be unreachable (the watch step ends it and the
method restores), capped by ``MAX_OUTAGE_SECONDS`` (:func:`check_outage`); the fault's *deadline* is the outage plus a
margin small next to it (:func:`deadline_seconds` = ``OUTAGE_SECONDS + max(15, ceil(5 % of OUTAGE_SECONDS))``), after
which the kernel (iptables ``--datestop``) or the watchdog lifts the fault even when nothing else runs. A deadline is
never longer than :func:`max_deadline_seconds` of the cap.
"""
from __future__ import annotations

import math

from chaosext.core.errors import ConfigError

__all__ = ["MAX_OUTAGE_SECONDS", "MIN_MARGIN_SECONDS", "MARGIN_FRACTION", "MAX_K6_RATE", "deadline_seconds",
           "max_deadline_seconds", "check_outage", "k6_rate_problem"]

#: The default cap on OUTAGE_SECONDS (the fault's deadline adds its margin: :func:`max_deadline_seconds`).
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


def max_deadline_seconds(max_outage_seconds: int = MAX_OUTAGE_SECONDS) -> int:
    """The longest deadline a fault may have under the cap: the deadline of the longest allowed outage."""
    return deadline_seconds(max_outage_seconds)


def check_outage(outage_seconds: int, max_outage_seconds: int = MAX_OUTAGE_SECONDS) -> int:
    """The deadline of ``outage_seconds`` (:func:`deadline_seconds`) when the outage is within the cap, else
    ConfigError saying which OUTAGE_SECONDS or MAX_OUTAGE_SECONDS would do."""
    try:
        outage, cap = int(outage_seconds), int(max_outage_seconds)
    except (TypeError, ValueError):
        raise ConfigError(f"OUTAGE_SECONDS={outage_seconds!r} / MAX_OUTAGE_SECONDS={max_outage_seconds!r}: give "
                          f"whole seconds") from None
    if outage <= 0:
        raise ConfigError(f"OUTAGE_SECONDS={outage} must be > 0")
    if outage > cap:
        raise ConfigError(f"OUTAGE_SECONDS={outage} is above MAX_OUTAGE_SECONDS={cap}; use OUTAGE_SECONDS={cap} or "
                          f"less, or raise MAX_OUTAGE_SECONDS to {outage} (the fault's own deadline adds "
                          f"{deadline_seconds(outage) - outage} s to it)")
    return deadline_seconds(outage)
