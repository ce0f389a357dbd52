"""chaosext.egress.netns: commands, connect checks and rule listings in many network namespaces at once, from one
process. Real namespaces (tests/egress/netfleet.py: clients on one bridge with a JWKS stand-in, removed after each
test), real iptables, real sockets.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from chaosext.egress import netns
from chaosext.egress.base import TargetNotFound
from chaosext.egress.iptables import _held, _rule_endpoint
from tests.egress.netfleet import SERVER_ADDRESS, Fleet, fleet

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


@pytest.fixture
def twenty() -> Iterator[Fleet]:
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    with fleet(20) as f:
        yield f


def _paths(f: Fleet) -> list[str]:
    return [f"/run/netns/{c}" for c in f.clients]


@pytest.mark.parametrize("spawner", ["posix_spawn", "subprocess"])
def test_every_command_runs_in_its_own_namespace_and_a_gone_namespace_is_named(twenty, spawner, monkeypatch):
    if spawner == "subprocess":
        monkeypatch.setattr(netns, "_spawner", lambda: None)  # the fallback where libc has no posix_spawn extensions
    gone = twenty.clients[5]
    twenty.remove_client(gone)
    jobs = [netns.Job(["sh", "-c", "ip -o -4 addr show scope global | awk '{print $4}'; cat; echo oops >&2; exit 3"],
                      nspath=p, stdin=f"to {p}\n") for p in _paths(twenty)]

    done = netns.run_all(jobs)

    for i, (client, ran) in enumerate(zip(twenty.clients, done, strict=True)):
        if client == gone:
            assert isinstance(ran.error, TargetNotFound) and gone in str(ran.error)
            continue
        assert ran.error is None and ran.returncode == 3 and ran.stderr == "oops\n"
        address, echoed = ran.stdout.splitlines()
        assert address == f"10.215.{1 + i // 250}.{1 + i % 250}/16"  # the client's own address: its namespace
        assert echoed == f"to /run/netns/{client}"


def test_a_staged_batch_sends_no_held_tail_before_every_process_has_its_input(twenty):
    """Each process stamps the moment it read its input and the moment it read its held tail: every tail arrives
    after every process had its input (a tail sent at once would let a fast one finish before a slow one began)."""
    script = "read a; date +%s%N; read b; date +%s%N; echo $a$b"
    jobs = [netns.Job(["sh", "-c", script], nspath=p, stdin="in\n", held="tail\n") for p in _paths(twenty)]

    done = netns.run_all(jobs, staged=True)

    stamps = [[int(x) for x in ran.stdout.split()[:2]] for ran in done]
    assert all(ran.returncode == 0 and ran.stdout.split()[2] == "intail" for ran in done)
    assert max(first for first, _ in stamps) <= min(second for _, second in stamps)


def test_connects_from_every_namespace_at_once_say_reachable_refused_or_dropped(twenty):
    paths = _paths(twenty)
    blocked, refused = paths[:5], paths[5:10]
    for path in blocked:
        subprocess.run(["nsenter", f"--net={path}", "iptables", "-I", "OUTPUT", "-d", SERVER_ADDRESS, "-j", "DROP"],
                       check=True, timeout=20)
    probes = [(p, SERVER_ADDRESS, 1 if p in refused else twenty.port) for p in paths]  # nothing listens on port 1

    found = netns.connect_all(probes, timeout=3.0, local_timeout=0.3)

    errors = [r["error"] for r in found]
    assert errors == ["timeout"] * 5 + ["refused"] * 5 + [""] * 10
    assert all(r["reachable"] for r in found[10:])
    # on-link through a veth: the other end is a namespace of this host, so the short wait was enough
    assert {(r["path"], r["timeout_s"]) for r in found} == {("local", 0.3)}
    # without a local wait every probe waits the full timeout
    assert {(r["error"], r["path"], r["timeout_s"]) for r in netns.connect_all(probes[:5], timeout=0.5)} == {
        ("timeout", "remote", 0.5)}


def test_a_path_is_local_only_on_loopback_or_on_link_through_a_veth(twenty):
    client = _paths(twenty)[0]
    # a route through a gateway leaves this host as far as the target can tell
    subprocess.run(["nsenter", f"--net={client}", "ip", "route", "add", "10.99.0.0/24", "via", SERVER_ADDRESS],
                   check=True, timeout=20)
    # a bridge (it could have a real network card as a port) with an address of the namespace on it
    subprocess.run(["ip", "-n", os.path.basename(client), "-batch", "-"], input="link add cxbr0 type bridge\n"
                   "addr add 10.98.0.1/24 dev cxbr0\nlink set cxbr0 up\nroute add 10.97.0.0/24 dev cxbr0\n", text=True,
                   check=True, timeout=20)

    def local(address: str) -> bool:
        return netns.in_netns(client, lambda: netns.path_is_local(address))

    assert local(SERVER_ADDRESS)  # on-link via the client's veth
    assert local("127.0.0.2") and local("10.98.0.1")  # loopback, and an address of the namespace itself
    assert not local("10.99.0.5")  # via a gateway
    assert not local("10.97.0.5")  # on-link, but through a device that is no veth (it could lead to a real wire)
    assert not local("192.0.2.1")  # no route at all


def test_the_kernel_listing_holds_what_iptables_lists_for_the_checks(twenty):
    """The rule listing read over nf_tables netlink gives the verification the same facts as `iptables -S`: the
    run's chain, its rules, the jumps to it and their positions -- with other rules and chains around."""
    if not netns.nft_backed("iptables"):
        pytest.skip("iptables here is not the nf_tables variant")
    client = _paths(twenty)[0]
    rules = "\n".join([
        "*filter", "-N CHAOSEXT-0a1b2c3d", "-N OTHER", "-N EMPTY",
        *[f'-A CHAOSEXT-0a1b2c3d -d 10.215.0.{i}/32 -p tcp -m tcp --dport 8440 -m time --datestop '
          f'2030-01-01T00:00:00 -m comment --comment "chaosext:0a1b2c3d" -j DROP' for i in (1, 2)],
        '-A OUTPUT -m comment --comment "not chaosext" -j ACCEPT', "-A OUTPUT -p tcp -j OTHER",
        '-A OUTPUT -m comment --comment "chaosext:0a1b2c3d" -j CHAOSEXT-0a1b2c3d', "-A OUTPUT -g OTHER",
        '-A OTHER -m comment --comment "chaosext:ffff0000" -j RETURN', "COMMIT", ""])
    subprocess.run(["nsenter", f"--net={client}", "iptables-restore", "--noflush"], input=rules, text=True,
                   check=True, timeout=20)
    listed = subprocess.run(["nsenter", f"--net={client}", "iptables", "-S"], capture_output=True, text=True,
                            check=True, timeout=20).stdout.splitlines()

    [read] = netns.listings([(client, ["iptables", "ip6tables"])])

    assert isinstance(read, dict) and read["ip6tables"] == []
    def facts(held: dict) -> tuple:  # what verify reads: how many rules, which chains, where the jumps are
        return len(held["rules"]), held["chains"], held["jump_positions"]

    for run_id in ("0a1b2c3d", "ffff0000", "00000000"):
        assert facts(_held(read, run_id)) == facts(_held({"iptables": listed, "ip6tables": []}, run_id))
    assert _held(read, "0a1b2c3d")["jump_positions"] == [3]
    # restore --all reads which endpoint a run blocks from the same listing
    assert [_rule_endpoint(line) for line in read["iptables"] if "CHAOSEXT-0a1b2c3d -" in line] == [
        _rule_endpoint(line) for line in listed if "CHAOSEXT-0a1b2c3d -" in line] == ["10.215.0.1:8440",
                                                                                       "10.215.0.2:8440"]
    [gone] = netns.listings([("/run/netns/cxnothing-here", ["iptables"])])
    assert isinstance(gone, TargetNotFound)
