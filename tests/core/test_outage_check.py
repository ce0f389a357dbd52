"""``outage_check``: the one opening of every outage probe — no outage recorded: say so (never a vacuous pass);
judged already: the recorded result; else judge — and a probe Chaos Toolkit can call and discover like any other."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosext.core.config import ExperimentConfig
from chaosext.core.errors import ChaosextError, activity
from chaosext.core.judging import Judging, not_judged, outage_check, retry_until
from chaosext.core.runfile import CheckResult, Judgments, edit_run

seen: list[Judging] = []


@activity
@outage_check("the widget rate")
def widget_rate(judging: Judging) -> CheckResult:
    """Widgets per second during the outage."""
    seen.append(judging)
    if judging.cfg.outage_seconds == 13:
        raise ChaosextError("set WIDGET_URL to the widget counter")
    return {"phase": "outage", "ok": True, "window": list(judging.window)}


def _live_count(cfg: ExperimentConfig) -> CheckResult:
    return {"phase": "before-fault", "ok": True, "services": sorted(cfg.services)}


@outage_check(before=_live_count)
def widget_count(judging: Judging) -> CheckResult:
    """Widgets counted during the outage."""
    return {"phase": "outage", "ok": True}


def _conf(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {"chaosext_lab_dir": str(tmp / "nolab"), "chaosext_run_dir": str(tmp / "run"),
            "service_urls": "policy=http://127.0.0.1:9", **extra}


def _record_outage(tmp: Path, end: float | None) -> None:
    with edit_run(str(tmp / "run")) as run:
        run.begin_outage(100.0, "ab12cd34", None)
        if end is not None:
            run.end_outage(end, "", None)


def test_before_any_outage_the_check_refuses_to_judge(tmp_path: Path) -> None:
    seen.clear()
    assert widget_rate(configuration=_conf(tmp_path)) == not_judged("the widget rate")
    assert not_judged("the widget rate")["ok"] is False and "recorded no outage" in not_judged("x")["error"]
    assert widget_count(configuration=_conf(tmp_path)) == {"phase": "before-fault", "ok": True,
                                                            "services": ["policy"]}
    assert seen == []


def test_during_and_after_the_outage_it_judges_the_recorded_window(tmp_path: Path) -> None:
    seen.clear()
    _record_outage(tmp_path, end=None)
    res = widget_rate(configuration=_conf(tmp_path), secrets={"k": "v"})
    assert res["ok"] and res["window"][0] == 100.0 and res["window"][1] > 100.0  # end = now while it runs
    _record_outage(tmp_path, end=130.0)
    assert widget_rate(configuration=_conf(tmp_path))["window"] == [100.0, 130.0]
    assert seen[0].secrets == {"k": "v"} and seen[0].configuration == _conf(tmp_path)
    assert seen[0].run.outage is not None and seen[0].run.outage.fault_run_id == "ab12cd34"


def test_once_judged_it_returns_the_recorded_result(tmp_path: Path) -> None:
    seen.clear()
    _record_outage(tmp_path, end=130.0)
    with edit_run(str(tmp_path / "run")) as run:
        run.judgments = Judgments({"widget_rate": {"ok": False, "why": "recorded by judge_outage"}})
    assert widget_rate(configuration=_conf(tmp_path)) == {"ok": False, "why": "recorded by judge_outage"}
    assert seen == []


def test_a_chaosext_error_becomes_activity_failed_with_its_message(tmp_path: Path) -> None:
    _record_outage(tmp_path, end=130.0)
    with pytest.raises(ActivityFailed, match="set WIDGET_URL"):
        widget_rate(configuration=_conf(tmp_path, outage_seconds="13"))


def test_chaos_toolkit_sees_a_probe_with_configuration_and_secrets() -> None:
    """chaoslib passes ``configuration``/``secrets`` by looking at the signature, and discovery shows the docstring."""
    for probe in (widget_rate, widget_count):
        assert list(inspect.signature(probe).parameters) == ["configuration", "secrets"]
        assert inspect.signature(probe).parameters["configuration"].default is None
    assert widget_rate.__name__ == "widget_rate" and widget_rate.__doc__ == "Widgets per second during the outage."
    assert widget_count.__module__ == __name__


def test_retry_until_stops_when_done_or_past_the_deadline() -> None:
    calls: list[int] = []
    assert retry_until(lambda: calls.append(1) or len(calls), lambda n: n >= 3, deadline=float("inf"),
                       interval=0.0) == 3
    calls.clear()
    assert retry_until(lambda: calls.append(1) or len(calls), lambda n: False, deadline=0.0, interval=0.0) == 1
