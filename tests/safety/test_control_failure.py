"""chaoslib logs and IGNORES an exception a control raises (anything but InterruptExecution) and runs the experiment
anyway — without the safety control's lock, approval, heartbeat and always-restore. So the control turns every
unexpected error into InterruptExecution, and gives back the target lock it already took."""
from __future__ import annotations

from pathlib import Path

import pytest
from chaoslib.exceptions import InterruptExecution

from chaosext.safety import controls, lock


def test_an_unexpected_error_in_the_control_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise AttributeError("'dict' object has no attribute 'kind'")

    monkeypatch.setattr(controls, "_before_experiment", broken)
    with pytest.raises(InterruptExecution, match=r"the safety control failed .*AttributeError"):
        controls.before_experiment_control(context={}, configuration={}, secrets=None)


def test_an_error_after_the_lock_gives_the_lock_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHAOSEXT_STATE_DIR", str(tmp_path / "state"))
    target = tmp_path / "target.yaml"
    target.write_text("version: 1\nidentity_provider: {authority_url: 'http://127.0.0.1:9', jwks_url: "
                      "'http://127.0.0.1:9/jwks'}\ntenants: [a]\nservices: {orders: {url: 'http://127.0.0.1:9', "
                      "routes: ['GET /o']}}\nprometheus: {url: 'http://127.0.0.1:9'}\nalertmanager: {url: "
                      "'http://127.0.0.1:9'}\naudit: {source: 'file:/tmp/x.jsonl'}\n")

    def broken(ctx: object) -> list[object]:
        raise RuntimeError("a pre-flight check blew up")

    monkeypatch.setattr(controls, "live_findings", broken)
    configuration = {"target_file": str(target), "chaosext_lab_dir": str(tmp_path / "no-lab"),
                     "chaosext_run_dir": str(tmp_path / "run"), "outage_seconds": "30", "jwks_ttl": "5",
                     # not the lab (no lab runs): approved, plain http allowed, so the run gets to the live checks
                     "chaosext_approve": "127.0.0.1", "chaosext_allow_http": "true"}
    with pytest.raises(InterruptExecution, match="RuntimeError: a pre-flight check blew up"):
        controls.before_experiment_control(context={}, configuration=configuration, secrets=None)
    assert not any(p.suffix == ".lock" for p in lock.locks_dir().glob("*")), "the target lock was left taken"
