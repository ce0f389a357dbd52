"""How an outage check judges: over the outage the run recorded, or it says why not (never a vacuous pass).

An *outage check* is a function ``check(judging) -> CheckResult`` of :mod:`chaosext.outage.checks` or
:mod:`chaosext.outage.drill`; ``judge_outage`` runs each once after the outage and keeps the results in the notebook.
Where an experiment's hypothesis names a check itself (the drill's ``fails-closed-after-expiry``), its probe returns
:func:`recorded_or_judged`: before any outage a live pre-flight answer (or :func:`not_judged`), afterwards the result
``judge_outage`` recorded.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chaosext.core.config import ExperimentConfig
from chaosext.outage.notebook import Notebook, load_notebook
from chaosext.run.context import RunContext
from chaosext.run.record import CheckResult, Run

__all__ = ["Judging", "Check", "judging_of", "recorded_or_judged", "not_judged"]


def not_judged(what: str) -> CheckResult:
    """What an outage check returns when this run recorded no outage: never a vacuous pass."""
    return {"phase": "no-outage", "ok": False,
            "error": f"{what} is judged over the outage window, and this run recorded no outage"}


@dataclass(frozen=True)
class Judging:
    """What an outage check judges: the run's context, its record, the outage notebook and the outage window."""

    ctx: RunContext
    run: Run
    notebook: Notebook
    start: float
    end: float

    @property
    def cfg(self) -> ExperimentConfig:
        """The run's settings."""
        return self.ctx.cfg

    @property
    def window(self) -> tuple[float, float]:
        """(start, end) unix seconds of the outage."""
        return self.start, self.end


#: an outage check
Check = Callable[[Judging], CheckResult]


def judging_of(ctx: RunContext) -> Judging | None:
    """The run's recorded outage to judge (None when it recorded none)."""
    run = ctx.record()
    window = run.outage_window()
    if window is None:
        return None
    return Judging(ctx, run, load_notebook(ctx.run_dir), window[0], window[1])


def recorded_or_judged(ctx: RunContext, check: Check, before: Callable[[RunContext], CheckResult] | None = None,
                       what: str = "") -> CheckResult:
    """An outage check as a hypothesis probe sees it: before any outage ``before(ctx)`` (a live pre-flight check),
    else :func:`not_judged`; after the outage the result ``judge_outage`` recorded for it, else judged now."""
    judging = judging_of(ctx)
    if judging is None:
        return before(ctx) if before is not None else not_judged(what or check.__name__)
    ended = judging.run.outage is not None and judging.run.outage.end is not None
    if ended and (done := judging.notebook.judgments.of(check.__name__)) is not None:
        return done
    return check(judging)
