"""The watch step's loop with its readings faked and a fake clock (no lab, no fault, no sleeping): what it records
in the run file, when the abort guard ends it, and how the outage checks then judge what it recorded."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaosext.core.runfile import ServiceObservation, load_run, new_run
from chaosext.egress.base import FaultSpec
from chaosext.metrics.probes import outage_held
from chaosext.outage import watch

RUN_ID = "ab12cd34"
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
    counts = iter((float(error_share * 100 * i), float(100 * i)) for i in range(1000))
    monkeypatch.setattr(watch, "time", FakeClock())
    monkeypatch.setattr(watch, "fault_record", lambda run_id: {"spec": SPEC.to_dict()} if run_id == RUN_ID else None)
    monkeypatch.setattr(watch, "build_driver", lambda via, options: Driver(set(lifted)))
    monkeypatch.setattr(watch, "ensure_tokens", lambda cfg: {"t01": "not-a-real-token"})
    monkeypatch.setattr(watch, "forgery_plan", lambda cfg, configuration=None: None)
    monkeypatch.setattr(watch, "k6_snapshot", lambda address: None)
    monkeypatch.setattr(watch, "alert_names", lambda cfg: (set(), set()))
    monkeypatch.setattr(watch, "error_counts", lambda cfg, at=None, fallback=(0.0, 0.0): next(counts))
    monkeypatch.setattr(watch, "observe_services", lambda cfg, tokens, forged, tick, start: (
        {"policy": ServiceObservation(state="stale", age=4.0, valid={"t01": 200})}, None))


def _conf(tmp: Path, **extra: str) -> dict[str, Any]:
    conf = {"chaosext_lab_dir": str(tmp / "nolab"), "chaosext_run_dir": str(tmp / "runs"),
            "service_urls": "policy=http://127.0.0.1:9", "watch_interval": "1", "outage_seconds": "30",
            "abort_error_rate": "0.5", "abort_after_seconds": "2", **extra}
    new_run(conf["chaosext_run_dir"], RUN_ID)
    conf["chaosext_run_id"] = RUN_ID
    return conf


def test_the_abort_guard_ends_the_watch_and_the_run_file_says_why(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, error_share=0.9)
    conf = _conf(tmp_path)
    out = watch.watch_outage(configuration=conf)
    assert out["watched"] and out["aborted"] and out["reason"] == "abort guard: error rate above 50% for 2s"
    assert out["ticks"] == 3 and out["seconds"] == 2.0  # ticks at 0, 1 and 2 s: above the threshold for 2 s
    run = load_run(str(tmp_path / "runs" / RUN_ID))
    assert run.outage is not None and run.outage.aborted and run.outage.reason == out["reason"]
    assert run.outage.fault_run_id == RUN_ID and run.phase == "recovery"
    assert [o.elapsed for o in run.observations] == [0.0, 1.0, 2.0]
    assert all(o.fault_holds and o.recent_error_rate == pytest.approx(0.9) for o in run.observations)
    assert run.observations[-1].services["policy"].valid == {"t01": 200}
    held = outage_held(configuration=conf)
    assert held["ok"] and held["aborted"] and held["reason"].startswith("abort guard")


def test_a_guard_above_one_lets_the_outage_run_its_course(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, error_share=1.0)
    out = watch.watch_outage(duration_seconds=3, configuration=_conf(tmp_path, abort_error_rate="2"))
    assert out["watched"] and not out["aborted"] and out["reason"] == "" and out["ticks"] == 4
    run = load_run(str(tmp_path / "runs" / RUN_ID))
    assert run.outage is not None and run.outage.end == run.outage.start + 3 and not run.outage.aborted


def test_a_lifted_fault_is_recorded_and_fails_outage_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, error_share=0.0, lifted=frozenset({2}))
    conf = _conf(tmp_path, outage_seconds="4")
    assert watch.watch_outage(configuration=conf)["ticks"] == 5
    run = load_run(str(tmp_path / "runs" / RUN_ID))
    assert [o.fault_holds for o in run.observations] == [True, True, False, True, True]
    held = outage_held(configuration=conf)
    assert not held["ok"] and held["ticks_not_held"] == 1 and held["measured_seconds"] == 2.0
    assert held["why"].startswith("outage did not hold: the JWKS was reachable from the target 2s into the outage")


def test_without_a_fault_of_this_run_there_is_nothing_to_watch(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_world(monkeypatch, error_share=0.0)
    conf = {**_conf(tmp_path), "chaosext_run_id": "", "chaosext_dry_run": "actions"}
    assert watch.watch_outage(configuration=conf) == {"watched": False, "reason": "dry run: no fault was applied",
                                                       "ticks": 0}
    assert load_run(str(tmp_path / "runs" / RUN_ID)).outage is None
