"""The dead-man switch: the watchdog lifts a real iptables fault (client/server network namespaces, see conftest.py)
and stops the run's k6 once the run's heartbeat stops, and at the deadline at the latest (the deadline's arithmetic:
tests/core/test_limits.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaosext.core import procs
from chaosext.core.errors import ConfigError
from chaosext.egress import watchdog
from chaosext.egress.actions import block_jwks_egress
from chaosext.egress.base import FaultError
from chaosext.load import k6 as k6mod
from chaosext.load.actions import start_k6
from chaosext.run.heartbeat import Heartbeat
from tests.egress.egress_util import wait_for
from tests.load.targets import write_target

GRACE = 3.0
FAKE = Path(__file__).resolve().parents[1] / "load" / "fake_service.py"


def _reachable(pair) -> bool:
    out = subprocess.run(["ip", "netns", "exec", pair.client, sys.executable, "-m", "chaosext.egress.base", "probe",
                          pair.v4, str(pair.port), "0.5", pair.url()], capture_output=True, text=True, timeout=20)
    return json.loads(out.stdout)["reachable"]


def _seconds_until(predicate, timeout: float) -> float | None:
    start = time.monotonic()
    return time.monotonic() - start if wait_for(predicate, timeout=timeout, interval=0.2) else None


#: a k6 script that only idles: these tests are about which k6 process lives, not about load (and must not depend
#: on a lab's services or token endpoint being there)
IDLE_SCRIPT = """export const options = { vus: 1, duration: '120s' };
import { sleep } from 'k6';
export default function () { sleep(1); }
"""


def _idle_k6(tmp_path: Path, owner: str) -> dict:
    script = tmp_path / "idle.js"
    script.write_text(IDLE_SCRIPT)
    return start_k6(script=str(script), duration="120s", owner_run_id=owner)


@pytest.fixture
def k6_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The stand-in tenant service (tests/load/fake_service.py) and a private k6 runs dir; k6 left over is killed."""
    proc = subprocess.Popen([sys.executable, str(FAKE)], stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{int(proc.stdout.readline())}"
    runs = tmp_path / "k6"
    target = write_target(tmp_path / "target.yaml", {"orders": url, "billing": url})
    for k, v in {"CHAOSEXT_K6_DIR": str(runs), "CHAOSEXT_LAB_DIR": str(tmp_path / "no-lab"), "AUTHORITY_URL": url,
                 "TARGET_FILE": str(target)}.items():
        monkeypatch.setenv(k, v)
    try:
        yield runs
    finally:
        for rec in k6mod.list_runs(runs):
            for pid in (rec["pid"], rec.get("k6_pid") or 0):
                if pid and procs.process_alive(pid):
                    os.killpg(pid, signal.SIGKILL)
        proc.kill()
        proc.wait(10)


@pytest.mark.e2e
@pytest.mark.netns
@pytest.mark.slow
def test_a_stopped_heartbeat_lifts_the_fault_and_stops_only_that_runs_k6(netpair, state_dir, k6_dir, tmp_path):
    pulse = Heartbeat(str(tmp_path / "run" / "heartbeat"), interval=0.5).start()
    other = None
    try:
        out = block_jwks_egress(netpair.url(), target=netpair.target, mode="reject", deadline_seconds=120,
                                verify_timeout_seconds=0.5, heartbeat_file=pulse.path, heartbeat_grace_seconds=GRACE,
                                k6_dir=str(k6_dir))
        mine = _idle_k6(tmp_path, out["run_id"])
        other = _idle_k6(tmp_path, "a0a0a0a1")
        assert k6mod.read_run(Path(other["run_dir"]))["alive"]
        time.sleep(GRACE + 3)  # a beating run keeps its fault
        assert netpair.rules() and not _reachable(netpair), "the watchdog lifted the fault of a live run"
        assert watchdog.find(out["run_id"]) == [out["watchdog_pid"]]
        pulse.stop()
        took = _seconds_until(lambda: _reachable(netpair), GRACE + 5)
        assert took is not None, f"JWKS still blocked {GRACE + 5} s after the heartbeat stopped"
        assert netpair.rules() == []
        assert wait_for(lambda: not k6mod.read_run(Path(mine["run_dir"]))["alive"], timeout=15), "the run's k6 runs on"
        assert k6mod.read_run(Path(other["run_dir"]))["alive"], "another run's k6 was stopped"
        assert wait_for(lambda: watchdog.find(out["run_id"]) == [], timeout=5)
        assert not (state_dir / f"{out['run_id']}.json").exists()
        log = (state_dir / f"{out['run_id']}.watchdog.log").read_text()
        assert "run dead (heartbeat" in log and "reverted" in log and f"stopped k6 run {mine['run_id']}" in log
        print(f"JWKS reachable {took:.1f} s after the heartbeat stopped (grace {GRACE:g} s)")
    finally:
        pulse.stop(remove=True)


@pytest.mark.e2e
@pytest.mark.netns
@pytest.mark.slow
def test_sigkill_of_the_holder_lifts_the_fault_within_grace(netpair, state_dir, tmp_path):
    hb = tmp_path / "hb"
    holder = subprocess.Popen([sys.executable, "-m", "chaosext.egress", "run", "--jwks-url", netpair.url(),
                               "--target", netpair.target, "--mode", "drop", "--duration", "120",
                               "--heartbeat", str(hb), "--heartbeat-grace", str(GRACE)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)})
    try:
        assert wait_for(lambda: bool(netpair.rules()) and hb.exists(), timeout=30), "the block never came up"
        assert wait_for(lambda: len(list(state_dir.glob("*.json"))) == 1, timeout=10)
        run_id = next(state_dir.glob("*.json")).stem
        assert wait_for(lambda: bool(watchdog.find(run_id)), timeout=10)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        took = _seconds_until(lambda: _reachable(netpair), GRACE + 5)
        assert took is not None, f"JWKS still blocked {GRACE + 5} s after SIGKILL of the holder"
        assert netpair.rules() == [] and wait_for(lambda: watchdog.find(run_id) == [], timeout=5)
        assert not (state_dir / f"{run_id}.json").exists()
        print(f"JWKS reachable {took:.1f} s after SIGKILL (grace {GRACE:g} s)")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


