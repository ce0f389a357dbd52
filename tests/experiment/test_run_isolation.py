"""End to end: runs that cannot hurt each other, a verdict that the outage really held, and a dead-man switch that
acts in seconds (issue: "Runs that cannot hurt each other").

Each test has its own network namespace; two runs of one test share that namespace, its lab and its fault/lock
directory, exactly like two operators on one machine.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.experiment.experiment_util import ExperimentRunner, in_outage, iptables_rules, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.slow, pytest.mark.netns]


def _run_file(env: dict) -> dict:
    try:
        return json.loads(next(Path(env["CHAOSEXT_RUN_DIR"]).glob("*/run.json")).read_text())
    except (StopIteration, OSError, ValueError):
        return {}


def _k6_alive(env: dict) -> bool:
    from chaosext.load import k6 as k6mod

    return any(r["alive"] for d in Path(env["CHAOSEXT_RUN_DIR"]).glob("*/k6") for r in k6mod.list_runs(d))


def test_other_runs_cannot_touch_a_running_outage(experiment: ExperimentRunner, lab_factory) -> None:
    """While run A is in its outage: a run with a bad input and a second valid run (refused by the target lock) both
    change nothing; A's rules stay in place on every 100 ms sample, its k6 keeps running, and A passes."""
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120)
    proc_a, env_a = experiment.start(lab, OUTAGE_SECONDS="60")
    try:
        # a second valid run 1 s after A took the target's lock: refused by the lock, naming A
        assert wait_for(lambda: _run_file(env_a), timeout=60), "run A never started"
        time.sleep(1)
        early = experiment.run(lab)
        assert f"is in use by run {_run_file(env_a)['run_id']}" in early.output, early.output[-3000:]
        assert early.verdict_rc == 3, early.verdict_out
        assert wait_for(lambda: in_outage(env_a), timeout=90), "run A never reached its outage"
        run_a = _run_file(env_a)["run_id"]
        samples: list[bool] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                samples.append(f"chaosext:{run_a}" in iptables_rules(experiment.netns.name))
                stop.wait(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            bad = experiment.run(lab, FAULT_MODE="weird")
            assert "FAULT_MODE='weird' is unknown" in bad.output and bad.verdict_rc == 3
            refused = experiment.run(lab)
            assert run_a in refused.output, refused.output[-3000:]  # the refusal names the running run
            assert refused.verdict_rc == 3
            assert not (_run_file(env_a).get("outage") or {}).get("end"), "A's outage ended before the checks ran"
            assert _k6_alive(env_a), "A's k6 was stopped by another run"
        finally:
            stop.set()
            poller.join(timeout=10)
        assert samples and all(samples), f"A's fault vanished on {samples.count(False)} of {len(samples)} samples"
        out_a = experiment.finish(proc_a, env_a, lab)
    finally:
        if proc_a.poll() is None:
            os.killpg(proc_a.pid, signal.SIGKILL)
    assert out_a.verdict_rc == 0, out_a.verdict_out + out_a.output[-3000:]


def test_a_fault_removed_by_hand_fails_the_outage(experiment: ExperimentRunner, lab_factory) -> None:
    """Someone lifts the fault mid-outage: the verdict fails with "outage did not hold" and the measured length."""
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120)
    proc, env = experiment.start(lab, OUTAGE_SECONDS="24")
    try:
        assert wait_for(lambda: in_outage(env), timeout=90)
        time.sleep(4)
        run_id = _run_file(env)["run_id"]
        lifted = subprocess.run(experiment.netns.prefix + [sys.executable, "-m", "chaosext.cli", "restore",
                                                            "--run-id", run_id],
                                env={**os.environ, "CHAOSEXT_STATE_DIR": env["CHAOSEXT_STATE_DIR"]},
                                capture_output=True, text=True, timeout=60, check=False)
        assert lifted.returncode == 0, lifted.stdout + lifted.stderr
        out = experiment.finish(proc, env, lab)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    held = out.check("outage-held")
    assert not held["ok"] and "outage did not hold" in held["why"], held
    assert 2 <= held["measured_seconds"] < 20 and held["planned_seconds"] == 24, held
    assert out.verdict_rc == 1 and "outage-held" in out.verdict_out


def test_sigkill_of_the_whole_run_is_undone_within_the_heartbeat_grace(experiment: ExperimentRunner,
                                                                        lab_factory) -> None:
    """SIGKILL of chaos' whole process group mid-outage (no cleanup code runs): the dead-man switch lifts the fault
    and k6 is gone within HEARTBEAT_GRACE + 5 s, far before the 150 s outage would have ended."""
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=300)
    proc, env = experiment.start(lab, OUTAGE_SECONDS="150", HEARTBEAT_GRACE="6")
    try:
        assert wait_for(lambda: in_outage(env), timeout=90)
        assert experiment.netns.get(lab["jwks_url"], timeout=1.5) == 0
        assert _k6_alive(env)
        killed = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        back = wait_for(lambda: experiment.netns.get(lab["jwks_url"], timeout=1.0) == 200 and not _k6_alive(env),
                        timeout=40, interval=0.5)
        took = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert back, "the JWKS was still blocked, or k6 still running, 40 s after the SIGKILL"
    assert took <= 6 + 5 + 3, f"restored {took:.1f}s after the kill (grace 6 s)"
    assert not [r for r in iptables_rules(experiment.netns.name).splitlines() if "chaosext" in r.lower()]
