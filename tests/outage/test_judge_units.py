"""Judging once after the outage, without a lab: every check runs even after a failure, a check that raises fails
with its error, the results are kept in the outage notebook (a probe naming the check then returns them), and no
outage = not judged. Plus the windows the evidence file is saved for."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaosext.outage import judge
from chaosext.outage.evidence import run_windows, save_run_evidence
from chaosext.outage.judging import Judging, recorded_or_judged
from chaosext.outage.notebook import load_notebook
from chaosext.run.context import run_context
from chaosext.run.record import Baseline, CheckResult, edit_run
from tests.runutil import run_dir, start_run

calls: list[str] = []


def alpha_check(judging: Judging) -> CheckResult:
    calls.append("alpha")
    return {"phase": "outage", "ok": False, "why": "alpha failed"}


def beta_check(judging: Judging) -> CheckResult:
    calls.append("beta")
    raise RuntimeError("beta blew up")


def gamma_check(judging: Judging) -> CheckResult:
    calls.append("gamma")
    return {"phase": "outage", "ok": True}


def delta_check(judging: Judging) -> CheckResult:
    calls.append("delta")
    return {"phase": "outage", "ok": True, "not_judged": True, "gap": "no delta signal (delta in TARGET_FILE)"}


CHECKS = (("alpha", alpha_check), ("beta", beta_check), ("gamma", gamma_check))


def _conf(tmp: Path) -> dict[str, Any]:
    return start_run(tmp, prometheus_url="http://127.0.0.1:9", baseline_seconds="60")


def _outage(conf: dict[str, Any], start: float = 1000.0, end: float | None = 1030.0) -> None:
    with edit_run(run_dir(conf)) as run:
        run.begin_outage(start, "ab12cd34", None)
        if end is not None:
            run.end_outage(end, "", None)


def test_every_check_runs_once_and_is_kept_by_its_function(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    _outage(conf)
    calls.clear()
    ctx = run_context(conf)
    results = judge.run_checks(ctx, CHECKS)
    assert results is not None
    assert calls == ["alpha", "beta", "gamma"]  # a failing or raising check does not stop the others
    assert results["alpha"]["ok"] is False and results["gamma"]["ok"] is True
    assert results["beta"] == {"ok": False, "error": "RuntimeError: beta blew up"}
    recorded = load_notebook(run_dir(conf)).judgments.results
    assert set(recorded) == {"alpha_check", "beta_check", "gamma_check"}
    calls.clear()
    assert recorded_or_judged(ctx, alpha_check) == results["alpha"] and calls == []  # the recorded result, not again
    judge.run_checks(ctx, CHECKS)  # judging again judges afresh
    assert calls == ["alpha", "beta", "gamma"]


def test_judge_outage_without_an_outage_judges_nothing(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    out = judge.judge_outage(configuration=conf)
    assert out == {"ok": False, "judged": False, "failed": ["no-outage"], "checks": {},
                   "why": "no outage was recorded: the fault was not applied"}
    assert judge.judge_outage(configuration={**conf, "chaosext_dry_run": "actions"})["why"] == \
        "dry run: nothing was injected"
    assert judge.run_checks(run_context(conf), CHECKS) is None


def test_judge_outage_names_the_failed_checks_and_saves_evidence(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _conf(tmp_path)
    _outage(conf)
    monkeypatch.setattr(judge, "OUTAGE_CHECKS", CHECKS)
    out = judge.judge_outage(configuration=conf)
    assert out["ok"] is False and out["failed"] == ["alpha", "beta"] and list(out["checks"]) == ["alpha", "beta",
                                                                                                  "gamma"]
    assert out["evidence"]["ok"] is False and "gave no ranges" in out["evidence"]["error"]  # Prometheus is down
    assert Path(out["evidence"]["evidence_file"]) == run_dir(conf) / "evidence.json"


def test_judge_drill_records_the_drill_checks_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _conf(tmp_path)
    assert judge.judge_drill(configuration=conf)["failed"] == ["no-outage"]
    _outage(conf)
    monkeypatch.setattr(judge, "DRILL_CHECKS", CHECKS[::-1])
    calls.clear()
    out = judge.judge_drill(configuration=conf)
    assert calls == ["gamma", "beta", "alpha"] and out["failed"] == ["beta", "alpha"] and "evidence" not in out
    assert set(load_notebook(run_dir(conf)).judgments.results) == {"alpha_check", "beta_check", "gamma_check"}


def test_the_drill_and_the_experiment_judge_the_same_way() -> None:
    """One judging loop for both: the drill's checks replace the ones the drill cannot judge by design."""
    outage = dict(judge.OUTAGE_CHECKS)
    drill = dict(judge.DRILL_CHECKS)
    assert outage["outage-held"] is drill["outage-held"] and outage["no-fail-open"] is drill["no-fail-open"]
    assert {"fails-closed-after-expiry", "auth-expired-audited", "expiry-alerts-fired"} <= set(drill)


def test_evidence_windows_come_from_the_run_record(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    ctx = run_context(conf)
    assert run_windows(ctx) == {}
    assert save_run_evidence(ctx) == {"ok": False, "error": "no window recorded"}
    with edit_run(run_dir(conf)) as run:
        run.baseline = Baseline(judged_at=990.0, window_seconds=60, requests=100.0)
    _outage(conf, 1000.0, None)
    windows = run_windows(ctx)
    assert windows["baseline"] == (930.0, 990.0) and windows["outage"][0] == 1000.0 and "recovery" not in windows
    _outage(conf, 1000.0, 1030.0)
    windows = run_windows(ctx)
    assert windows["outage"] == (1000.0, 1030.0) and windows["recovery"][0] == 1030.0


def test_judge_outage_names_the_checks_it_could_not_judge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A check with a gap is ok (never a refusal) and not failed, yet the step names it (the verdict's INCOMPLETE)."""
    conf = _conf(tmp_path)
    _outage(conf)
    monkeypatch.setattr(judge, "OUTAGE_CHECKS", (("gamma", gamma_check), ("delta", delta_check)))
    out = judge.judge_outage(configuration=conf)
    assert out["ok"] is True and out["failed"] == [] and out["not_judged"] == ["delta"]
