"""The run record ``run.json``: one experiment run's timeline, as typed data, and the only code that reads or writes
it (through :mod:`chaosext.run.store`).

::

    {"run_id": "ab12cd34", "created_at": 1764450000.0, "pid": 1234, "run_dir": "/abs/path",
     "config": {...},                                               # the run's settings, resolved once (no secret)
     "k6": {"run_id": "...", "address": "127.0.0.1:6565", ...},    # the run's own k6 (started by the safety control)
     "baseline": {"judged_at": ..., "window_seconds": 60, "requests": 1234.0},   # the live window before the fault
     "fault": null | {"applied": false, "error": "..."},            # set when block_jwks_egress failed
     "outage": null | {"start": ..., "end": null | ..., "aborted": false, "reason": "", "fault_run_id": "ab12cd34",
                       "k6": {"start": {"t", "http_reqs", "http_req_failed_rate"}, "end": {...}}},
     "recovered_at": null | ...,                                    # every cache fresh again after the restore
     "closed": null | {"at": ..., "fault_restored": true, "error": "", "k6_stopped": true},   # the control's last word
     "journal_record": null | {"view": {...}, "hmac": "hex"}}       # the journal's judged view, sealed at the end
                                                                    # (chaosext.core.journal_record)

Who writes what: the safety control (the run, its config, k6, the baseline, a failed fault), the watch step (the
outage window), the recovery probe ``jwks-caches-fresh`` (``recovered_at``), and the safety control again at the very
end (``closed``: how its always-restore went, which the next run's cool-down reads; then ``journal_record``: the
journal's judged view, the journal's copy of ``closed`` included, sealed with the run's key, which ``chaosext
verdict`` checks a journal against). What the outage looked like tick by tick
and how it was judged is the outage's own notebook (``outage.json``, ``chaosext.outage.notebook``). Tokens are never
written here. A file of an older chaosext (missing keys) loads with defaults; unknown keys are dropped on the next
write.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosext.run.store import make_run_directory, read_json, write_json

__all__ = ["CheckResult", "K6Info", "Baseline", "FaultInfo", "K6Snapshot", "Outage", "Closed", "Run", "RUN_FILE",
           "load_run", "save_run", "new_run", "edit_run", "num", "opt_num", "text", "obj", "objs"]

#: what a probe returns to Chaos Toolkit (and what a run keeps of a judged check): a JSON object
CheckResult = dict[str, Any]
RUN_FILE = "run.json"


# ------------------------------------------------------------------------------------------------ tolerant readers
def num(value: Any, default: float = 0.0) -> float:
    """``value`` as a float when it is a JSON number, else ``default``."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def opt_num(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number, else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def text(value: Any) -> str:
    """``value`` when it is a string, else ''."""
    return value if isinstance(value, str) else ""


def obj(value: Any) -> dict[str, Any]:
    """``value`` as a dict when it is a JSON object, else {}."""
    return dict(value) if isinstance(value, Mapping) else {}


def objs(value: Any) -> list[dict[str, Any]]:
    """The JSON objects of a list (anything else dropped)."""
    return [dict(v) for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


# ------------------------------------------------------------------------------------------------ the model
@dataclass
class K6Info:
    """The run's own k6, as ``start_k6`` returned it (the safety control starts it)."""

    run_id: str = ""
    owner_run_id: str = ""
    pid: int = 0
    address: str = ""
    summary_file: str = ""
    log_file: str = ""
    run_dir: str = ""
    rate: int = 0
    duration: str = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> K6Info:
        return cls(run_id=text(d.get("run_id")), owner_run_id=text(d.get("owner_run_id")),
                   pid=int(num(d.get("pid"))), address=text(d.get("address")),
                   summary_file=text(d.get("summary_file")), log_file=text(d.get("log_file")),
                   run_dir=text(d.get("run_dir")), rate=int(num(d.get("rate"))), duration=text(d.get("duration")))

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "owner_run_id": self.owner_run_id, "pid": self.pid, "address": self.address,
                "summary_file": self.summary_file, "log_file": self.log_file, "run_dir": self.run_dir,
                "rate": self.rate, "duration": self.duration}


