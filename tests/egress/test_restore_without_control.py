"""An experiment without chaosext's safety control (no run id) still restores its own fault at once.

Chaos Toolkit hands every activity a COPY of the configuration (chaoslib ``provider/python.py``), so a fault id that
``block_jwks_egress`` wrote into "its" configuration never reached the restore step: with the shipped experiment's
``chaosext_*`` keys in the configuration, the restore said "this run applied no fault" and the block stayed until its
deadline. The fault record now names the process that applied it, and that process's restore finds it. Real `chaos
run` processes, real iptables in the namespaces of the ``netpair`` fixture.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

CHAOS = str(Path(sys.executable).parent / "chaos")


def _step(kind: str, name: str, func: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "name": name, "provider": {"type": "python", "module": "chaosext.egress.actions",
                                                     "func": func, "arguments": arguments}}


def _experiment(path: Path, url: str, target: str, deadline: int) -> Path:
    """block -> restore, with no control; the configuration carries chaosext_* keys like the shipped one."""
    doc = {"version": "1.0.0", "title": "no safety control", "description": "test",
           "configuration": {"chaosext_lab_dir": str(path.parent / "no-lab"), "chaosext_approve": target},
           "method": [_step("action", "block", "block_jwks_egress",
                            {"jwks_url": url, "target": target, "mode": "reject", "deadline_seconds": deadline,
                             "verify_timeout_seconds": 0.5}),
                      _step("action", "restore", "restore_jwks_egress", {"jwks_url": url, "target": target})]}
    path.write_text(json.dumps(doc))
    return path


def test_restore_lifts_the_fault_of_an_experiment_without_the_safety_control(netpair, state_dir, tmp_path):
    exp = _experiment(tmp_path / "exp.json", netpair.url(), netpair.target, deadline=120)
    env = {**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir), "CHAOSEXT_RUN_DIR": str(tmp_path / "run")}
    proc = subprocess.run([CHAOS, "--no-log-file", "run", "--journal-path", str(tmp_path / "journal.json"), str(exp)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    journal = json.loads((tmp_path / "journal.json").read_text())
    runs = {r["activity"]["name"]: r for r in journal["run"]}

    assert runs["block"]["status"] == "succeeded", proc.stdout + proc.stderr
    blocked = runs["block"]["output"]["run_id"]
    restored = runs["restore"]["output"]
    assert [r["run_id"] for r in restored["restored"]] == [blocked], restored
    # lifted at once by the restore step, not 120 s later by the deadline
    assert netpair.rules() == []
    assert not (state_dir / f"{blocked}.json").exists()


def test_a_process_that_applied_no_fault_restores_none_of_another_processes(netpair, state_dir, tmp_path):
    """The other side of the same rule: an experiment whose own block never happened (here: no block step) must not
    lift a fault another process applied on the same target, even without run ids."""
    other = subprocess.run(
        [sys.executable, "-c", "import json, sys\n"
         "from chaosext.egress.actions import block_jwks_egress\n"
         f"print(json.dumps(block_jwks_egress({netpair.url()!r}, target={netpair.target!r}, mode='reject', "
         "deadline_seconds=60, verify_timeout_seconds=0.5)))"],
        env={**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)}, capture_output=True, text=True, timeout=60,
        check=True)
    theirs = json.loads(other.stdout)["run_id"]
    exp = _experiment(tmp_path / "exp.json", netpair.url(), netpair.target, deadline=60)
    doc = json.loads(exp.read_text())
    doc["method"] = doc["method"][1:]  # restore only
    exp.write_text(json.dumps(doc))
    env = {**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)}
    subprocess.run([CHAOS, "--no-log-file", "run", "--journal-path", str(tmp_path / "journal.json"), str(exp)],
                   cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    restored = json.loads((tmp_path / "journal.json").read_text())["run"][0]["output"]

    assert restored["restored"] == [] and restored["nothing_to_restore"], restored
    assert any(f"chaosext:{theirs}" in rule for rule in netpair.rules())
    subprocess.run([sys.executable, "-m", "chaosext.cli", "restore", "--run-id", theirs, "--target", netpair.target],
                   env=env, capture_output=True, timeout=60, check=False)
    assert netpair.rules() == []
