"""The iptables fault with real iptables/ip6tables in network namespaces the tests create (see conftest.py)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from chaosext.egress import watchdog
from chaosext.egress.actions import block_jwks_egress, restore_jwks_egress
from chaosext.egress.base import FaultError
from chaosext.egress.probes import egress_block_active, jwks_reachable
from tests.egress.egress_util import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

FAST = {"verify_timeout_seconds": 0.5}


def _block(pair, mode="drop", **kw):
    args = {"jwks_url": pair.url(), "target": pair.target, "mode": mode, "deadline_seconds": 60, **FAST, **kw}
    return block_jwks_egress(**args)


@pytest.mark.parametrize("mode,error", [("drop", "timeout"), ("reject", "refused")])
def test_block_fails_the_way_the_mode_says_and_restore_brings_it_back(netpair, mode, error):
    assert jwks_reachable(netpair.url(), netpair.target, 2.0)["reachable"] is True

    out = _block(netpair, mode)

    assert out["verification"]["blocked"] is True
    probe = jwks_reachable(netpair.url(), netpair.target, 0.5)
    assert probe["reachable"] is False and probe["error"] == error
    active = egress_block_active(netpair.url(), "iptables", netpair.target)
    assert active["active"] is True and active["faults"][0]["run_id"] == out["run_id"]
    rules = netpair.rules()
    assert rules[1].startswith(f"iptables -A OUTPUT -m comment --comment \"chaosext:{out['run_id']}\"")
    assert all(f"chaosext:{out['run_id']}" in r for r in rules if " -A " in r)

    restored = restore_jwks_egress(netpair.url(), target=netpair.target)

    assert restored["restored"][0]["run_id"] == out["run_id"]
    assert restored["restored"][0]["verification"]["blocked"] is False
    assert jwks_reachable(netpair.url(), netpair.target, 2.0)["reachable"] is True
    assert netpair.rules() == []
    assert egress_block_active(netpair.url(), "iptables", netpair.target)["active"] is False
    assert watchdog.find(out["run_id"]) == []


def test_only_the_jwks_port_is_blocked(netpair):
    _block(netpair, "reject")
    other = netpair.start_in_client(sys.executable, "-c", "import socket,sys; s=socket.socket(); s.settimeout(1);"
                                    f"s.connect(('{netpair.v4}', {netpair.port + 1}))")
    assert "ConnectionRefused" in other.communicate(timeout=20)[1]  # a normal refusal: the server has no such port
    rules = netpair.rules()
    assert any(f"--dport {netpair.port} " in r for r in rules)
    assert not any("--dport 53" in r for r in rules)


def test_blocking_twice_leaves_one_rule_set_and_restoring_twice_succeeds(netpair):
    first = _block(netpair, "reject")
    rules = netpair.rules()
    second = _block(netpair, "reject")

    assert second["run_id"] == first["run_id"] and second["reused"] is True
    assert netpair.rules() == rules
    assert len(watchdog.find(first["run_id"])) == 1

    assert restore_jwks_egress(netpair.url(), target=netpair.target)["restored"]
    again = restore_jwks_egress(netpair.url(), target=netpair.target)
    assert again["restored"] == [] and again["left"] == []
    assert netpair.rules() == []


def test_blocking_with_another_mode_while_active_is_refused(netpair):
    _block(netpair, "reject")
    rules = netpair.rules()
    with pytest.raises(FaultError, match="already active"):
        _block(netpair, "drop")
    assert netpair.rules() == rules


def test_the_kernel_deadline_lifts_the_block_with_no_chaosext_process_alive(netpair, state_dir):
    out = _block(netpair, "reject", deadline_seconds=2, use_watchdog=False)
    assert out["watchdog_pid"] == 0 and watchdog.find(out["run_id"]) == []
    assert jwks_reachable(netpair.url(), netpair.target, 0.5)["error"] == "refused"

    assert wait_for(lambda: jwks_reachable(netpair.url(), netpair.target, 0.5)["reachable"], timeout=8)
    assert any("--datestop" in r for r in netpair.rules())  # still there: it was the kernel that stopped matching

    restore_jwks_egress(netpair.url(), target=netpair.target)
    assert netpair.rules() == []


def test_the_watchdog_removes_the_chain_after_the_parent_was_sigkilled(netpair, state_dir):
    code = (
        "import json,sys,time\n"
        "from chaosext.egress.actions import block_jwks_egress\n"
        f"out = block_jwks_egress({netpair.url()!r}, target={netpair.target!r}, mode='reject', deadline_seconds=2,"
        " verify_timeout_seconds=0.5)\n"
        "print(json.dumps(out), flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)})
    try:
        out = json.loads(parent.stdout.readline())
        assert netpair.rules()
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        assert watchdog.find(out["run_id"]) == [out["watchdog_pid"]]
        assert wait_for(lambda: netpair.rules() == [], timeout=12)
        assert wait_for(lambda: watchdog.find(out["run_id"]) == [], timeout=5)
        assert not (state_dir / f"{out['run_id']}.json").exists()
        assert "reverted" in (state_dir / f"{out['run_id']}.watchdog.log").read_text()
    finally:
        if parent.poll() is None:
            parent.kill()


def test_restore_all_finds_an_orphaned_chain_without_any_record(netpair, state_dir):
    out = _block(netpair, "drop")
    (state_dir / f"{out['run_id']}.json").unlink()

    cli = subprocess.run([sys.executable, "-m", "chaosext.cli", "restore", "--all", "--target", netpair.target],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)})

    assert cli.returncode == 0, cli.stderr
    assert f"removed fault {out['run_id']}" in cli.stdout
    assert netpair.rules() == []
    assert watchdog.find(out["run_id"]) == []
    again = subprocess.run([sys.executable, "-m", "chaosext.cli", "restore", "--all", "--target", netpair.target],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing to restore" in again.stdout


def test_unrecorded_restore_sweeps_only_faults_on_its_own_jwks_endpoint(netpair, state_dir):
    """A rollback after the method already restored finds no record; its sweep must not remove a fault another
    run made against another endpoint on the same target. The panic button (--all) still removes everything."""
    other_url = f"http://{netpair.v4}:{netpair.port + 1}/.well-known/jwks.json"
    mine, other = _block(netpair, "reject"), _block(netpair, "reject", jwks_url=other_url)
    for out in (mine, other):
        (state_dir / f"{out['run_id']}.json").unlink()

    swept = restore_jwks_egress(netpair.url(), target=netpair.target)

    assert [r["run_id"] for r in swept["restored"]] == [mine["run_id"]]
    assert jwks_reachable(netpair.url(), netpair.target, 2.0)["reachable"] is True
    left = netpair.rules()
    assert left and all(mine["run_id"] not in r for r in left)
    assert any(f"chaosext:{other['run_id']}" in r for r in left)
    panic = restore_jwks_egress(target=netpair.target)
    assert [r["run_id"] for r in panic["restored"]] == [other["run_id"]] and netpair.rules() == []


def test_restore_dry_run_removes_nothing(netpair, state_dir):
    out = _block(netpair, "reject")
    cli = subprocess.run([sys.executable, "-m", "chaosext.cli", "restore", "--all", "--dry-run", "--target",
                          netpair.target], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)})
    assert cli.returncode == 0 and f"would remove fault {out['run_id']}" in cli.stdout
    assert f"-X CHAOSEXT-{out['run_id']}" in cli.stdout
    assert netpair.rules() != []


def test_ipv6_and_every_a_and_aaaa_record_are_blocked(netpair, monkeypatch):
    records = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (netpair.v6, netpair.port, 0, 0)),
               (socket.AF_INET, socket.SOCK_STREAM, 6, "", (netpair.v4, netpair.port)),
               (socket.AF_INET, socket.SOCK_STREAM, 6, "", (netpair.v4, netpair.port))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: records)
    url = f"http://jwks.example.test:{netpair.port}/.well-known/jwks.json"

    out = block_jwks_egress(url, target=netpair.target, mode="reject", deadline_seconds=60, **FAST)

    assert out["addresses"] == [netpair.v4, netpair.v6]
    rules = netpair.rules()
    assert any(r.startswith("ip6tables -A CHAOSEXT") and f"-d {netpair.v6}/128" in r for r in rules)
    assert any(r.startswith("iptables -A CHAOSEXT") and f"-d {netpair.v4}/32" in r for r in rules)
    assert sum(" -A CHAOSEXT" in r for r in rules) == 2
    for addr in (netpair.v4, netpair.v6):
        assert jwks_reachable(netpair.url(addr), netpair.target, 0.5)["error"] == "refused"

    restore_jwks_egress(url, target=netpair.target)
    assert netpair.rules() == []
    for addr in (netpair.v4, netpair.v6):
        assert jwks_reachable(netpair.url(addr), netpair.target, 2.0)["reachable"] is True


def test_pid_target_blocks_in_the_network_namespace_of_that_process(netpair):
    sleeper = netpair.start_in_client("sleep", "60")
    assert wait_for(lambda: _netns_of(sleeper.pid) != _netns_of(os.getpid()), timeout=5)
    target = f"pid:{sleeper.pid}"  # ip netns exec execs sleep in place: same pid

    out = block_jwks_egress(netpair.url(), target=target, mode="reject", deadline_seconds=60, **FAST)

    assert out["verification"]["blocked"] is True
    assert jwks_reachable(netpair.url(), netpair.target, 0.5)["error"] == "refused"  # same netns, seen by name
    assert jwks_reachable(netpair.url(), target, 0.5)["error"] == "refused"
    restore_jwks_egress(netpair.url(), target=target)
    assert netpair.rules() == []


def _netns_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def test_dry_run_prints_the_commands_and_changes_nothing(netpair, state_dir):
    out = _block(netpair, "drop", dry_run=True)
    assert out["dry_run"] is True
    commands, chain = out["commands"], f"CHAOSEXT-{out['run_id']}"
    start = commands.index(f"nsenter --net=/run/netns/{netpair.client} -- iptables-restore -w 5 --noflush <<'EOF'")
    restore_input = commands[start + 1:commands.index("EOF", start)]
    assert restore_input[0] == "*filter" and restore_input[-1] == "COMMIT"
    assert restore_input[1] == f"-N {chain}"  # the kernel refuses the whole transaction if the chain exists
    assert restore_input[-2] == f'-I OUTPUT 1 -m comment --comment "chaosext:{out["run_id"]}" -j {chain}'
    assert any(line.startswith(f"-A {chain} -d {netpair.v4}/32 ") and "-m time --datestop" in line
               and line.endswith("-j DROP") for line in restore_input)
    assert netpair.rules() == []
    assert not state_dir.exists() or not list(state_dir.glob("*.json"))
    assert jwks_reachable(netpair.url(), netpair.target, 2.0)["reachable"] is True


BAD = [
    ({"via": "carrier-pigeon"}, "unknown via"),
    ({"mode": "explode"}, "unknown mode"),
    ({"deadline_seconds": -5}, "must be > 0"),
    ({"deadline_seconds": 7200}, "above the cap"),
    ({"deadline_seconds": 100, "max_outage_seconds": 50}, "above the cap"),
    ({"jwks_url": "http://10.213.0.2:70000/jwks"}, "port"),
    ({"jwks_url": "http://10.213.0.2:53/jwks"}, "DNS"),
    ({"jwks_url": "https://10.213.0.2:6443/jwks"}, "Kubernetes API"),
    ({"jwks_url": "ftp://host/jwks"}, "not an http"),
    ({"target": "netns:no-such-ns"}, "not found"),
    ({"target": "pid:999999999"}, "not found"),
    ({"target": "moon:base"}, "unknown target"),
    ({"target": "netns:a,,netns:b"}, "empty item"),
    ({"driver_options": {"parallelism": "0"}}, "FAULT_PARALLELISM"),
    ({"driver_options": {"parallelism": "many"}}, "FAULT_PARALLELISM"),
]


@pytest.mark.parametrize("override,message", BAD, ids=[m + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_input_is_refused_before_any_rule_exists(netpair, state_dir, override, message):
    with pytest.raises(FaultError, match=message):
        _block(netpair, **{"mode": "drop", **override})
    assert netpair.rules() == []
    assert not state_dir.exists() or not list(state_dir.glob("*.json"))
    assert jwks_reachable(netpair.url(), netpair.target, 2.0)["reachable"] is True


def test_unresolvable_host_missing_iptables_and_missing_capability_are_refused(netpair, state_dir, monkeypatch):
    def no_dns(*a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with monkeypatch.context() as m:
        m.setattr(socket, "getaddrinfo", no_dns)
        with pytest.raises(FaultError, match="cannot resolve"):
            _block(netpair, jwks_url="http://jwks.invalid/jwks")
    with monkeypatch.context() as m:
        m.setattr("chaosext.egress.iptables.shutil.which", lambda name: None)
        with pytest.raises(FaultError, match="iptables not found"):
            _block(netpair)
    with monkeypatch.context() as m:
        m.setattr("chaosext.egress.iptables._cap_eff", lambda: 0)
        with pytest.raises(FaultError, match="CAP_NET_ADMIN"):
            _block(netpair)
    assert netpair.rules() == []
    assert not state_dir.exists() or not list(state_dir.glob("*.json"))
