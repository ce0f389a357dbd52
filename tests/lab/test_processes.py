"""How the lab tells its own processes from any other (command line naming the state directory, recorded start
time) and stops them, with stand-in processes instead of a lab."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaosext.core import procs
from chaosext.lab import processes

#: a process that looks like a lab's Authority to the scanner (module name + a path in the state directory)
FAKE = "import time; print('ready', flush=True); time.sleep(60)"


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``spawn(*args)``: a sleeping python process with these extra arguments, in a session of its own."""
    started: list[subprocess.Popen[bytes]] = []

    def make(*args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", FAKE, *args], stdout=subprocess.PIPE, start_new_session=True)
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        return proc

    yield make
    for proc in started:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()


def test_a_lab_command_line_names_the_state_directory_and_a_lab_program(tmp_path: Path) -> None:
    sd = str(tmp_path / "lab")
    assert processes.is_lab_cmdline(["python", "-m", "chaosext.lab.service", "--audit-file", f"{sd}/audit.jsonl"], sd)
    assert processes.is_lab_cmdline(["prometheus", f"--config.file={sd}/prometheus/prometheus.yml"], sd)
    assert processes.is_lab_cmdline(["envoy", "--config-path", f"{sd}/envoy/envoy.json"], sd)
    assert not processes.is_lab_cmdline(["python", "-m", "chaosext.lab.service", f"{sd}2/audit.jsonl"], sd), \
        "another lab whose state directory starts with the same name"
    assert not processes.is_lab_cmdline(["vim", f"{sd}/state.json"], sd), "not a lab program"


def test_find_is_ours_and_terminate_touch_only_this_labs_processes(
        tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    sd = str(tmp_path / "lab")
    ours = spawn("chaosext.lab.authority", "--key-dir", f"{sd}/keys")
    other_lab = spawn("chaosext.lab.authority", "--key-dir", f"{tmp_path}/other/keys")
    not_lab = spawn("--key-dir", f"{sd}/keys")
    assert processes.find_lab_processes(sd) == [ours.pid]
    ticks = procs.proc_stat(ours.pid)
    assert ticks is not None
    assert processes.is_ours(ours.pid, sd, ticks.start_ticks)
    assert not processes.is_ours(ours.pid, sd, ticks.start_ticks + 1), "a reused pid (other start time)"
    assert not processes.is_ours(not_lab.pid, sd) and not processes.is_ours(0, sd)
    assert processes.recorded_alive({"pid": ours.pid, "start_ticks": ticks.start_ticks}, Path(sd))

    began = time.monotonic()
    left = processes.terminate([ours.pid, other_lab.pid, not_lab.pid], sd, grace=5.0)
    assert left == [] and time.monotonic() - began < 5.0, "SIGTERM stops it (no SIGKILL after the grace)"
    assert procs.proc_stat(ours.pid) is None, "stopped, and reaped as our child"
    assert other_lab.poll() is None and not_lab.poll() is None, "another lab's or a foreign process was signalled"
    assert processes.find_lab_processes(sd) == []
    health = processes.health({"pid": ours.pid, "health": "http://127.0.0.1:9/healthz"}, Path(sd))
    assert (health.alive, health.healthy, health.detail) == (False, False, "process not running")


def test_health_of_a_running_process_without_a_health_url(
        tmp_path: Path, spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    sd = str(tmp_path / "lab")
    proc = spawn("chaosext.lab.service", "--audit-file", f"{sd}/audit.jsonl")
    health = processes.health({"pid": proc.pid}, Path(sd))
    assert (health.alive, health.healthy, health.detail) == (True, False, "no health URL in state.json")
    port = procs.free_port()
    health = processes.health({"pid": proc.pid, "health": f"http://127.0.0.1:{port}/healthz"}, Path(sd))
    assert health.alive and not health.healthy and health.detail.startswith("unreachable")
