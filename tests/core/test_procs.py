"""chaosext.core.procs with real processes and sockets: start times, liveness (zombies, reused pids), command-line
scans and free ports."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from chaosext.core import procs

#: a child that says it runs, then sleeps until killed; its extra arguments come after the script
SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"


def uptime_ticks() -> float:
    """Clock ticks since boot now (the unit of /proc/<pid>/stat's start time)."""
    with open("/proc/uptime") as fh:
        return float(fh.read().split()[0]) * os.sysconf("SC_CLK_TCK")


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child python process that sleeps, named by a unique marker argument; killed afterwards."""
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, f"procs-test-{uuid.uuid4().hex}", ""],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=5)
        if proc.stdout:
            proc.stdout.close()


def test_start_time_is_when_the_child_started() -> None:
    before = uptime_ticks()
    child = subprocess.Popen([sys.executable, "-c", SLEEPER], stdout=subprocess.DEVNULL)
    after = uptime_ticks()
    try:
        stat = procs.proc_stat(child.pid)
        assert stat is not None
        assert before - 1 <= stat.start_ticks <= after + 1
        assert procs.proc_start_time(child.pid) == str(stat.start_ticks)
        own = procs.proc_stat(os.getpid())
        assert own is not None and own.state == "R" and own.start_ticks <= stat.start_ticks
    finally:
        child.kill()
        child.wait(timeout=5)


def test_a_process_name_with_parentheses_does_not_shift_the_fields() -> None:
    """The command name (field 2) may contain ") S 1 ": the fields are read after its last parenthesis."""
    script = ("import ctypes, time; ctypes.CDLL(None).prctl(15, b'x) R 1 2 (y', 0, 0, 0); "  # PR_SET_NAME
              "print('named', flush=True); time.sleep(60)")
    before = uptime_ticks()
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"named\n"
        with open(f"/proc/{child.pid}/stat") as fh:
            assert "x) R 1 2 (y" in fh.read()
        stat = procs.proc_stat(child.pid)
        assert stat is not None and stat.state in ("R", "S")
        assert before - 1 <= stat.start_ticks <= uptime_ticks() + 1
    finally:
        child.kill()
        child.wait(timeout=5)


def test_alive_until_killed_then_not_and_the_zombie_is_reaped(sleeper: subprocess.Popen[bytes]) -> None:
    started = procs.proc_start_time(sleeper.pid)
    assert started is not None
    assert procs.process_alive(sleeper.pid)
    assert procs.process_alive(sleeper.pid, started)
    assert procs.process_alive(sleeper.pid, int(started)), "the lab records the ticks as a number"
    os.kill(sleeper.pid, signal.SIGKILL)
    assert wait_for(lambda: not procs.process_alive(sleeper.pid)), "a killed child still counts as alive"
    # process_alive reaped our zombie child: the pid is gone from /proc altogether
    assert procs.proc_stat(sleeper.pid) is None
    assert not procs.process_alive(sleeper.pid, started)


def test_a_pid_with_another_start_time_is_not_ours(sleeper: subprocess.Popen[bytes]) -> None:
    """A recorded pid that the kernel has since given to another process (other start time) is not alive for us."""
    started = procs.proc_start_time(sleeper.pid)
    assert started is not None
    assert not procs.process_alive(sleeper.pid, str(int(started) - 1))
    assert not procs.process_alive(sleeper.pid, int(started) + 1)


@pytest.mark.parametrize("pid", [0, -1, 2**22 + 1])
def test_no_such_process(pid: int) -> None:
    assert not procs.process_alive(pid)
    assert procs.proc_stat(pid) is None
    assert procs.proc_start_time(pid) is None
    assert procs.cmdline(pid) == []


def test_cmdline_and_find_processes_by_a_marker(sleeper: subprocess.Popen[bytes]) -> None:
    argv = procs.cmdline(sleeper.pid)
    marker = argv[-1]
    assert marker.startswith("procs-test-")
    assert argv == [sys.executable, "-c", SLEEPER, marker], "empty arguments are left out"
    assert procs.find_processes(lambda a: marker in a) == [sleeper.pid]
    assert os.getpid() not in procs.find_processes(lambda a: True), "the scanning process never finds itself"
    sleeper.kill()
    sleeper.wait(timeout=5)
    assert procs.find_processes(lambda a: marker in a) == []


def test_a_zombie_has_no_command_line_and_is_never_found(sleeper: subprocess.Popen[bytes]) -> None:
    marker = procs.cmdline(sleeper.pid)[-1]
    os.kill(sleeper.pid, signal.SIGKILL)
    assert wait_for(lambda: (procs.proc_stat(sleeper.pid) or procs.ProcStat("?", 0)).state == "Z")
    assert procs.cmdline(sleeper.pid) == []
    assert procs.find_processes(lambda a: marker in a) == []


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, port))
    sock.listen()
    return sock


def test_a_free_port_can_be_listened_on() -> None:
    port = procs.free_port()
    assert 1024 <= port <= 65535
    with _listen("127.0.0.1", port):
        assert not procs.port_free("127.0.0.1", port)
    assert procs.port_free("127.0.0.1", port), "a closed listener's port (TIME_WAIT at most) is free again"


def test_free_ports_are_distinct_and_each_bindable() -> None:
    hosts = ["127.0.0.1"] * 6 + ["127.0.0.2"]
    ports = procs.free_ports(hosts)
    assert len(ports) == len(set(ports)) == len(hosts)
    socks = [_listen(h, p) for h, p in zip(hosts, ports, strict=True)]
    for sock in socks:
        sock.close()


def test_free_port_on_ipv6_loopback() -> None:
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6 on this host")
    try:
        port = procs.free_port("::1")
    except OSError:
        pytest.skip("no ::1 on this host")
    with _listen("::1", port):
        assert not procs.port_free("::1", port)


def test_a_process_just_execd_is_recognised_once_its_command_line_shows(sleeper: subprocess.Popen[bytes],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after Popen returns, /proc can show no command line yet (the kernel has not set up the new argv): the
    recorded process is still recognised once it does, not taken for gone (a k6 run read as dead the moment it
    started); a process that never shows one (or stops being the recorded one) is not."""
    real, empty_reads = procs.cmdline, [2]

    def exec_in_progress(pid: int) -> list[str]:
        if empty_reads[0]:
            empty_reads[0] -= 1
            return []
        return real(pid)

    monkeypatch.setattr(procs, "cmdline", exec_in_progress)
    start = procs.proc_start_time(sleeper.pid)
    assert procs.is_process(sleeper.pid, start, lambda argv: "time.sleep(60)" in " ".join(argv))
    assert empty_reads == [0]

    monkeypatch.setattr(procs, "cmdline", lambda pid: [])
    assert not procs.is_process(sleeper.pid, start, lambda argv: True)
