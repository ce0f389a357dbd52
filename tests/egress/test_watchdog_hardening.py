"""Issue 27, item 10 (the watchdog): no fault spec in its argv (``ps`` showed every URL and option), a minimal
environment instead of root's whole one, SIGTERM lifts the fault instead of leaving it until the deadline, and the
heartbeat's silence is measured on the monotonic clock (a wall clock that jumps must not lift a live run's fault).
The fault here is real: iptables in a private network namespace."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaosext.core.procs import process_alive
from chaosext.egress.actions import block_jwks_egress, restore
from tests.egress.egress_util import chaosext_rules, kill_watchdogs, wait_for
from tests.nsutil import fresh_netns

URL = "http://10.213.252.2:8440/.well-known/jwks.json"
ROOTS_SECRET = "roots-own-secret-not-for-the-watchdog"


@pytest.fixture
def netns() -> Iterator[str]:
    with fresh_netns("cxwd") as name:
        try:
            yield name
        finally:
            kill_watchdogs(name)


def _block(netns: str) -> dict[str, object]:
    return block_jwks_egress(jwks_url=URL, via="iptables", target=f"netns:{netns}", deadline_seconds=120,
                             verify=False, run_id="c0ffee01", driver_options={"spec_marker": "only-on-stdin"})


@pytest.mark.e2e
@pytest.mark.netns
def test_the_watchdog_keeps_the_spec_out_of_argv_and_gets_a_minimal_environment(
        netns: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_PASSWORD", ROOTS_SECRET)
    pid = int(str(_block(netns)["watchdog_pid"]))
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"only-on-stdin" not in argv and b"jwks" not in argv, f"the fault spec is in argv: {argv!r}"
        assert ROOTS_SECRET.encode() not in Path(f"/proc/{pid}/environ").read_bytes(), "root's whole environment"
    finally:
        restore("iptables", f"netns:{netns}", all_on_target=True, verify=False)


@pytest.mark.e2e
@pytest.mark.netns
def test_sigterm_makes_the_watchdog_lift_the_fault(netns: str, state_dir: Path) -> None:
    pid = int(str(_block(netns)["watchdog_pid"]))
    try:
        assert chaosext_rules(netns)
        os.kill(pid, signal.SIGTERM)  # an operator, a shutdown ...
        assert wait_for(lambda: not chaosext_rules(netns), timeout=15), "SIGTERM left the fault in place"
        assert not (state_dir / "c0ffee01.json").exists(), "its record was not removed with the fault"
    finally:
        restore("iptables", f"netns:{netns}", all_on_target=True, verify=False)


@pytest.mark.e2e
@pytest.mark.netns
def test_restore_lifts_the_fault_once_and_stands_the_watchdog_down(netns: str, state_dir: Path) -> None:
    """restore reverts, then stands the watchdog down (SIGUSR1): it exits without a second revert of its own (at 1,000
    targets that would double every transaction) and is gone when restore returns."""
    pid = int(str(_block(netns)["watchdog_pid"]))
    restore("iptables", f"netns:{netns}", run_id="c0ffee01", verify=False)
    assert not chaosext_rules(netns) and not process_alive(pid)
    log = (state_dir / "c0ffee01.watchdog.log").read_text()
    assert "stood down: restore lifted the fault itself" in log and "reverted" not in log, log


def test_a_wall_clock_jump_does_not_make_a_live_heartbeat_look_dead(tmp_path: Path) -> None:
    """The clock jumped: the heartbeat's mtime is an hour "old" by the wall clock, but it keeps changing. On the
    monotonic clock the run is alive; only a heartbeat that stops changing for the grace is dead."""
    from chaosext.egress.watchdog import Pulse

    beat = tmp_path / "heartbeat"
    beat.touch(mode=0o600)
    now = [1000.0]  # the watchdog's monotonic clock, in the test's hand
    os.utime(beat, (1.0, 1.0))  # "an hour ago" and more
    pulse = Pulse(str(beat), grace=10.0, clock=lambda: now[0])
    for second in range(2, 40, 2):  # the run beats every 2 s; the wall clock stays far behind
        now[0] += 2
        os.utime(beat, (float(second), float(second)))
        assert pulse.stale() == "", f"a beating run was declared dead after {second} s"
    now[0] += 11  # it stops beating
    assert "silent for 11.0 s" in pulse.stale()