@dataclass
class Baseline:
    """The live baseline window the safety control warmed up before the fault."""

    judged_at: float
    window_seconds: float
    requests: float

    @property
    def window(self) -> tuple[float, float]:
        """(start, end) unix seconds."""
        return self.judged_at - self.window_seconds, self.judged_at

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Baseline:
        return cls(num(d.get("judged_at")), num(d.get("window_seconds")), num(d.get("requests")))

    def to_json(self) -> dict[str, Any]:
        return {"judged_at": self.judged_at, "window_seconds": self.window_seconds, "requests": self.requests}


@dataclass
class FaultInfo:
    """What became of the fault: recorded when ``block_jwks_egress`` failed (applied False and its error)."""

    applied: bool = True
    error: str = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FaultInfo:
        return cls(applied=d.get("applied", True) is not False, error=text(d.get("error")))

    def to_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "error": self.error}


@dataclass
class K6Snapshot:
    """k6's cumulative counters at one moment (its REST API)."""

    t: float
    http_reqs: float | None
    http_req_failed_rate: float | None

    @classmethod
    def from_json(cls, value: Any) -> K6Snapshot | None:
        d = obj(value)
        if not d:
            return None
        return cls(num(d.get("t")), opt_num(d.get("http_reqs")), opt_num(d.get("http_req_failed_rate")))

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "http_reqs": self.http_reqs, "http_req_failed_rate": self.http_req_failed_rate}


@dataclass
class Outage:
    """The outage window the watch step recorded: ``end`` is None while it runs."""

    start: float
    end: float | None = None
    aborted: bool = False
    #: why it ended early ('' = the planned end): the abort guard's reason, or an interruption
    reason: str = ""
    fault_run_id: str = ""
    k6_start: K6Snapshot | None = None
    k6_end: K6Snapshot | None = None

    def window(self, now: float | None = None) -> tuple[float, float]:
        """(start, end) unix seconds; end is ``now`` (default: the time) while the outage runs."""
        return self.start, self.end if self.end is not None else (time.time() if now is None else now)

    @classmethod
    def from_json(cls, value: Any) -> Outage | None:
        d = obj(value)
        if not opt_num(d.get("start")):
            return None
        k6 = obj(d.get("k6"))
        return cls(start=num(d.get("start")), end=opt_num(d.get("end")) or None,
                   aborted=bool(d.get("aborted")), reason=text(d.get("reason")),
                   fault_run_id=text(d.get("fault_run_id")), k6_start=K6Snapshot.from_json(k6.get("start")),
                   k6_end=K6Snapshot.from_json(k6.get("end")))

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "aborted": self.aborted, "reason": self.reason,
                "fault_run_id": self.fault_run_id,
                "k6": {"start": self.k6_start.to_json() if self.k6_start else {},
                       "end": self.k6_end.to_json() if self.k6_end else {}}}


@dataclass
class Closed:
    """How the safety control closed the run: its always-restore of the run's fault and stop of its k6 (the truth
    when the method's own restore never ran: an interruption, the panic button)."""

    at: float
    fault_restored: bool
    error: str = ""
    k6_stopped: bool = True

    @classmethod
    def from_json(cls, value: Any) -> Closed | None:
        d = obj(value)
        if not opt_num(d.get("at")):
            return None
        return cls(num(d.get("at")), d.get("fault_restored") is True, text(d.get("error")),
                   d.get("k6_stopped") is not False)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "fault_restored": self.fault_restored, "error": self.error,
                "k6_stopped": self.k6_stopped}


