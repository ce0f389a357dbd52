"""When the watch ends the outage: a pure decision from the observations so far and a clock (no process, no I/O).

The watch asks :func:`decide` after every tick. In order:

1. SIGTERM received -> stop now (``interrupted (SIGTERM)``);
2. the **abort guard** -> stop early: the server-side error rate of every tick, unbroken, has been above
   ``ABORT_ERROR_RATE`` for at least ``ABORT_AFTER_SECONDS`` (from the first such tick to now). A tick that counted no
   request, or whose rate is at or below the threshold, breaks the run of ticks. A threshold of 1 or more can never be
   exceeded, so ``ABORT_ERROR_RATE`` > 1 switches the guard off (the expiry drill wants the errors);
3. the fault **lifted outside the run** -> stop: on the last ``LIFTED_TICKS`` ticks (not counting the first, when a
   fault may still be settling) the driver found the JWKS reachable from the target again (the panic button, another
   tool, a person, a broken driver): there is no outage left to watch, and ``outage-held`` judges it failed;
4. the planned end reached -> stop, reason '' (the outage ran its course);
5. else go on.

The watch only decides: the restore step that follows restores and records the reason.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chaosext.outage.notebook import Observation

__all__ = ["AbortGuard", "Decision", "decide", "lifted", "SIGTERM_REASON", "LIFTED_TICKS"]

SIGTERM_REASON = "interrupted (SIGTERM)"
#: consecutive ticks with the fault found lifted after which the watch ends the outage
LIFTED_TICKS = 2


@dataclass(frozen=True)
class AbortGuard:
    """``ABORT_ERROR_RATE`` (a fraction) and ``ABORT_AFTER_SECONDS``."""

    max_error_rate: float
    after_seconds: float

    def above(self, obs: Observation) -> bool:
        """The tick counted requests and its error rate was above the threshold."""
        return obs.recent_requests > 0 and obs.recent_error_rate > self.max_error_rate

    def above_since(self, observations: Sequence[Observation]) -> float | None:
        """Time of the first tick of the unbroken run of ticks above the threshold that ends with the last tick
        (None when the last tick is not above it)."""
        since = None
        for obs in reversed(observations):
            if not self.above(obs):
                break
            since = obs.t
        return since

    def reason(self, observations: Sequence[Observation], now: float) -> str:
        """'' while the guard holds; else why it aborts."""
        since = self.above_since(observations)
        if since is None or now - since < self.after_seconds:
            return ""
        return f"abort guard: error rate above {self.max_error_rate:.0%} for {now - since:.0f}s"


@dataclass(frozen=True)
class Decision:
    """Stop the watch or go on; ``reason`` is why it stops early ('' = the planned end, or go on)."""

    stop: bool
    reason: str = ""


def lifted(observations: Sequence[Observation]) -> str:
    """'' while the fault holds; else why the watch ends: the last LIFTED_TICKS ticks (after the first) found it
    lifted."""
    later = list(observations[1:])
    if len(later) < LIFTED_TICKS or any(o.fault_holds is not False for o in later[-LIFTED_TICKS:]):
        return ""
    return (f"the fault was lifted outside this run ({later[-1].fault_detail or 'the JWKS answers again'}): the "
            f"panic button, another tool or a person; nothing left to watch")


def decide(guard: AbortGuard, observations: Sequence[Observation], now: float, end_by: float,
           terminating: bool = False) -> Decision:
    """Whether the watch ends after the ticks in ``observations`` at time ``now`` (see the module docstring)."""
    if terminating:
        return Decision(True, SIGTERM_REASON)
    if reason := guard.reason(observations, now):
        return Decision(True, reason)
    if reason := lifted(observations):
        return Decision(True, reason)
    return Decision(now >= end_by)
