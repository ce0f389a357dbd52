"""The watch step's loop with its readings faked and a fake clock (no lab, no fault, no sleeping): what it records
(the outage window in the run record, one observation per tick in the outage notebook), when the abort guard ends it,
and how the outage checks then judge what it recorded."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaosext.egress.base import FaultSpec
from chaosext.metrics import measure
from chaosext.outage import watch
from chaosext.outage.checks import outage_held
from chaosext.outage.judging import judging_of
from chaosext.outage.notebook import Judgments, ServiceObservation, edit_notebook, load_notebook
from chaosext.run.context import run_context
from chaosext.run.record import load_run
from tests.jsonstub import Handler, JsonStub
from tests.promutil import raw
from tests.runutil import RUN_ID, run_dir, start_run

SPEC = FaultSpec(jwks_url="http://127.0.0.2:8440/.well-known/jwks.json", host="127.0.0.2", port=8440,
                 addresses=("127.0.0.2",), via="iptables", target="local", mode="drop", duration_seconds=60,
                 run_id=RUN_ID)


class FakeClock:
    """``time.time`` and ``time.sleep`` for the watch module: sleeping moves the clock, instantly."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class Driver:
    """verify() says blocked, except on the ticks listed in ``lifted``."""

    def __init__(self, lifted: set[int]) -> None:
        self.lifted, self.calls = lifted, 0

    def verify(self, spec: FaultSpec) -> dict[str, Any]:
        self.calls += 1
        return {"blocked": self.calls - 1 not in self.lifted}


def _fake_world(monkeypatch: pytest.MonkeyPatch, error_share: float, lifted: frozenset[int] = frozenset()) -> None:
    """Every tick: 100 more requests, ``error_share`` of them errors; caches stale; alerts never fire."""
    monkeypatch.setattr(watch, "time", FakeClock())
    monkeypatch.setattr(watch, "run_fault", lambda ctx: SPEC if ctx.run_id == RUN_ID else None)
    monkeypatch.setattr(watch, "build_driver", lambda via, options, secrets=None: Driver(set(lifted)))
    monkeypatch.setattr(watch, "ensure_tokens", lambda ctx: {"t01": "not-a-real-token"})
    monkeypatch.setattr(watch, "forgery_plan", lambda ctx: None)
    monkeypatch.setattr(watch, "k6_snapshot", lambda address: None)
    monkeypatch.setattr(watch, "firing_now", lambda ctx: (set(), set()))
    monkeypatch.setattr(watch, "error_counts_between", lambda ctx, start, end: (error_share * 100, 100.0))
    monkeypatch.setattr(watch, "observe_services", lambda ctx, tokens, forged, tick, start: (
        {"policy": ServiceObservation(state="stale", age=4.0, valid={"t01": 200})}, None))


def _conf(tmp: Path, **extra: str) -> dict[str, Any]:
    return start_run(tmp, **{"service_urls": "policy=http://127.0.0.1:9", "watch_interval": "1",
                             "outage_seconds": "30", "abort_error_rate": "0.5", "abort_after_seconds": "2", **extra})


def _held(conf: dict[str, Any]) -> dict[str, Any]:
    judging = judging_of(run_context(conf))
    assert judging is not None
    return outage_held(judging)


def test_the_abort_guard_ends_the_watch_and_the_run_record_says_why(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, error_share=0.9)
    conf = _conf(tmp_path)
    out = watch.watch_outage(configuration=conf)
    assert out["watched"] and out["aborted"] and out["reason"] == "abort guard: error rate above 50% for 2s"
    assert out["ticks"] == 3 and out["seconds"] == 2.0  # ticks at 0, 1 and 2 s: above the threshold for 2 s
    run = load_run(run_dir(conf))
    assert run.outage is not None and run.outage.aborted and run.outage.reason == out["reason"]
    assert run.outage.fault_run_id == RUN_ID and run.phase == "recovery"
    observations = load_notebook(run_dir(conf)).observations
    assert [o.elapsed for o in observations] == [0.0, 1.0, 2.0]
    assert all(o.fault_holds and o.recent_error_rate == pytest.approx(0.9) for o in observations)
    assert observations[-1].services["policy"].valid == {"t01": 200}
    held = _held(conf)
    assert held["ok"] and held["aborted"] and held["reason"].startswith("abort guard")


def test_a_guard_above_one_lets_the_outage_run_its_course(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, error_share=1.0)
    conf = _conf(tmp_path, abort_error_rate="2")
    out = watch.watch_outage(duration_seconds=3, configuration=conf)
    assert out["watched"] and not out["aborted"] and out["reason"] == "" and out["ticks"] == 4
    run = load_run(run_dir(conf))
    assert run.outage is not None and run.outage.end == run.outage.start + 3 and not run.outage.aborted


