"""Judging once after the outage, without a lab: every check runs even after a failure, a check that raises fails
with its error, the results are kept in the run file (the checks then return them), and no outage = not judged.
Plus the windows the evidence file is saved for."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaosext.core.config import load_config
from chaosext.core.judging import Judging, outage_check
from chaosext.core.runfile import Baseline, CheckResult, edit_run, load_run, new_run
from chaosext.outage import judge
from chaosext.outage.evidence import run_windows, save_run_evidence

RUN_ID = "ab12cd34"
calls: list[str] = []


@outage_check("alpha")
def alpha_check(judging: Judging) -> CheckResult:
    calls.append("alpha")
    return {"phase": "outage", "ok": False, "why": "alpha failed"}


@outage_check("beta")
def beta_check(judging: Judging) -> CheckResult:
    calls.append("beta")
    raise RuntimeError("beta blew up")


@outage_check("gamma")
def gamma_check(judging: Judging) -> CheckResult:
    calls.append("gamma")
    return {"phase": "outage", "ok": True}


CHECKS = (("alpha", alpha_check), ("beta", beta_check), ("gamma", gamma_check))


def _conf(tmp: Path) -> dict[str, Any]:
    conf = {"chaosext_lab_dir": str(tmp / "nolab"), "chaosext_run_dir": str(tmp / "runs"),
            "prometheus_url": "http://127.0.0.1:9", "baseline_seconds": "60"}
    new_run(conf["chaosext_run_dir"], RUN_ID)
    conf["chaosext_run_id"] = RUN_ID
    return conf


def _outage(tmp: Path, start: float = 1000.0, end: float | None = 1030.0) -> None:
    with edit_run(str(tmp / "runs" / RUN_ID)) as run:
        run.begin_outage(start, RUN_ID, None)
        if end is not None:
            run.end_outage(end, "", None)


def test_every_check_runs_once_and_is_kept_by_its_function(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    _outage(tmp_path)
    calls.clear()
    results = judge.run_checks(conf, CHECKS)
    assert calls == ["alpha", "beta", "gamma"]  # a failing or raising check does not stop the others
    assert results["alpha"]["ok"] is False and results["gamma"]["ok"] is True
    assert results["beta"] == {"ok": False, "error": "RuntimeError: beta blew up"}
    recorded = load_run(str(tmp_path / "runs" / RUN_ID)).judgments.results
    assert set(recorded) == {"alpha_check", "beta_check", "gamma_check"}
    calls.clear()
    assert alpha_check(configuration=conf) == results["alpha"] and calls == []  # the recorded result, not again
    judge.run_checks(conf, CHECKS)  # judging again judges afresh
    assert calls == ["alpha", "beta", "gamma"]


def test_judge_outage_without_an_outage_judges_nothing(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    out = judge.judge_outage(configuration=conf)
    assert out == {"ok": False, "judged": False, "failed": ["no-outage"], "checks": {},
                   "why": "no outage was recorded: the fault was not applied"}
    assert judge.judge_outage(configuration={**conf, "chaosext_dry_run": "actions"})["why"] == \
        "dry run: nothing was injected"


def test_judge_outage_names_the_failed_checks_and_saves_evidence(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _conf(tmp_path)
    _outage(tmp_path)
    monkeypatch.setattr(judge, "OUTAGE_CHECKS", CHECKS)
    out = judge.judge_outage(configuration=conf)
    assert out["ok"] is False and out["failed"] == ["alpha", "beta"] and list(out["checks"]) == ["alpha", "beta",
                                                                                                  "gamma"]
    assert out["evidence"]["ok"] is False and "gave no ranges" in out["evidence"]["error"]  # Prometheus is down
    assert Path(out["evidence"]["evidence_file"]) == tmp_path / "runs" / RUN_ID / "evidence.json"


def test_the_drill_and_the_experiment_judge_the_same_way() -> None:
    """One judging loop for both: the drill's checks replace the ones the drill cannot judge by design."""
    outage = dict(judge.OUTAGE_CHECKS)
    drill = dict(judge.DRILL_CHECKS)
    assert outage["outage-held"] is drill["outage-held"] and outage["no-fail-open"] is drill["no-fail-open"]
    assert {"fails-closed-after-expiry", "auth-expired-audited", "expiry-alerts-fired"} <= set(drill)


def test_evidence_windows_come_from_the_run_file(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    cfg = load_config(conf)
    assert run_windows(cfg) == {}
    assert save_run_evidence(cfg) == {"ok": False, "error": "no window recorded"}
    with edit_run(cfg.run_dir) as run:
        run.baseline = Baseline(judged_at=990.0, window_seconds=60, requests=100.0)
    _outage(tmp_path, 1000.0, None)
    windows = run_windows(cfg)
    assert windows["baseline"] == (930.0, 990.0) and windows["outage"][0] == 1000.0 and "recovery" not in windows
    _outage(tmp_path, 1000.0, 1030.0)
    windows = run_windows(cfg)
    assert windows["outage"] == (1000.0, 1030.0) and windows["recovery"][0] == 1030.0

