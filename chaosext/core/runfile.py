"""The run file: what one experiment run recorded, as typed data, and the only code that reads or writes it.

Every run has its own directory ``<run base>/<run id>/`` (mode 0700; run base = ``$CHAOSEXT_RUN_DIR``, else
``<lab state dir>/run``, else ``.chaosext-run``) holding ``run.json`` (mode 0600, replaced atomically on every write)::

    {"run_id": "ab12cd34", "created_at": 1764450000.0, "pid": 1234, "run_dir": "/abs/path",
     "k6": {"run_id": "...", "address": "127.0.0.1:6565", ...},    # the run's own k6 (started by the safety control)
     "baseline": {"judged_at": ..., "window_seconds": 60, "requests": 1234.0},   # the live window before the fault
     "fault": null | {"applied": false, "error": "..."},            # set when block_jwks_egress failed
     "outage": null | {"start": ..., "end": null | ..., "aborted": false, "reason": "", "fault_run_id": "ab12cd34",
                       "k6": {"start": {"t", "http_reqs", "http_req_failed_rate"}, "end": {...}}},
     "observations": [{"t", "elapsed", "error_rate", "recent_error_rate", "requests", "recent_requests",
                       "fault_holds", "fault_detail", "services": {"policy": {"state", "age", "valid", "forged"}}}],
     "alerts_seen": {"prometheus": {"name": first_seen_unix}, "alertmanager": {...}},
     "forgery_ticks": [{...}],                                       # the forgery judge's result of every watch tick
     "judgments": {"server_error_rate": {...}, ...},                # judge_outage: every outage check, run once
     "recovered_at": null | ...}                                    # every cache fresh again after the restore

:class:`Run` and the classes it holds are that file; :func:`load_run`, :func:`save_run`, :func:`new_run` and
:func:`edit_run` are the only ways to read or write it. Tokens are never written here (they stay in the memory of the
``chaos`` process). ``outage`` null = no fault yet. A file written by an older chaosext (missing keys) loads with
defaults; unknown keys are dropped on the next write.

The run base, the run directory and the run file are handled root-safe (:mod:`chaosext.core.safefs`): the
directories must belong to the user chaosext runs as and be writable by nobody else (else ``UnsafePath``), the file is
written through a temp file with a random name and read without following a symlink, and the run id must be a run id
(:mod:`chaosext.core.ids`) before it becomes a path.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosext.core import ids, safefs

__all__ = [
    "CheckResult", "K6Info", "Baseline", "FaultInfo", "K6Snapshot", "Outage", "ServiceObservation", "Observation",
    "AlertsSeen", "Judgments", "Run",
    "run_path", "run_directory", "new_run_id", "new_run", "load_run", "save_run", "edit_run",
]

#: what a probe returns to Chaos Toolkit (and what the run file keeps of a judged check): a JSON object
CheckResult = dict[str, Any]


# ------------------------------------------------------------------------------------------------ tolerant readers
def _float(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _opt_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _obj(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _objs(value: Any) -> list[dict[str, Any]]:
    return [dict(v) for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _counts(value: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in _obj(value).items() if isinstance(v, int) and not isinstance(v, bool)}


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
        return cls(run_id=_str(d.get("run_id")), owner_run_id=_str(d.get("owner_run_id")),
                   pid=int(_float(d.get("pid"))), address=_str(d.get("address")),
                   summary_file=_str(d.get("summary_file")), log_file=_str(d.get("log_file")),
                   run_dir=_str(d.get("run_dir")), rate=int(_float(d.get("rate"))), duration=_str(d.get("duration")))

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
        return cls(_float(d.get("judged_at")), _float(d.get("window_seconds")), _float(d.get("requests")))

    def to_json(self) -> dict[str, Any]:
        return {"judged_at": self.judged_at, "window_seconds": self.window_seconds, "requests": self.requests}


@dataclass
class FaultInfo:
    """What became of the fault: recorded when ``block_jwks_egress`` failed (applied False and its error)."""

    applied: bool = True
    error: str = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FaultInfo:
        return cls(applied=d.get("applied", True) is not False, error=_str(d.get("error")))

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
        d = _obj(value)
        if not d:
            return None
        return cls(_float(d.get("t")), _opt_float(d.get("http_reqs")), _opt_float(d.get("http_req_failed_rate")))

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
        d = _obj(value)
        if not _opt_float(d.get("start")):
            return None
        k6 = _obj(d.get("k6"))
        return cls(start=_float(d.get("start")), end=_opt_float(d.get("end")) or None,
                   aborted=bool(d.get("aborted")), reason=_str(d.get("reason")),
                   fault_run_id=_str(d.get("fault_run_id")), k6_start=K6Snapshot.from_json(k6.get("start")),
                   k6_end=K6Snapshot.from_json(k6.get("end")))

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "aborted": self.aborted, "reason": self.reason,
                "fault_run_id": self.fault_run_id,
                "k6": {"start": self.k6_start.to_json() if self.k6_start else {},
                       "end": self.k6_end.to_json() if self.k6_end else {}}}


@dataclass
class ServiceObservation:
    """One service at one watch tick: its JWKS cache (``/healthz``), the status each tenant's valid token got, and
    the forged requests of the tick (tried / refused / accepted / inconclusive)."""

    state: str = "unknown"
    #: seconds since the cache's last good JWKS fetch (None when the service does not say)
    age: float | None = None
    valid: dict[str, int] = field(default_factory=dict)
    forged: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: Any) -> ServiceObservation:
        d = _obj(value)
        return cls(state=_str(d.get("state")) or "unknown", age=_opt_float(d.get("age")), valid=_counts(d.get("valid")),
                   forged=_counts(d.get("forged")))

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "age": self.age, "valid": dict(self.valid), "forged": dict(self.forged)}


@dataclass
class Observation:
    """One watch tick."""

    t: float
    #: seconds since the outage started
    elapsed: float
    #: server-side error rate since the outage started, and over the last tick (Prometheus counters)
    error_rate: float = 0.0
    recent_error_rate: float = 0.0
    #: requests counted since the outage started, and over the last tick
    requests: float = 0.0
    recent_requests: float = 0.0
    #: whether the fault still made the JWKS unreachable from the target (None: not checked)
    fault_holds: bool | None = None
    fault_detail: str = ""
    services: dict[str, ServiceObservation] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Observation:
        holds = d.get("fault_holds")
        return cls(t=_float(d.get("t")), elapsed=_float(d.get("elapsed")), error_rate=_float(d.get("error_rate")),
                   recent_error_rate=_float(d.get("recent_error_rate")), requests=_float(d.get("requests")),
                   recent_requests=_float(d.get("recent_requests")),
                   fault_holds=holds if isinstance(holds, bool) else None, fault_detail=_str(d.get("fault_detail")),
                   services={str(k): ServiceObservation.from_json(v) for k, v in _obj(d.get("services")).items()})

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "elapsed": self.elapsed, "error_rate": self.error_rate,
                "recent_error_rate": self.recent_error_rate, "requests": self.requests,
                "recent_requests": self.recent_requests, "fault_holds": self.fault_holds,
                "fault_detail": self.fault_detail, "services": {k: s.to_json() for k, s in self.services.items()}}


@dataclass
class AlertsSeen:
    """Expiry alerts the watch saw firing (Prometheus) or active (Alertmanager): name -> first seen (unix s)."""

    prometheus: dict[str, float] = field(default_factory=dict)
    alertmanager: dict[str, float] = field(default_factory=dict)

    def saw(self, t: float, prometheus: Iterable[str] = (), alertmanager: Iterable[str] = ()) -> None:
        """Note the names seen at ``t`` (a name keeps its first time)."""
        for name in prometheus:
            self.prometheus.setdefault(name, t)
        for name in alertmanager:
            self.alertmanager.setdefault(name, t)

    @classmethod
    def from_json(cls, value: Any) -> AlertsSeen:
        d = _obj(value)
        return cls({str(k): _float(v) for k, v in _obj(d.get("prometheus")).items()},
                   {str(k): _float(v) for k, v in _obj(d.get("alertmanager")).items()})

    def to_json(self) -> dict[str, Any]:
        return {"prometheus": dict(self.prometheus), "alertmanager": dict(self.alertmanager)}


@dataclass
class Judgments:
    """What ``judge_outage`` (or ``judge_drill``) recorded after the outage: each outage check's result, by the name
    of its probe function. The probes return these instead of judging again."""

    results: dict[str, CheckResult] = field(default_factory=dict)

    def of(self, func: str) -> CheckResult | None:
        """The recorded result of probe function ``func`` (None: not judged)."""
        return self.results.get(func)

    @classmethod
    def from_json(cls, value: Any) -> Judgments:
        return cls({str(k): dict(v) for k, v in _obj(value).items() if isinstance(v, Mapping)})

    def to_json(self) -> dict[str, Any]:
        return dict(self.results)


@dataclass
class Run:
    """One experiment run's file (see the module docstring for its JSON)."""

    run_id: str = ""
    created_at: float = 0.0
    pid: int = 0
    run_dir: str = ""
    k6: K6Info | None = None
    baseline: Baseline | None = None
    fault: FaultInfo | None = None
    outage: Outage | None = None
    observations: list[Observation] = field(default_factory=list)
    alerts_seen: AlertsSeen = field(default_factory=AlertsSeen)
    #: the forgery judge's result for each watch tick (``chaosext.auth.judge``), in tick order
    forgery_ticks: list[CheckResult] = field(default_factory=list)
    judgments: Judgments = field(default_factory=Judgments)
    #: when every service's cache was fresh again after the restore (the recovery's error-rate window starts here)
    recovered_at: float | None = None

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

    def judged(self, func: str) -> CheckResult | None:
        """The result judge_outage recorded for probe function ``func`` after the outage (None if not judged)."""
        if self.outage is None or self.outage.end is None:
            return None
        return self.judgments.of(func)

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

    # -------------------------------------------------------------------------------- recording the outage
    def begin_outage(self, start: float, fault_run_id: str, k6_start: K6Snapshot | None) -> None:
        """The outage starts now: a fresh window, no observation, no alert seen, no forgery tick, no judgment."""
        self.outage = Outage(start=start, fault_run_id=fault_run_id, k6_start=k6_start)
        self.observations, self.alerts_seen, self.forgery_ticks = [], AlertsSeen(), []
        self.judgments = Judgments()

    def add_tick(self, observation: Observation, forgery: CheckResult | None = None,
                 alerts_prometheus: Iterable[str] = (), alerts_alertmanager: Iterable[str] = ()) -> None:
        """One watch tick: its observation, the forgery judge's result of its forged requests, the alerts seen."""
        self.observations.append(observation)
        if forgery is not None:
            self.forgery_ticks.append(forgery)
        self.alerts_seen.saw(observation.t, alerts_prometheus, alerts_alertmanager)

    def end_outage(self, end: float, reason: str, k6_end: K6Snapshot | None) -> None:
        """The outage ended at ``end``: ``reason`` says why early ('' = the planned end)."""
        if self.outage is None:
            raise ValueError("end_outage before begin_outage")
        self.outage.end, self.outage.reason, self.outage.aborted = end, reason, bool(reason)
        self.outage.k6_end = k6_end

    # -------------------------------------------------------------------------------- JSON
    @classmethod
    def from_json(cls, value: Any) -> Run:
        d = _obj(value)
        k6, baseline, fault = _obj(d.get("k6")), _obj(d.get("baseline")), _obj(d.get("fault"))
        return cls(run_id=_str(d.get("run_id")), created_at=_float(d.get("created_at")), pid=int(_float(d.get("pid"))),
                   run_dir=_str(d.get("run_dir")), k6=K6Info.from_json(k6) if k6 else None,
                   baseline=Baseline.from_json(baseline) if baseline.get("judged_at") else None,
                   fault=FaultInfo.from_json(fault) if fault else None, outage=Outage.from_json(d.get("outage")),
                   observations=[Observation.from_json(o) for o in _objs(d.get("observations"))],
                   alerts_seen=AlertsSeen.from_json(d.get("alerts_seen")), forgery_ticks=_objs(d.get("forgery_ticks")),
                   judgments=Judgments.from_json(d.get("judgments")), recovered_at=_opt_float(d.get("recovered_at")))

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "created_at": self.created_at, "pid": self.pid, "run_dir": self.run_dir,
                "k6": self.k6.to_json() if self.k6 else None,
                "baseline": self.baseline.to_json() if self.baseline else None,
                "fault": self.fault.to_json() if self.fault else None,
                "outage": self.outage.to_json() if self.outage else None,
                "observations": [o.to_json() for o in self.observations], "alerts_seen": self.alerts_seen.to_json(),
                "forgery_ticks": list(self.forgery_ticks), "judgments": self.judgments.to_json(),
                "recovered_at": self.recovered_at}