@pytest.mark.e2e
@pytest.mark.netns
@pytest.mark.slow
def test_the_deadline_lifts_the_fault_of_a_live_run_and_leaves_its_k6(netpair, state_dir, k6_dir, tmp_path):
    pulse = Heartbeat(str(tmp_path / "heartbeat"), interval=0.5).start()
    try:
        out = block_jwks_egress(netpair.url(), target=netpair.target, mode="reject", deadline_seconds=5,
                                verify_timeout_seconds=0.5, heartbeat_file=pulse.path, heartbeat_grace_seconds=GRACE,
                                k6_dir=str(k6_dir))
        mine = _idle_k6(tmp_path, out["run_id"])
        assert netpair.rules()
        assert wait_for(lambda: netpair.rules() == [], timeout=out["expires_at"] - time.time() + 8), \
            "the watchdog did not remove the rules at the deadline"
        assert _reachable(netpair)
        log = (state_dir / f"{out['run_id']}.watchdog.log").read_text()
        assert "deadline reached, reverted" in log
        assert k6mod.read_run(Path(mine["run_dir"]))["alive"], "a live run's k6 was stopped at the deadline"
    finally:
        pulse.stop(remove=True)


@pytest.mark.e2e
@pytest.mark.netns
def test_a_bad_heartbeat_grace_is_refused_before_any_rule_exists(netpair, state_dir, tmp_path):
    for config, error, message in (
            ({"HEARTBEAT_GRACE": "abc"}, ConfigError, r"HEARTBEAT_GRACE='abc' is not a number"),  # the setting
            ({"HEARTBEAT_GRACE": "-3"}, FaultError, r"HEARTBEAT_GRACE=.* give the seconds without a heartbeat")):
        with pytest.raises(error, match=message):
            block_jwks_egress(netpair.url(), target=netpair.target, deadline_seconds=30, verify_timeout_seconds=0.5,
                              heartbeat_file=str(tmp_path / "hb"), configuration=config)
    assert netpair.rules() == [] and not list(state_dir.glob("*.json"))