@dataclass
class Run:
    """One experiment run's record (see the module docstring for its JSON)."""

    run_id: str = ""
    created_at: float = 0.0
    pid: int = 0
    run_dir: str = ""
    #: the run's settings as the safety control resolved them, once (``ExperimentConfig.to_json``; no secret)
    config: dict[str, Any] = field(default_factory=dict)
    k6: K6Info | None = None
    baseline: Baseline | None = None
    fault: FaultInfo | None = None
    outage: Outage | None = None
    #: when every service's cache was fresh again after the restore (the recovery's error-rate window starts here)
    recovered_at: float | None = None
    #: the safety control's always-restore at the end of the run
    closed: Closed | None = None
    #: the journal's judged view and its HMAC, kept by the safety control at the end (chaosext.core.journal_record)
    journal_record: dict[str, Any] | None = None

    # -------------------------------------------------------------------------------- reading
    @property
    def phase(self) -> str:
        """``baseline`` (no outage yet), ``outage`` (running) or ``recovery`` (the outage ended)."""
        if self.outage is None:
            return "baseline"
        return "recovery" if self.outage.end is not None else "outage"

    def outage_window(self, now: float | None = None) -> tuple[float, float] | None:
        """(start, end) unix seconds of the recorded outage; end is now while it runs; None before it."""
        return self.outage.window(now) if self.outage is not None else None

    def recovery_deadline(self, recovery_seconds: float) -> float:
        """Until when a recovery check may retry: ``recovery_seconds`` after the restore (the outage's end); 0.0
        outside the recovery phase, so baseline checks run once."""
        if self.outage is None or self.outage.end is None:
            return 0.0
        return self.outage.end + recovery_seconds

    def recovery_start(self, now: float | None = None) -> float:
        """Where the recovery window starts: every cache fresh again, else the restore (the outage's end)."""
        if self.recovered_at is not None:
            return self.recovered_at
        if self.outage is not None and self.outage.end is not None:
            return self.outage.end
        return time.time() if now is None else now

    # -------------------------------------------------------------------------------- recording the outage window
    def begin_outage(self, start: float, fault_run_id: str, k6_start: K6Snapshot | None) -> None:
        """The outage starts now: a fresh window."""
        self.outage = Outage(start=start, fault_run_id=fault_run_id, k6_start=k6_start)
        self.recovered_at = None

    def end_outage(self, end: float, reason: str, k6_end: K6Snapshot | None) -> None:
        """The outage ended at ``end``: ``reason`` says why early ('' = the planned end)."""
        if self.outage is None:
            raise ValueError("end_outage before begin_outage")
        self.outage.end, self.outage.reason, self.outage.aborted = end, reason, bool(reason)
        self.outage.k6_end = k6_end

    # -------------------------------------------------------------------------------- JSON
    @classmethod
    def from_json(cls, value: Any) -> Run:
        d = obj(value)
        k6, baseline, fault = obj(d.get("k6")), obj(d.get("baseline")), obj(d.get("fault"))
        return cls(run_id=text(d.get("run_id")), created_at=num(d.get("created_at")), pid=int(num(d.get("pid"))),
                   run_dir=text(d.get("run_dir")), config=obj(d.get("config")),
                   k6=K6Info.from_json(k6) if k6 else None,
                   baseline=Baseline.from_json(baseline) if baseline.get("judged_at") else None,
                   fault=FaultInfo.from_json(fault) if fault else None, outage=Outage.from_json(d.get("outage")),
                   recovered_at=opt_num(d.get("recovered_at")), closed=Closed.from_json(d.get("closed")),
                   journal_record=obj(d.get("journal_record")) or None)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "created_at": self.created_at, "pid": self.pid, "run_dir": self.run_dir,
                "config": dict(self.config),
                "k6": self.k6.to_json() if self.k6 else None,
                "baseline": self.baseline.to_json() if self.baseline else None,
                "fault": self.fault.to_json() if self.fault else None,
                "outage": self.outage.to_json() if self.outage else None,
                "recovered_at": self.recovered_at, "closed": self.closed.to_json() if self.closed else None,
                "journal_record": self.journal_record}


# ------------------------------------------------------------------------------------------------ the file
def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """The run record of ``run_dir`` (an empty :class:`Run` when there is none or it is unreadable)."""
    return Run.from_json(read_json(run_dir, RUN_FILE))


def save_run(run_dir: str | os.PathLike[str], run: Run) -> None:
    """Write the run record atomically, readable by its owner only."""
    write_json(run_dir, RUN_FILE, run.to_json())


def new_run(run_base: str | os.PathLike[str], run_id: str, config: Mapping[str, Any] | None = None) -> Run:
    """Start a new run: its own 0700 directory and record, with the run's resolved settings."""
    directory: Path = make_run_directory(run_base, run_id)
    run = Run(run_id=run_id, created_at=time.time(), pid=os.getpid(), run_dir=str(directory),
              config=dict(config or {}))
    save_run(directory, run)
    return run


@contextmanager
def edit_run(run_dir: str | os.PathLike[str]) -> Iterator[Run]:
    """``with edit_run(d) as run: run.x = ...``: the record is read, changed and written back atomically (not
    written when the block raises)."""
    run = load_run(run_dir)
    yield run
    save_run(run_dir, run)
