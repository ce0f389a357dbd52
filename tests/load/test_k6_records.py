"""Issue 27, item 3: `chaosext restore --all` never signals a process group on a k6 record's word alone. It used to
trust the ``pgid`` of any k6 ``run.json`` under the run base: a forged record with the user's own live pid and a
victim's pgid made root SIGKILL the victim's group. A record is now trusted only when it is root's own file in a
root-safe directory, and a process is signalled only while it is the recorded k6 supervisor or k6 (pid, start time
and command line), never a group the record names."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaosext.core.procs import proc_start_time
from tests.conftest import Attacker

pytestmark = [pytest.mark.e2e, pytest.mark.netns]  # restore --all runs in a private network namespace
RUN_ID = "6b6b6b6b"


def _record(run_dir: Path, pid: int, pgid: int) -> dict[str, Any]:
    return {"run_id": RUN_ID, "pid": pid, "pgid": pgid, "start_time": proc_start_time(pid), "owner_run_id": "",
            "owner_pid": 0, "heartbeat_file": "", "supervisor": "chaosext.load.runner", "address": "127.0.0.1:1",
            "summary_file": str(run_dir / "summary.json"), "log_file": str(run_dir / "k6.log"),
            "exit_file": str(run_dir / "exit_code"), "run_dir": str(run_dir), "started_at": 1.0}


def _restore_all(k6_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`chaosext restore --all --k6-dir ...` as root, in a private network namespace (its iptables sweep finds
    nothing there, and touches nothing of this machine)."""
    env = {**os.environ, "CHAOSEXT_STATE_DIR": str(tmp_path / "faults")}
    return subprocess.run(["unshare", "--net", sys.executable, "-m", "chaosext.cli", "restore", "--all", "--k6-dir",
                           str(k6_dir)], capture_output=True, text=True, timeout=120, check=False, env=env)


def test_a_forged_k6_record_never_makes_root_kill_another_process_group(attacker: Attacker, tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)  # root's process group
    own = attacker.popen(["sleep", "300"])  # the user's own live process (setpriv execs sleep: same pid)
    try:
        run_dir = attacker.home / "run" / "k6" / RUN_ID
        forged = json.dumps(_record(run_dir, own.pid, victim.pid))
        attacker.sh(f"mkdir -p run/k6/{RUN_ID} && cat > run/k6/{RUN_ID}/run.json <<'EOF'\n{forged}\nEOF")
        out = _restore_all(attacker.home / "run" / "k6", tmp_path)
        victim_alive = victim.poll() is None
    finally:
        for proc in (victim, own):
            proc.kill()
            proc.wait(timeout=10)
    assert victim_alive, f"root signalled the group a forged record named: {out.stdout}{out.stderr}"
    assert out.returncode == 2 and f"belongs to uid {attacker.uid}" in out.stderr, out.stderr


def test_a_record_naming_a_process_that_is_not_its_k6_is_never_signalled(tmp_path: Path) -> None:
    """Even root's own record (a stale one, or one whose pid was reused) is acted on only while its pid is still
    the recorded supervisor or k6: command line and start time, not only the pid."""
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        run_dir = tmp_path / "k6" / RUN_ID
        run_dir.mkdir(parents=True, mode=0o700)
        (tmp_path / "k6").chmod(0o700)
        (run_dir / "run.json").write_text(json.dumps(_record(run_dir, victim.pid, victim.pid)))
        (run_dir / "run.json").chmod(0o600)
        out = _restore_all(tmp_path / "k6", tmp_path)
        victim_alive = victim.poll() is None
    finally:
        victim.kill()
        victim.wait(timeout=10)
    assert victim_alive, f"root signalled a process that is not the record's k6: {out.stdout}{out.stderr}"
    assert out.returncode == 0 and "orphaned k6" not in out.stdout, out.stdout + out.stderr
