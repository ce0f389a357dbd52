"""The outage notebook ``outage.json``: what the watch step saw on every tick of the outage and how the outage was
judged, as typed data, and the only code that reads or writes it (through :mod:`chaosext.run.store`).

::

    {"observations": [{"t", "elapsed", "error_rate", "recent_error_rate", "requests", "recent_requests",
                       "fault_holds", "fault_detail", "services": {"<service>": {"state", "age", "valid", "forged"}}}],
     "alerts_seen": {"prometheus": {"name": first_seen_unix}, "alertmanager": {...}},
     "forgery_ticks": [{...}],                                       # the forgery judge's result of every watch tick
     "judgments": {"<check function>": {...}, ...}}                  # judge_outage / judge_drill: every check, once

The outage's window itself (start, end, why it ended) is on the run's timeline (``chaosext.run.record.Outage``): the
steady-state probes and the restore read it too. The watch step writes the ticks, ``judge_outage`` the judgments.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from chaosext.run.record import CheckResult, num, obj, objs, opt_num, text
from chaosext.run.store import read_json, write_json

__all__ = ["ServiceObservation", "Observation", "AlertsSeen", "Judgments", "Notebook", "NOTEBOOK_FILE",
           "load_notebook", "save_notebook", "edit_notebook"]

NOTEBOOK_FILE = "outage.json"


def _counts(value: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in obj(value).items() if isinstance(v, int) and not isinstance(v, bool)}


@dataclass
class ServiceObservation:
    """One service at one watch tick: its JWKS cache, the status each tenant's valid token got, and the forged
    requests of the tick (tried / refused / accepted / inconclusive)."""

    state: str = "unknown"
    #: seconds since the cache's last good JWKS fetch (None when the service does not say)
    age: float | None = None
    valid: dict[str, int] = field(default_factory=dict)
    forged: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: Any) -> ServiceObservation:
        d = obj(value)
        return cls(state=text(d.get("state")) or "unknown", age=opt_num(d.get("age")), valid=_counts(d.get("valid")),
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
        return cls(t=num(d.get("t")), elapsed=num(d.get("elapsed")), error_rate=num(d.get("error_rate")),
                   recent_error_rate=num(d.get("recent_error_rate")), requests=num(d.get("requests")),
                   recent_requests=num(d.get("recent_requests")),
                   fault_holds=holds if isinstance(holds, bool) else None, fault_detail=text(d.get("fault_detail")),
                   services={str(k): ServiceObservation.from_json(v) for k, v in obj(d.get("services")).items()})

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
        d = obj(value)
        return cls({str(k): num(v) for k, v in obj(d.get("prometheus")).items()},
                   {str(k): num(v) for k, v in obj(d.get("alertmanager")).items()})

    def to_json(self) -> dict[str, Any]:
        return {"prometheus": dict(self.prometheus), "alertmanager": dict(self.alertmanager)}


@dataclass
class Judgments:
    """What ``judge_outage`` (or ``judge_drill``) recorded after the outage: each check's result, by the name of its
    function."""

    results: dict[str, CheckResult] = field(default_factory=dict)

    def of(self, func: str) -> CheckResult | None:
        """The recorded result of check function ``func`` (None: not judged)."""
        return self.results.get(func)

    @classmethod
    def from_json(cls, value: Any) -> Judgments:
        return cls({str(k): dict(v) for k, v in obj(value).items() if isinstance(v, Mapping)})

    def to_json(self) -> dict[str, Any]:
        return dict(self.results)


@dataclass
class Notebook:
    """The outage notebook (see the module docstring for its JSON)."""

    observations: list[Observation] = field(default_factory=list)
    alerts_seen: AlertsSeen = field(default_factory=AlertsSeen)
    #: the forgery judge's result for each watch tick (``chaosext.auth.judge``), in tick order
    forgery_ticks: list[CheckResult] = field(default_factory=list)
    judgments: Judgments = field(default_factory=Judgments)

    def add_tick(self, observation: Observation, forgery: CheckResult | None = None,
                 alerts_prometheus: Iterable[str] = (), alerts_alertmanager: Iterable[str] = ()) -> None:
        """One watch tick: its observation, the forgery judge's result of its forged requests, the alerts seen."""
        self.observations.append(observation)
        if forgery is not None:
            self.forgery_ticks.append(forgery)
        self.alerts_seen.saw(observation.t, alerts_prometheus, alerts_alertmanager)

    def services_seen(self, state: str) -> set[str]:
        """Services the watch step saw with their cache in ``state`` on any tick."""
        return {svc for o in self.observations for svc, s in o.services.items() if s.state == state}

    def first_seen(self, state: str) -> dict[str, float]:
        """Per service: when the watch step first saw its cache in ``state``."""
        first: dict[str, float] = {}
        for o in self.observations:
            for service, s in o.services.items():
                if s.state == state:
                    first.setdefault(service, o.t)
        return first

    @classmethod
    def from_json(cls, value: Any) -> Notebook:
        d = obj(value)
        return cls(observations=[Observation.from_json(o) for o in objs(d.get("observations"))],
                   alerts_seen=AlertsSeen.from_json(d.get("alerts_seen")), forgery_ticks=objs(d.get("forgery_ticks")),
                   judgments=Judgments.from_json(d.get("judgments")))

    def to_json(self) -> dict[str, Any]:
        return {"observations": [o.to_json() for o in self.observations], "alerts_seen": self.alerts_seen.to_json(),
                "forgery_ticks": list(self.forgery_ticks), "judgments": self.judgments.to_json()}


def load_notebook(run_dir: str | os.PathLike[str] | None) -> Notebook:
    """The notebook of ``run_dir`` (empty when there is none, or outside a run)."""
    return Notebook.from_json(read_json(run_dir, NOTEBOOK_FILE)) if run_dir else Notebook()


def save_notebook(run_dir: str | os.PathLike[str], notebook: Notebook) -> None:
    """Write the notebook atomically, readable by its owner only."""
    write_json(run_dir, NOTEBOOK_FILE, notebook.to_json())


@contextmanager
def edit_notebook(run_dir: str | os.PathLike[str] | None) -> Iterator[Notebook]:
    """``with edit_notebook(d) as nb: ...``: read, change, write back (not when the block raises; nothing outside a
    run)."""
    notebook = load_notebook(run_dir)
    yield notebook
    if run_dir:
        save_notebook(run_dir, notebook)
