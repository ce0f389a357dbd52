"""k6 is tied to its run: it dies when the process that started it dies, stop_k6 touches only its own run's k6, and
`chaosext restore --all` stops orphaned k6 runs. Real k6 against the stand-in service, real processes and signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chaosext.core import procs
from chaosext.load import k6 as k6mod
from chaosext.load.actions import start_k6, stop_k6

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STARTER = textwrap.dedent("""
    import json, sys, threading, time
    from chaosext.load.actions import start_k6
    box = {}
    def go():
        box["out"] = start_k6(rate=10, duration="120s", owner_run_id=sys.argv[1])
    if sys.argv[2] == "thread":  # started from a thread that then ends, like a background activity
        t = threading.Thread(target=go); t.start(); t.join()
    else:
        go()
    print(json.dumps(box["out"]), flush=True)
    time.sleep(600)
""")


def _wait(predicate, timeout: float) -> float | None:
    """Seconds until ``predicate`` held, or None if it did not within ``timeout`` (an upper bound, not a timing
    claim)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def _start_in_child(how: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-c", STARTER, "e0001c11", how], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        proc.wait(10)
        pytest.fail("the starter process did not start k6")
    return proc, json.loads(line)


def _k6_pid(run_dir: str) -> int:
    assert _wait(lambda: (Path(run_dir) / "k6.pid").exists(), 20), "the supervisor never recorded k6's pid"
    return json.loads((Path(run_dir) / "k6.pid").read_text())["pid"]


def _serving(started: dict) -> bool:
    """k6's REST API answers: k6 is past its start-up (and handles SIGINT itself)."""
    import socket

    host, port = started["address"].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def _kill_run(run_dir: str) -> None:
    try:
        rec = k6mod.read_run(Path(run_dir))
    except OSError:
        return
    for pid in (rec["pid"], rec.get("k6_pid") or 0):
        if pid and procs.process_alive(pid):
            os.killpg(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["main", "thread"])
def test_k6_dies_within_seconds_when_the_process_that_started_it_is_killed(k6_env: dict, how: str) -> None:
    starter, started = _start_in_child(how)
    try:
        k6_pid = _k6_pid(started["run_dir"])
        assert started["owner_run_id"] == "e0001c11"
        assert os.getpgid(k6_pid) == k6_pid, "k6 runs in a process group of its own"
        if how == "thread":  # the thread that started k6 has ended: k6 must still run (PDEATHSIG is per thread)
            time.sleep(2)
            assert k6mod.read_run(Path(started["run_dir"]))["alive"], "k6 died with the starting thread"
        starter.send_signal(signal.SIGKILL)
        starter.wait(10)
        took = _wait(lambda: not procs.process_alive(k6_pid) and not k6mod.read_run(Path(started["run_dir"]))["alive"],
                     20)
        assert took is not None, "k6 outlived the process that started it by 20 s"
        rec = k6mod.read_run(Path(started["run_dir"]))
        assert rec["exit_code"] == 105, f"k6 was stopped gracefully (SIGINT) first: {rec['exit_code']}"
        assert "is gone: stopping k6" in Path(started["log_file"]).read_text()
        print(f"k6 gone {took:.1f} s after SIGKILL of its starter ({how} thread)")
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait(10)
        _kill_run(started["run_dir"])


def test_a_killed_supervisor_takes_k6_with_it(k6_env: dict) -> None:
    started = start_k6(rate=10, duration="120s", owner_run_id="e0005aaa")
    try:
        k6_pid = _k6_pid(started["run_dir"])
        os.kill(started["pid"], signal.SIGKILL)
        assert _wait(lambda: not procs.process_alive(k6_pid), 10) is not None, "k6 outlived its supervisor"
        assert not k6mod.read_run(Path(started["run_dir"]))["alive"]
    finally:
        _kill_run(started["run_dir"])


def test_stop_k6_by_owner_stops_only_that_runs_k6(k6_env: dict) -> None:
    mine = start_k6(rate=10, duration="120s", owner_run_id="e00000aa")
    other = start_k6(rate=10, duration="120s", owner_run_id="e00000bb")
    try:
        assert _wait(lambda: _serving(mine) and _serving(other), 30) is not None
        out = stop_k6(owner_run_id="e00000aa", timeout=20)
        assert out["stopped"] == 1 and [r["run_id"] for r in out["runs"]] == [mine["run_id"]]
        assert out["exit_code"] == 105
        assert not k6mod.read_run(Path(mine["run_dir"]))["alive"]
        assert k6mod.read_run(Path(other["run_dir"]))["alive"], "another run's k6 was stopped"
        via_config = stop_k6(configuration={"chaosext_run_id": "e00000bb"}, timeout=20)
        assert via_config["stopped"] == 1 and not k6mod.read_run(Path(other["run_dir"]))["alive"]
    finally:
        _kill_run(mine["run_dir"])
        _kill_run(other["run_dir"])


def test_restore_all_stops_orphaned_k6_and_leaves_a_live_runs_k6(k6_env: dict, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for unshare -n (restore --all sweeps the target's rules: kept in a private netns)")
    stale, fresh = tmp_path / "stale.hb", tmp_path / "fresh.hb"
    stale.touch()
    fresh.touch()
    os.utime(stale, (time.time() - 60, time.time() - 60))
    orphan = start_k6(rate=10, duration="120s", owner_run_id="e000dead", heartbeat_file=str(stale))
    live = start_k6(rate=10, duration="120s", owner_run_id="e0001ffe", heartbeat_file=str(fresh))
    try:
        assert _wait(lambda: (Path(orphan["run_dir"]) / "k6.pid").exists(), 20)
        env = {**os.environ, "CHAOSEXT_STATE_DIR": str(tmp_path / "faults")}
        dry = subprocess.run(["unshare", "-n", sys.executable, "-m", "chaosext.cli", "restore", "--all", "--dry-run"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert f"would stop orphaned k6 run {orphan['run_id']}" in dry.stdout, dry.stdout + dry.stderr
        assert k6mod.read_run(Path(orphan["run_dir"]))["alive"], "--dry-run stopped k6"
        os.utime(fresh)
        out = subprocess.run(["unshare", "-n", sys.executable, "-m", "chaosext.cli", "restore", "--all"],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"stopped orphaned k6 run {orphan['run_id']}" in out.stdout and "heartbeat is " in out.stdout
        assert live["run_id"] not in out.stdout
        assert not k6mod.read_run(Path(orphan["run_dir"]))["alive"]
        assert k6mod.read_run(Path(live["run_dir"]))["alive"], "restore --all stopped a k6 whose run is alive"
    finally:
        _kill_run(orphan["run_dir"])
        _kill_run(live["run_dir"])
