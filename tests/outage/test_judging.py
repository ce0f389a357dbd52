"""``recorded_or_judged``: how a hypothesis probe sees an outage check — no outage recorded: its live pre-flight
answer, else say so (never a vacuous pass); the outage over and judged: the recorded result; else judge the recorded
window now. The probe built on it is a plain entry point Chaos Toolkit calls and discovers like any other, and a
domain error reaches its journal as the message that says what to fix."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from chaoslib.provider.python import run_python_activity

from chaosext.core.errors import ChaosextError
from chaosext.outage import drill
from chaosext.outage.judging import Judging, judging_of, not_judged, recorded_or_judged
from chaosext.outage.notebook import Judgments, edit_notebook
from chaosext.run.context import RunContext, run_context
from chaosext.run.record import CheckResult, edit_run
from tests.runutil import run_dir, settings, start_run

seen: list[Judging] = []


def widget_rate(judging: Judging) -> CheckResult:
    """Widgets per second during the outage."""
    seen.append(judging)
    if judging.cfg.outage_seconds == 13:
        raise ChaosextError("set WIDGET_URL to the widget counter")
    return {"phase": "outage", "ok": True, "window": list(judging.window)}


def _live_count(ctx: RunContext) -> CheckResult:
    return {"phase": "before-fault", "ok": True, "services": sorted(ctx.cfg.services)}


def _record_outage(conf: dict[str, Any], end: float | None) -> None:
    with edit_run(run_dir(conf)) as run:
        run.begin_outage(100.0, "ab12cd34", None)
        if end is not None:
            run.end_outage(end, "", None)


def _conf(tmp: Path, **extra: str) -> dict[str, Any]:
    return start_run(tmp, service_urls="policy=http://127.0.0.1:9", **extra)


def test_before_any_outage_the_check_refuses_to_judge(tmp_path: Path) -> None:
    seen.clear()
    outside = settings(tmp_path, service_urls="policy=http://127.0.0.1:9")
    for ctx in (run_context(_conf(tmp_path)), run_context(outside)):  # in a run, and outside one
        assert recorded_or_judged(ctx, widget_rate, what="the widget rate") == not_judged("the widget rate")
        assert recorded_or_judged(ctx, widget_rate) == not_judged("widget_rate")
        assert recorded_or_judged(ctx, widget_rate, before=_live_count) == {"phase": "before-fault", "ok": True,
                                                                            "services": ["policy"]}
    assert not_judged("the widget rate")["ok"] is False and "recorded no outage" in not_judged("x")["error"]
    assert seen == []


def test_during_and_after_the_outage_it_judges_the_recorded_window(tmp_path: Path) -> None:
    seen.clear()
    conf = _conf(tmp_path)
    _record_outage(conf, end=None)
    res = recorded_or_judged(run_context(conf, {"k": "v"}), widget_rate, before=_live_count)
    assert res["ok"] and res["window"][0] == 100.0 and res["window"][1] > 100.0  # end = now while it runs
    _record_outage(conf, end=130.0)
    assert recorded_or_judged(run_context(conf), widget_rate)["window"] == [100.0, 130.0]
    assert seen[0].ctx.secrets == {"k": "v"} and seen[0].ctx.run_id == "ab12cd34"
    assert seen[0].run.outage is not None and seen[0].run.outage.fault_run_id == "ab12cd34"


def test_once_judged_it_returns_the_recorded_result_but_not_while_the_outage_runs(tmp_path: Path) -> None:
    seen.clear()
    conf = _conf(tmp_path)
    _record_outage(conf, end=None)
    with edit_notebook(run_dir(conf)) as notebook:
        notebook.judgments = Judgments({"widget_rate": {"ok": False, "why": "recorded by judge_outage"}})
    assert recorded_or_judged(run_context(conf), widget_rate)["ok"] is True and len(seen) == 1  # still running
    _record_outage(conf, end=130.0)
    assert recorded_or_judged(run_context(conf), widget_rate) == {"ok": False, "why": "recorded by judge_outage"}
    assert len(seen) == 1


def test_the_judging_names_the_run_its_notebook_and_the_window(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    assert judging_of(run_context(conf)) is None
    _record_outage(conf, end=130.0)
    judging = judging_of(run_context(conf))
    assert judging is not None and judging.window == (100.0, 130.0) and judging.cfg.service_urls == {
        "policy": "http://127.0.0.1:9"}
    assert judging.notebook.observations == [] and judging.run.phase == "recovery"


def test_a_chaosext_error_reaches_the_caller_as_itself_and_the_journal_as_its_message(tmp_path: Path) -> None:
    conf = _conf(tmp_path, outage_seconds="13")
    _record_outage(conf, end=130.0)
    with pytest.raises(ChaosextError, match="set WIDGET_URL"):
        recorded_or_judged(run_context(conf), widget_rate)
    # a real probe built on it, run the way Chaos Toolkit runs it: the error becomes ActivityFailed with the fix
    bad = {"chaosext_lab_dir": str(tmp_path / "nolab"), "outage_seconds": "lots"}
    activity = {"type": "probe", "name": "fails-closed-after-expiry",
                "provider": {"type": "python", "module": "chaosext.outage.drill", "func": "fails_closed_after_expiry"}}
    with pytest.raises(ActivityFailed,
                       match=r"ConfigError: OUTAGE_SECONDS='lots' is not a whole number; set it to e\.g\. 1$"):
        run_python_activity(activity, bad, {})


def test_chaos_toolkit_sees_a_probe_with_configuration_and_secrets() -> None:
    """chaoslib passes ``configuration``/``secrets`` by looking at the signature, and discovery shows the docstring."""
    for probe in (drill.fails_closed_after_expiry, drill.alerts_clear_before_fault):
        assert list(inspect.signature(probe).parameters) == ["configuration", "secrets"]
        assert inspect.signature(probe).parameters["configuration"].default is None
        assert probe.__module__ == "chaosext.outage.drill" and probe.__name__ in drill.__all__
    assert (drill.fails_closed_after_expiry.__doc__ or "").startswith("Once a service's cache expired")
