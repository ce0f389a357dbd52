"""One run per target: the lock file, real processes racing for it, and stale-lock takeover."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chaosext.egress.base import make_spec, save_record
from chaosext.safety import lock
from tests.conftest import Attacker

URL = "http://127.0.0.2:8440/.well-known/jwks.json"


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "faults"
    monkeypatch.setenv("CHAOSEXT_STATE_DIR", str(d))
    return d


def test_key_is_normalised_to_target_and_jwks_host_port() -> None:
    host = socket.gethostname()
    a = lock.lock_key("iptables", "netns:a", "http://Auth.Example:80/.well-known/jwks.json")
    assert a == lock.lock_key("iptables", " netns:a ", "http://auth.example/other") \
        == f"iptables|netns:a|auth.example:80@{host}"  # no namespace a here: the host alone
    assert a != lock.lock_key("iptables", "netns:b", "http://auth.example/x")
    assert a != lock.lock_key("iptables", "netns:a", "https://auth.example/x")  # port 443
    own_netns = os.stat("/proc/self/ns/net").st_ino
    assert lock.lock_key("iptables", "local", "http://[fd00::2]:8440/j") \
        == f"iptables|local|[fd00::2]:8440@{host}/net:{own_netns}"
    assert lock.lock_key("envoy", "http://127.0.0.1:9901", URL).endswith(f"@{host}/net:{own_netns}")
    # targets every machine shares carry no host: the cluster Lease excludes the other machines
    assert lock.lock_key("envoy", "http://envoy-admin.mesh:9901", URL) == "envoy|http://envoy-admin.mesh:9901|" \
        "127.0.0.2:8440"
    for via, target in (("k8s-networkpolicy", "tenancy/app=policy"), ("istio", "tenancy/app=policy"),
                        ("iptables", "k8s-pod:tenancy/app=policy")):
        assert lock.lock_key(via, target, URL) == f"{via}|{target}|127.0.0.2:8440"


def _in_netns(netns: str, code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", textwrap.dedent(code), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})


@pytest.mark.e2e
@pytest.mark.netns
def test_labs_in_two_network_namespaces_do_not_block_each_other_but_one_namespace_does(state_dir: Path) -> None:
    """Two `chaos run`s, each inside its own namespace with FAULT_TARGET=local and the same JWKS address (the lab's
    127.0.0.2:8440), share one state dir (root's HOME) and must both run; a second run inside the same namespace is
    refused. Before the key carried the namespace, the second lab's run was refused."""
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    from tests.experiment.experiment_util import Netns

    hold = """
        import sys
        from chaosext.safety import lock
        try:
            lock.acquire(lock.lock_key("iptables", "local", sys.argv[1]), sys.argv[2])
            print("won", flush=True)
        except lock.LockHeld as exc:
            print("held:", exc, flush=True)
        sys.stdin.read()
    """
    first, second = Netns(), Netns()
    procs: list[subprocess.Popen] = []
    try:
        for ns, run_id in ((first, "aaaa0001"), (second, "bbbb0002"), (first, "aaaa0003")):
            procs.append(_in_netns(ns.name, hold, URL, run_id))
            assert procs[-1].stdout
            answers = procs[-1].stdout.readline().strip()
            if run_id == "aaaa0003":
                assert answers.startswith("held:") and "in use by run aaaa0001" in answers, answers
            else:
                assert answers == "won", answers
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
        first.close()
        second.close()


def test_second_acquire_is_refused_naming_the_holder_and_changes_nothing(state_dir: Path) -> None:
    key = lock.lock_key("iptables", "local", URL)
    held = lock.acquire(key, "aaaa1111", {"ends_at": 1_900_000_000})
    path = held.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    before = path.read_bytes()
    rec = json.loads(before)
    assert rec["run_id"] == "aaaa1111" and rec["pid"] == os.getpid() and rec["pid_start_time"]
    with pytest.raises(lock.LockHeld) as err:
        lock.acquire(key, "bbbb2222", {"ends_at": 1_900_000_100})
    msg = str(err.value)
    for part in ("aaaa1111", f"pid {os.getpid()}", "started 20", "ends at 2030-03-17T17:46:40Z", "Nothing was changed",
                 "restore --run-id aaaa1111"):
        assert part in msg, msg
    assert err.value.holder["run_id"] == "aaaa1111"
    assert path.read_bytes() == before
    other = lock.acquire(lock.lock_key("iptables", "netns:other", URL), "bbbb2222")  # another target: free
    assert other.release()
    assert held.release() and not path.exists()
    assert not held.release(), "releasing twice is a no-op"


def test_release_and_extend_touch_only_the_owners_lock() -> None:
    key = lock.lock_key("iptables", "local", URL)
    mine = lock.acquire(key, "aaaa1111")
    impostor = lock.TargetLock(key=key, run_id="bbbb2222", path=mine.path, record={**mine.record, "run_id": "bbbb2222"})
    assert impostor.release() is False and mine.path.exists()
    with pytest.raises(lock.LockHeld, match="no longer held by run bbbb2222 but by run aaaa1111"):
        impostor.extend(5.0)
    mine.extend(1_900_000_500)
    assert lock.read(key)["ends_at"] == 1_900_000_500
    assert mine.release()


def _holder(key: str, run_id: str, ready: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time, pathlib
        from chaosext.safety import lock
        lock.acquire({key!r}, {run_id!r}, {{"ends_at": time.time() + 60}})
        pathlib.Path({str(ready)!r}).write_text("ok")
        time.sleep(600)
    """)
    return subprocess.Popen([sys.executable, "-c", code])


def _wait_file(path: Path, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def test_a_lock_whose_owner_was_killed_and_left_no_fault_is_taken_over_and_said_so(tmp_path: Path) -> None:
    key = lock.lock_key("iptables", "local", URL)
    proc = _holder(key, "dead0a01", tmp_path / "ready")
    try:
        _wait_file(tmp_path / "ready")
        with pytest.raises(lock.LockHeld, match="in use by run dead0a01"):
            lock.acquire(key, "11fe0002")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        taken = lock.acquire(key, "11fe0002")
        assert taken.took_over and taken.took_over["run_id"] == "dead0a01"
        assert "took over the stale lock" in taken.message and "dead0a01" in taken.message
        assert lock.read(key)["run_id"] == "11fe0002"
        assert taken.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_dead_owner_whose_fault_is_still_recorded_keeps_the_lock(tmp_path: Path) -> None:
    key = lock.lock_key("iptables", "local", URL)
    proc = _holder(key, "dead0a03", tmp_path / "ready")
    try:
        _wait_file(tmp_path / "ready")
    finally:
        proc.kill()
        proc.wait(10)
    save_record(make_spec(URL, "iptables", "local", "drop", 60, run_id="dead0a03"), status="active")
    with pytest.raises(lock.LockHeld, match=r"process is gone but whose fault is still in place .*restore --run-id "
                                            r"dead0a03"):
        lock.acquire(key, "11fe0004")
    assert lock.read(key)["run_id"] == "dead0a03"


def test_a_reused_pid_does_not_keep_a_lock(state_dir: Path) -> None:
    key = lock.lock_key("iptables", "local", URL)
    held = lock.acquire(key, "01d00005")
    rec = json.loads(held.path.read_text())
    rec["pid"] = os.getppid()  # a live process, but not the one that took the lock (start time differs)
    rec["pid_start_time"] = "1"
    held.path.write_text(json.dumps(rec))
    taken = lock.acquire(key, "0e000006")
    assert taken.took_over["run_id"] == "01d00005"
    taken.release()


def test_processes_racing_for_one_target_exactly_one_wins(tmp_path: Path) -> None:
    key = lock.lock_key("iptables", "netns:race", URL)
    go = tmp_path / "go"  # every process waits, started and ready, until this file exists, then acquires
    code = textwrap.dedent("""
        import os, sys, time
        from chaosext.safety import lock
        key, run_id, go = sys.argv[1], sys.argv[2], sys.argv[3]
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.001)
        try:
            lock.acquire(key, run_id)
            print("won", flush=True)
        except lock.LockHeld as exc:
            print("held", flush=True)
        sys.stdin.read()  # keep holding until the test has every answer
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, key, f"aace{i:04d}", str(go)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for i in range(8)]
    try:
        assert [p.stdout.readline().strip() for p in procs if p.stdout] == ["ready"] * 8
        go.touch()
        outs = [p.stdout.readline().strip() for p in procs if p.stdout]
        for p in procs:
            p.communicate(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    assert sorted(outs) == ["held"] * 7 + ["won"], outs
    winner = f"aace{outs.index('won'):04d}"
    assert lock.read(key)["run_id"] == winner


def test_another_users_watchdog_look_alike_does_not_keep_a_stale_lock(tmp_path: Path, attacker: Attacker) -> None:
    """Issue 27, item 10: any user could start a process whose command line looks like the dead run's watchdog
    (here: a module named chaosext.egress.watchdog of its own, run with exactly the watchdog's arguments) and so
    block every takeover. Only a watchdog of the user chaosext runs as counts."""
    key = lock.lock_key("iptables", "local", URL)
    proc = _holder(key, "dead0a07", tmp_path / "ready")
    try:
        _wait_file(tmp_path / "ready")
    finally:
        proc.kill()
        proc.wait(10)
    attacker.sh("mkdir -p fake/chaosext/egress && touch fake/chaosext/__init__.py fake/chaosext/egress/__init__.py"
                " && echo 'import time; time.sleep(300)' > fake/chaosext/egress/watchdog.py")
    look_alike = attacker.popen(["/usr/bin/python3", "-m", "chaosext.egress.watchdog", "--run-id", "dead0a07"],
                                cwd=attacker.home, env={"PYTHONPATH": str(attacker.home / "fake")})
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{look_alike.pid}/cmdline").read_bytes().split(b"\0")[1:5] != [
                b"-m", b"chaosext.egress.watchdog", b"--run-id", b"dead0a07"]:  # setpriv has exec'd python
            assert time.monotonic() < deadline and look_alike.poll() is None, "the look-alike did not start"
            time.sleep(0.05)
        taken = lock.acquire(key, "11fe0008")
        assert taken.took_over and taken.took_over["run_id"] == "dead0a07"
        assert taken.release()
    finally:
        look_alike.kill()
        look_alike.wait(10)
