"""Issue 27, item 10 (k6) and issue 22 item 7: k6 and its supervisor get a minimal environment (an explicit allow-list
plus the client credentials the script needs), never root's whole one; k6's REST API listens on loopback only; and
every file of the k6 run directory is 0600 (directories 0700), also what k6 itself writes (its summary)."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from chaosext.load import k6 as k6mod
from chaosext.load.actions import start_k6, stop_k6
from chaosext.load.probes import k6_live_metrics

pytestmark = pytest.mark.e2e
ROOTS_SECRET = "roots-own-secret-not-for-k6"


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def test_k6_gets_a_minimal_environment_and_writes_only_private_files(k6_env: dict,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_PASSWORD", ROOTS_SECRET)  # a backend credential of root's environment
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ROOTS_SECRET)
    started = start_k6(rate=20, duration="60s", owner_run_id="e0000002")
    run_dir = Path(started["run_dir"])
    try:
        assert started["address"].startswith("127.0.0.1:"), "k6's REST API must listen on loopback only"
        for _ in range(100):  # the supervisor records k6's pid a moment after it starts
            if (run_dir / "k6.pid").exists():
                break
            time.sleep(0.05)
        k6_pid = k6mod.read_run(run_dir)["k6_pid"]
        for pid in (started["pid"], k6_pid):
            env = _environ(pid)
            assert ROOTS_SECRET.encode() not in env, f"pid {pid} inherited root's secrets"
        assert b"TOKEN_CLIENT_SECRET=fake-secret" in _environ(k6_pid)  # what the script needs, given on purpose
        for _ in range(100):  # let k6 get going (its REST API answers with requests made), so it writes a summary
            live = k6_live_metrics()
            if live["reachable"] and live["http_reqs"]:
                break
            time.sleep(0.2)
    finally:
        stopped = stop_k6(owner_run_id="e0000002", timeout=20)
    assert stopped["stopped"] == 1 and stopped["runs"][0]["summary_written"]
    for path in [run_dir.parent, run_dir, *run_dir.iterdir()]:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} is {mode:o}"