def test_the_watch_reads_the_settings_the_run_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting handed to a later activity (Chaos Toolkit's copy of the configuration) does not change the run: the
    abort guard the run started with still ends the outage."""
    _fake_world(monkeypatch, error_share=0.9)
    conf = _conf(tmp_path)
    out = watch.watch_outage(configuration={**conf, "abort_error_rate": "2", "outage_seconds": "1"})
    assert out["aborted"] and out["reason"] == "abort guard: error rate above 50% for 2s" and out["ticks"] == 3


def test_a_lifted_fault_is_recorded_and_fails_outage_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, error_share=0.0, lifted=frozenset({2}))
    conf = _conf(tmp_path, outage_seconds="4")
    assert watch.watch_outage(configuration=conf)["ticks"] == 5
    assert [o.fault_holds for o in load_notebook(run_dir(conf)).observations] == [True, True, False, True, True]
    held = _held(conf)
    assert not held["ok"] and held["ticks_not_held"] == 1 and held["measured_seconds"] == 2.0
    assert held["why"].startswith("outage did not hold: the JWKS was reachable from the target 2s into the outage")


def test_without_a_fault_of_this_run_there_is_nothing_to_watch(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, error_share=0.0)
    conf = _conf(tmp_path)
    dry = {**conf, "chaosext_run_id": "", "chaosext_dry_run": "actions"}
    assert watch.watch_outage(configuration=dry) == {"watched": False, "reason": "dry run: no fault was applied",
                                                      "ticks": 0}
    monkeypatch.setattr(watch, "run_fault", lambda ctx: None)  # a run whose fault failed: no record of it
    assert watch.watch_outage(configuration=conf) == {"watched": False, "reason": "this run applied no fault",
                                                       "ticks": 0}
    assert load_run(run_dir(conf)).outage is None and load_notebook(run_dir(conf)).observations == []


def test_a_new_outage_starts_a_fresh_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, error_share=0.0)
    conf = _conf(tmp_path, outage_seconds="2")
    watch.watch_outage(configuration=conf)
    with edit_notebook(run_dir(conf)) as first:
        assert [o.elapsed for o in first.observations] == [0.0, 1.0, 2.0]
        first.judgments = Judgments({"outage_held": {"ok": True}})
    watch.watch_outage(duration_seconds=1, configuration=conf)
    again = load_notebook(run_dir(conf))
    assert [o.elapsed for o in again.observations] == [0.0, 1.0] and again.judgments == Judgments()


def test_a_service_restarting_in_the_outage_neither_turns_the_count_negative_nor_hides_its_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: Callable[[Handler], JsonStub],
        caplog: pytest.LogCaptureFixture) -> None:
    """policy had served 5000 requests when the outage began and restarts 3.5 s into it (its counters begin again at
    0); the new process answers 40 % errors. Counted as cumulative sums (now minus the outage's start) the progress
    line said "of -4853 req" and the abort guard saw a negative tick, not the errors. Each tick now counts its own
    window from Prometheus' raw samples (a stub in Prometheus' documented shape), restarts handled: the totals only
    grow, the ticks after the restart count the new process's errors, and the abort guard acts on them."""
    _fake_world(monkeypatch, error_share=0.0)
    monkeypatch.setattr(watch, "error_counts_between", measure.error_counts_between)  # the real count
    start, restart = watch.time.time(), watch.time.time() + 3.5
    scrapes = [start - 30 + k + 0.5 for k in range(60)]  # scraped every second, half a second off the ticks
    ok = [(t, 5000 + 100 * (t - start) if t < restart else 60 * (t - restart + 1)) for t in scrapes]
    errors = [(t, 3.0 if t < restart else 40 * (t - restart + 1)) for t in scrapes]
    labels = {"service": "policy", "tenant": "t01", "route": "/api/v1/x"}
    s = stub(raw([({**labels, "status": "200"}, ok), ({**labels, "status": "503"}, errors)]))
    conf = _conf(tmp_path, prometheus_url=s.url, abort_error_rate="0.3", abort_after_seconds="2",
                 outage_seconds="10")
    with caplog.at_level(logging.INFO, logger="chaostoolkit"):
        out = watch.watch_outage(configuration=conf)
    observations = load_notebook(run_dir(conf)).observations
    # ticks at +0 (nothing yet), +1, +2, +3 (100 ok each), +4 (the new process: 60 ok + 40 errors) ...
    assert [o.recent_requests for o in observations] == [0, 100, 100, 100, 100, 100, 100]
    assert [o.requests for o in observations] == [0, 100, 200, 300, 400, 500, 600]
    assert [round(o.recent_error_rate, 2) for o in observations] == [0, 0, 0, 0, 0.4, 0.4, 0.4]
    assert out["aborted"] and out["reason"] == "abort guard: error rate above 30% for 2s"
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[outage]") and "req" in
                r.getMessage()]
    assert len(progress) == 7 and not [line for line in progress if "of -" in line], progress