# ------------------------------------------------------------------------------------------------ the file
def run_path(run_dir: str) -> Path:
    """Path of the run file in ``run_dir``."""
    return Path(run_dir) / "run.json"


def run_directory(run_base: str, run_id: str) -> Path:
    """``<run base>/<run id>`` (ConfigError unless ``run_id`` is a run id: it never becomes ``../x``)."""
    return Path(run_base) / ids.check_run_id(run_id)


def new_run_id() -> str:
    """A fresh run id (8 hex digits)."""
    return ids.new_run_id()


def load_run(run_dir: str) -> Run:
    """The run file of ``run_dir`` (an empty :class:`Run` when there is none or it is not JSON). A run file that is
    a symlink, another user's or writable by others raises :class:`~chaosext.core.safefs.UnsafePath`."""
    try:
        return Run.from_json(json.loads(safefs.read_text(run_path(run_dir))))
    except safefs.UnsafePath:
        raise
    except (OSError, ValueError):
        return Run()


def save_run(run_dir: str, run: Run) -> None:
    """Write the run file (0600) atomically (a temp file with a random name + rename) in its 0700 directory."""
    safefs.write_file(run_path(run_dir), json.dumps(run.to_json(), indent=1, sort_keys=True))


def new_run(run_base: str, run_id: str = "") -> Run:
    """Start a new run: its own 0700 directory (it must not exist yet) and run file."""
    run_id = ids.check_run_id(run_id or new_run_id())
    with safefs.open_dir(run_base, create=True) as base:
        os.mkdir(run_id, 0o700, dir_fd=base.fd)  # FileExistsError: never reuse another run's directory
        base.subdir(run_id).close()  # mode 0700 whatever the umask, and checked
        directory = Path(base.shown(run_id))
    run = Run(run_id=run_id, created_at=time.time(), pid=os.getpid(), run_dir=str(directory))
    save_run(str(directory), run)
    return run


@contextmanager
def edit_run(run_dir: str) -> Iterator[Run]:
    """``with edit_run(d) as run: run.x = ...``: the run file is read, changed and written back atomically (not
    written when the block raises)."""
    run = load_run(run_dir)
    yield run
    save_run(run_dir, run)
