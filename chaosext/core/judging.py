"""How probes judge: from the outage a run recorded, or say why not; live checks retried until a deadline.

An *outage check* judges what the watch step recorded during the outage (after the restore a live check would prove
nothing). Every one of them opens the same way — read the run file, refuse to judge before an outage exists (never a
vacuous pass), return the result ``judge_outage`` already recorded — so that opening is :func:`outage_check`, once::

    @activity
    @outage_check("the server-side error rate")
    def server_error_rate(judging: Judging) -> CheckResult:
        start, end = judging.window
        ...

The decorated function becomes a Chaos Toolkit probe ``server_error_rate(configuration=None, secrets=None)`` with the
same name and docstring. (No ``from __future__ import annotations`` here: Chaos Toolkit's discovery reads the probe's
annotations at run time.)
"""
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from chaoslib.types import Configuration, Secrets

from chaosext.core.config import ExperimentConfig, load_config
from chaosext.core.runfile import CheckResult, Run, load_run

__all__ = ["Judging", "OutageProbe", "outage_check", "not_judged", "retry_until"]

T = TypeVar("T")


def not_judged(what: str) -> CheckResult:
    """What an outage check returns when this run recorded no outage: never a vacuous pass."""
    return {"phase": "no-outage", "ok": False,
            "error": f"{what} is judged over the outage window, and this run recorded no outage"}


def retry_until(check: Callable[[], T], done: Callable[[T], bool], deadline: float, interval: float) -> T:
    """Run ``check`` until ``done(result)`` or ``deadline`` (unix seconds) has passed; the last result. Runs once
    when the deadline is already over."""
    while True:
        result = check()
        if done(result) or time.time() >= deadline:
            return result
        time.sleep(interval)


@dataclass(frozen=True)
class Judging:
    """What an outage check judges: this run's settings, its run file and the recorded outage window."""

    cfg: ExperimentConfig
    run: Run
    start: float
    end: float
    #: as Chaos Toolkit passed them (for checks that call other probes)
    configuration: Configuration = None
    secrets: Secrets = None

    @property
    def window(self) -> tuple[float, float]:
        """(start, end) unix seconds of the outage."""
        return self.start, self.end


class OutageProbe(Protocol):
    """A Chaos Toolkit probe made by :func:`outage_check`."""

    __name__: str

    def __call__(self, configuration: Configuration = None, secrets: Secrets = None) -> CheckResult: ...


def outage_check(what: str = "", *, before: Callable[[ExperimentConfig], CheckResult] | None = None
                 ) -> Callable[[Callable[[Judging], CheckResult]], OutageProbe]:
    """Make ``check(judging)`` a probe that judges the recorded outage, or says why not.

    Before any outage the probe returns ``before(cfg)`` when given (e.g. a live pre-flight check), else
    :func:`not_judged` naming ``what``. After ``judge_outage`` it returns the recorded result of the function's name
    instead of judging again (``Run.judged``).
    """

    def decorate(check: Callable[[Judging], CheckResult]) -> OutageProbe:
        def probe(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
            cfg = load_config(configuration)
            run = load_run(cfg.run_dir)
            window = run.outage_window()
            if window is None:
                return before(cfg) if before is not None else not_judged(what)
            if (done := run.judged(check.__name__)) is not None:
                return done
            return check(Judging(cfg, run, window[0], window[1], configuration, secrets))

        # name and docstring of the check, but not functools.wraps: its __wrapped__ would make Chaos Toolkit see the
        # check's signature (judging) instead of the probe's (configuration, secrets)
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(probe, attr, getattr(check, attr))
        return probe

    return decorate
