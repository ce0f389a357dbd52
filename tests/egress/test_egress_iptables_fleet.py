"""The iptables fault at fleet scale: many targets at once, atomic per target, all or none.

Real iptables in network namespaces the tests create (tests/egress/netfleet.py: N client namespaces on one bridge
with a JWKS stand-in), removed after every test, also on failure. The fleet tests run at 4 and at 100 targets
(``CHAOSEXT_FLEET_SIZE=1000`` runs the big ones at 1,000; ``scripts/bench-egress --scale`` measures 1,000).
Kubernetes pods run against the contract stub (tests/kubestub.py; no API server is installable here): pod lookup,
and pod exec over the API's websocket protocol, each exec running its command in one of the fleet's namespaces
standing in for the pod's network namespace -- so the iptables rules a pod gets are real.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaosext.egress import watchdog
from chaosext.egress.actions import block_jwks_egress, restore_jwks_egress
from chaosext.egress.base import FaultError, FaultSpec, make_spec
from chaosext.egress.iptables import IptablesDriver, runner_for
from chaosext.egress.probes import jwks_reachable
from tests.egress.egress_util import wait_for
from tests.egress.netfleet import Fleet, fleet
from tests.egress.test_egress_kubernetes import FakeKube, _pod, kube  # noqa: F401 - the contract stub fixture

FAST = {"verify_timeout_seconds": 0.5}
#: the size of the big fleet (100 in CI; 1,000 by hand: CHAOSEXT_FLEET_SIZE=1000)
BIG = int(os.environ.get("CHAOSEXT_FLEET_SIZE") or 100)


@pytest.fixture
def four(state_dir) -> Iterator[Fleet]:
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    with fleet(4) as f:
        yield f


@pytest.fixture
def sized(request, state_dir) -> Iterator[Fleet]:
    """A fleet of ``request.param`` clients (parametrize with indirect=True)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    with fleet(request.param) as f:
        yield f


@pytest.fixture
def big(state_dir) -> Iterator[Fleet]:
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    with fleet(BIG) as f:
        yield f


SIZES = pytest.mark.parametrize("sized", [4, BIG], indirect=True, ids=["4", str(BIG)])


def _blocked(f: Fleet, client: str) -> bool:
    return jwks_reachable(f.url, f"netns:{client}", 0.5)["error"] == "refused"


@pytest.mark.e2e
@pytest.mark.netns
def test_a_list_blocks_exactly_its_targets_and_a_glob_blocks_every_match(four, state_dir):
    listed = four.clients[:3]
    out = block_jwks_egress(four.url, target=",".join(f"netns:{c}" for c in listed), mode="reject",
                            deadline_seconds=60, **FAST)

    assert out["verification"]["blocked"] is True
    assert sorted(t["target"] for t in out["verification"]["targets"]) == sorted(f"netns:{c}" for c in listed)
    assert [_blocked(four, c) for c in four.clients] == [True, True, True, False]
    spread = out["applied"]["spread"]
    assert spread["targets"] == 3 and spread["first"] <= spread["last"]
    assert sorted(four.all_rules()) == sorted(listed)

    restored = restore_jwks_egress(four.url, target=",".join(f"netns:{c}" for c in listed))
    assert restored["restored"][0]["spread"]["targets"] == 3
    assert four.all_rules() == {}
    assert watchdog.find(out["run_id"]) == []

    out = block_jwks_egress(four.url, target=four.glob, mode="reject", deadline_seconds=60, **FAST)

    assert sorted(out["applied"]["targets"]) == sorted(f"netns:{c}" for c in four.clients)  # not the server
    assert all(_blocked(four, c) for c in four.clients)
    restore_jwks_egress(four.url, target=four.glob)
    assert four.all_rules() == {}
    assert not any(_blocked(four, c) for c in four.clients)


@pytest.mark.e2e
@pytest.mark.netns
def test_a_glob_that_matches_nothing_and_a_missing_list_item_are_refused_before_any_rule(four, state_dir):
    with pytest.raises(FaultError, match="no network namespace matches"):
        block_jwks_egress(four.url, target=f"netns:{four.prefix}nothing*", deadline_seconds=60, **FAST)
    with pytest.raises(FaultError, match=f"netns:{four.prefix}gone.*not found"):
        block_jwks_egress(four.url, target=f"{four.glob},netns:{four.prefix}gone", deadline_seconds=60, **FAST)
    assert four.all_rules() == {}
    assert not list(state_dir.glob("*.json"))


def _vanish_once_the_others_are_blocked(monkeypatch, f: Fleet, victim: str) -> None:
    """Delete ``victim``'s namespace once every other target holds the fault, then run its own transaction: a real
    failure midway, after the others were changed."""
    original = IptablesDriver._apply_one

    def apply_one(self, runner, spec, first=None):
        if runner.label == f"netns:{victim}":
            others = {c for c in f.clients if c != victim}
            assert wait_for(lambda: others <= set(f.all_rules()), timeout=20, interval=0.05)
            f.remove_client(victim)
            first = None  # its own transaction runs now, in a namespace that is gone
        return original(self, runner, spec, first)

    monkeypatch.setattr(IptablesDriver, "_apply_one", apply_one)


@pytest.mark.e2e
@pytest.mark.netns
@SIZES
def test_a_target_that_fails_midway_is_named_and_every_other_target_is_left_clean(sized, state_dir, monkeypatch):
    n = len(sized.clients)
    victim = sized.clients[2]
    _vanish_once_the_others_are_blocked(monkeypatch, sized, victim)

    with pytest.raises(FaultError) as err:
        block_jwks_egress(sized.url, target=sized.glob, mode="reject", deadline_seconds=60, **FAST)

    assert f"failed on 1 of {n} target(s): netns:{victim}" in str(err.value)
    assert f"the other {n - 1} target(s) were restored" in str(err.value)
    assert sized.all_rules() == {}
    assert not any(_blocked(sized, c) for c in sized.clients[:4] if c != victim)
    assert not list(state_dir.glob("*.json"))
    assert not [p for p in watchdog.find() if sized.prefix.encode() in Path(f"/proc/{p}/cmdline").read_bytes()]


@pytest.mark.e2e
@pytest.mark.netns
@SIZES
def test_a_target_that_vanishes_right_after_resolve_is_named_and_nothing_is_left(sized, state_dir, monkeypatch):
    n = len(sized.clients)
    victim = sized.clients[1]
    original = IptablesDriver.preflight

    def preflight(self, spec):
        runners = original(self, spec)
        sized.remove_client(victim)
        return runners

    monkeypatch.setattr(IptablesDriver, "preflight", preflight)
    with pytest.raises(FaultError, match=f"failed on 1 of {n} target\\(s\\): netns:{victim}: .*were restored"):
        block_jwks_egress(sized.url, target=sized.target_list, mode="reject", deadline_seconds=60, **FAST)
    assert sized.all_rules() == {}
    assert not list(state_dir.glob("*.json"))


@pytest.mark.e2e
@pytest.mark.netns
def test_a_big_fleet_in_drop_mode_is_blocked_checked_at_once_and_restored(big, state_dir):
    """Drop mode with the default verification: every target's connect is judged with the short wait of a path that
    stays on this host (each client reaches the JWKS stand-in on-link through its veth), every target holds the
    whole rule set, and the restore leaves every target clean and answering."""
    n = len(big.clients)
    out = block_jwks_egress(big.url, target=big.glob, mode="drop", deadline_seconds=60)

    check = out["verification"]
    assert check["blocked"] is True and len(check["targets"]) == n
    probes = [p for t in check["targets"] for p in t["probes"]]
    assert len(probes) == n and {(p["error"], p["path"], p["timeout_s"]) for p in probes} == {("timeout", "local",
                                                                                              0.2)}
    assert all(t["rules"] == 2 and t["jump_positions"] == [1] for t in check["targets"])
    held = big.all_rules()
    assert sorted(held) == sorted(big.clients) and {len(r) for r in held.values()} == {3}  # chain, rule, jump
    assert out["applied"]["spread"]["targets"] == n
    assert [jwks_reachable(big.url, f"netns:{c}", 0.3)["error"] for c in (big.clients[0], big.clients[-1])] == [
        "timeout", "timeout"]

    restored = restore_jwks_egress(big.url, target=big.glob)

    [entry] = restored["restored"]
    assert entry["spread"]["targets"] == n and entry["verification"]["blocked"] is False
    assert all(p["reachable"] for t in entry["verification"]["targets"] for p in t["probes"])
    assert big.all_rules() == {}
    assert watchdog.find(out["run_id"]) == []


# ---------------------------------------------------------------- atomicity


class LineByLine(IptablesDriver):
    """A broken driver: the same rule set, one restore transaction per line (like one iptables command each)."""

    def _staged(self, runners, inputs):
        return {}

    def _apply_one(self, runner, spec, first=None):
        for binary, version, addrs in self._families(spec):
            for line in self._fresh_input(spec, version, addrs).splitlines()[1:-1]:
                rc, _, err = runner.run([f"{binary}-restore", "-w", "5", "--noflush"],
                                        stdin=f"*filter\n{line}\nCOMMIT\n")
                assert rc == 0, err
        return [b for b, _, _ in self._families(spec)], time.time()


def _partial_snapshots(f: Fleet, client: str, driver: IptablesDriver, spec: FaultSpec, rounds: int) -> tuple:
    """Apply and revert ``rounds`` times while another thread polls ``iptables-save`` in ``client``; returns
    ``(partial snapshots, count of full ones, count of empty ones)``. Full = chain, every rule, jump first."""
    chain = spec.chain
    stop = threading.Event()
    seen: list[str] = []

    def poll() -> None:
        while not stop.is_set():
            seen.append(f.save(client))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for _ in range(rounds):
            driver.apply(spec)
            driver.revert(spec)
    finally:
        stop.set()
        poller.join(timeout=30)
    partial, full, empty = [], 0, 0
    for snap in seen:
        lines = snap.splitlines()
        mine = [line for line in lines if chain in line]
        output = [line for line in lines if line.startswith("-A OUTPUT ")]
        if not mine:
            empty += 1
        elif (f":{chain} - [0:0]" in lines and sum(line.startswith(f"-A {chain} ") for line in lines)
              == len(spec.addresses) and output[:1] == [f'-A OUTPUT -m comment --comment "{spec.tag}" -j {chain}']):
            full += 1
        else:
            partial.append(snap)
    return partial, full, empty


@pytest.mark.e2e
@pytest.mark.netns
def test_no_partial_rule_set_is_ever_visible_in_a_target(four, state_dir):
    client = four.clients[0]
    target = f"netns:{client}"
    # many addresses make a big transaction: a non-atomic apply would show its middle to the poller
    base = make_spec(four.url, "iptables", target, "reject", 60, options={"verify_timeout": 0.5})
    addresses = base.addresses + tuple(f"10.216.0.{i}" for i in range(1, 40))
    spec = FaultSpec(**{**base.to_dict(), "addresses": addresses})

    partial, full, empty = _partial_snapshots(four, client, IptablesDriver(spec.options), spec, rounds=15)
    assert partial == [] and full > 0 and empty > 0

    # the check catches a driver that adds the same rule set one line at a time
    broken, _, _ = _partial_snapshots(four, client, LineByLine(spec.options), spec, rounds=3)
    assert broken
    assert four.all_rules() == {}


@pytest.mark.e2e
@pytest.mark.netns
@pytest.mark.parametrize("staged,wave", [(True, 128), (True, 3), (False, 0)],
                         ids=["staged-commit", "staged-in-waves-of-3", "one-by-one"])
def test_reapplying_the_same_run_is_a_no_op_and_a_damaged_rule_set_is_repaired_whole(four, state_dir, staged, wave,
                                                                                      monkeypatch):
    monkeypatch.setattr("chaosext.egress.iptables.STAGE_MAX", wave)
    spec = make_spec(four.url, "iptables", four.glob, "reject", 60,
                     options={"verify_timeout": 0.5, "staged_commit": staged})
    driver = IptablesDriver(spec.options)
    first = driver.apply(spec)
    saved = {c: four.save(c) for c in four.clients}
    strip = lambda s: [line for line in s.splitlines() if not line.startswith("#")]  # noqa: E731 - dates

    again = driver.apply(spec)

    assert len(first["applied"]) == 4 and again["applied"] == []
    assert all(strip(four.save(c)) == strip(saved[c]) for c in four.clients)
    # someone deletes the jump in one target and adds an ACCEPT in front: re-applying puts the jump first again
    damaged = four.clients[3]
    for argv in (["iptables", "-D", "OUTPUT", "1"], ["iptables", "-I", "OUTPUT", "1", "-j", "ACCEPT"]):
        subprocess.run(["ip", "netns", "exec", damaged, *argv], check=True, timeout=20)
    repaired = driver.apply(spec)
    assert repaired["applied"] == [f"netns:{damaged} iptables-restore --noflush"]
    assert driver.verify(spec)["blocked"] is True
    driver.revert(spec)
    subprocess.run(["ip", "netns", "exec", damaged, "iptables", "-D", "OUTPUT", "-j", "ACCEPT"], check=True,
                   timeout=20)
    assert four.all_rules() == {}


# ---------------------------------------------------------------- every target of a run is undone


@pytest.mark.e2e
@pytest.mark.netns
@SIZES
def test_the_watchdog_restores_every_target_of_a_sigkilled_run(sized, state_dir):
    deadline = 3 + len(sized.clients) // 100  # longer than applying and checking takes (the kernel stops matching)
    code = (
        "import json,sys,time\n"
        "from chaosext.egress.actions import block_jwks_egress\n"
        f"out = block_jwks_egress({sized.url!r}, target={sized.glob!r}, mode='reject', deadline_seconds={deadline},"
        " verify_timeout_seconds=0.5)\n"
        "print(json.dumps(out), flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)})
    try:
        out = json.loads(parent.stdout.readline())
        assert sorted(sized.all_rules()) == sorted(sized.clients)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        assert watchdog.find(out["run_id"]) == [out["watchdog_pid"]]
        assert wait_for(lambda: sized.all_rules() == {}, timeout=deadline + 15)
        assert wait_for(lambda: watchdog.find(out["run_id"]) == [], timeout=5)
        log = (state_dir / f"{out['run_id']}.watchdog.log").read_text()
        assert "reverted" in log and all(f"netns:{c}" in log for c in sized.clients)
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.e2e
@pytest.mark.netns
@SIZES
def test_restore_all_cleans_every_target_of_a_glob_without_records(sized, state_dir):
    out = block_jwks_egress(sized.url, target=sized.glob, mode="drop", deadline_seconds=60, **FAST)
    (state_dir / f"{out['run_id']}.json").unlink()
    sized.remove_client(sized.clients[0])  # a target gone meanwhile holds nothing to remove

    env = {**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)}
    cli = subprocess.run([sys.executable, "-m", "chaosext.cli", "restore", "--all", "--target", sized.glob],
                         capture_output=True, text=True, timeout=60, env=env)

    assert cli.returncode == 0, cli.stderr
    assert f"removed fault {out['run_id']}" in cli.stdout
    assert sized.all_rules() == {}
    assert watchdog.find(out["run_id"]) == []


# ---------------------------------------------------------------- Kubernetes pods (contract stub)


@pytest.mark.contract
def test_k8s_pod_selector_resolves_to_every_running_pod_and_the_dry_run_shows_each(kube, state_dir):  # noqa: F811
    fake, api = kube
    for i in range(60):
        fake.add("/api/v1/namespaces/tenancy/pods", _pod(f"policy-{i}", phase="Pending" if i % 20 == 19 else
                                                         "Running"))
    other = _pod("notify-0")
    other["metadata"]["labels"] = {"app": "notify"}
    fake.add("/api/v1/namespaces/tenancy/pods", other)
    options = {"kube_api_url": api}

    runners = runner_for("k8s-pod:tenancy/app=policy", options)
    assert sorted(r.label for r in runners) == sorted(f"k8s-pod:tenancy/policy-{i}" for i in range(60)
                                                      if i % 20 != 19)
    both = runner_for("k8s-pod:tenancy/app=policy,k8s-pod:tenancy/notify-0,policy-0", options)
    assert len(both) == 58 and both[-1].label == "k8s-pod:tenancy/notify-0"  # policy-0 once

    out = block_jwks_egress("http://10.96.40.7:8440/.well-known/jwks.json", target="k8s-pod:tenancy/app=policy",
                            mode="reject", deadline_seconds=60, dry_run=True, kube_api_url=api)
    heads = [c for c in out["commands"] if "iptables-restore" in c]
    assert len(heads) == 57 and all(c.startswith("kubectl exec -n tenancy policy-") for c in heads)
    assert not [r for r in fake.requests if r[0] != "GET"]


@pytest.fixture
def pods(state_dir) -> Iterator[tuple[Fleet, FakeKube]]:
    """20 running pods ``tenancy/policy-<i>`` (label app=policy) in the Kubernetes stub, whose exec runs the command
    in the fleet's client namespace ``i`` (standing in for the pod's network namespace)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    with fleet(20) as f:
        def start(namespace: str, pod: str, container: str, argv: list[str]) -> subprocess.Popen:
            assert (namespace, container) == ("tenancy", "policy")
            client = f.clients[int(pod.rsplit("-", 1)[1])]
            return subprocess.Popen(["ip", "netns", "exec", client, *argv], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        with FakeKube(exec_process=start) as stub:
            for i in range(len(f.clients)):
                stub.add("/api/v1/namespaces/tenancy/pods", _pod(f"policy-{i}"))
            yield f, stub


def _restores(stub: FakeKube) -> list[tuple[str, list[str]]]:
    return [(pod, argv) for _, pod, _, argv in stub.execs if "iptables-restore" in " ".join(argv)]


@pytest.mark.e2e
@pytest.mark.netns
@pytest.mark.contract
def test_pods_are_blocked_and_restored_with_one_exec_each_per_step_committed_together(pods, state_dir, monkeypatch):
    from kubernetes.stream.ws_client import WSClient

    f, stub = pods
    target = "k8s-pod:tenancy/app=policy"
    sent: list[str] = []  # what went to the execs' stdin, in the order chaosext wrote it
    write = WSClient.write_stdin
    monkeypatch.setattr(WSClient, "write_stdin", lambda ws, data: (sent.append(data), write(ws, data))[1])

    out = block_jwks_egress(f.url, target=target, mode="reject", deadline_seconds=60, kube_api_url=stub.url, **FAST)

    assert out["verification"]["blocked"] is True
    assert sorted(f.all_rules()) == sorted(f.clients)
    applied = _restores(stub)
    assert sorted(pod for pod, _ in applied) == sorted(f"policy-{i}" for i in range(20))  # one transaction each
    assert all(argv[:2] == ["sh", "-c"] and argv[2].startswith("head -n ") for _, argv in applied)
    # staged: every exec was sent its rules before any was sent its COMMIT, and each pod got both, in that order
    bodies = [i for i, data in enumerate(sent) if "-N CHAOSEXT-" in data]
    commits = [i for i, data in enumerate(sent) if data == "COMMIT\n"]
    assert len(bodies) == len(commits) == 20 and max(bodies) < min(commits)
    received: dict[str, list[bytes]] = {}
    for pod, _, data in stub.stdin_frames:
        received.setdefault(pod, []).append(data)
    assert {pod: [b"-N CHAOSEXT-" in d for d in seen] for pod, seen in received.items()} == {
        f"policy-{i}": [True, False] for i in range(20)}
    probes = [t["probes"] for t in out["verification"]["targets"]]
    assert all(len(p) == 1 and p[0]["error"] == "refused" for p in probes)  # one exec probes all of a pod's addresses

    before = len(stub.execs)
    restored = restore_jwks_egress(f.url, target=target, kube_api_url=stub.url)

    assert restored["restored"][0]["spread"]["targets"] == 20
    assert f.all_rules() == {}
    assert len(_restores(stub)) == 40 and len(stub.execs) - before <= 5 * 20  # revert, its check: a few execs a pod


@pytest.mark.e2e
@pytest.mark.netns
@pytest.mark.contract
def test_a_pod_that_goes_away_midway_is_named_and_every_other_pod_is_left_clean(pods, state_dir, monkeypatch):
    f, stub = pods
    original = IptablesDriver.preflight

    def preflight(self, spec):
        runners = original(self, spec)
        del stub.objects["/api/v1/namespaces/tenancy/pods"]["policy-7"]  # the pod is gone: its exec answers 404
        return runners

    monkeypatch.setattr(IptablesDriver, "preflight", preflight)
    with pytest.raises(FaultError, match=r"failed on 1 of 20 target\(s\): k8s-pod:tenancy/policy-7: .*gone.*"
                                         r"the other 19 target\(s\) were restored"):
        block_jwks_egress(f.url, target="k8s-pod:tenancy/app=policy", mode="reject", deadline_seconds=60,
                          kube_api_url=stub.url, **FAST)
    assert f.all_rules() == {}
    assert not list(state_dir.glob("*.json"))


@pytest.mark.e2e
@pytest.mark.netns
@pytest.mark.contract
def test_execs_in_parallel_leave_the_shared_api_client_to_the_other_calls(pods):
    """The kubernetes client's stream() swaps ``call_api`` on the ApiClient it is given while an exec opens: many
    execs at once on one shared client would leave another exec's websocket in its place."""
    from kubernetes import client

    from chaosext.egress.kubernetes import PodRunner, pod_runners

    _, stub = pods
    cfg = client.Configuration()
    cfg.host = stub.url
    api = client.ApiClient(cfg)
    runners = pod_runners("tenancy/app=policy", {}, api=api)

    ran = PodRunner.run_batch([(r, ["sh", "-c", "sleep 0.2; echo ok"], "", "") for r in runners], parallelism=16)

    assert [r.stdout for r in ran] == ["ok\n"] * 20
    assert api.call_api.__func__ is client.ApiClient.call_api
    assert len(client.CoreV1Api(api).list_namespaced_pod("tenancy").items) == 20


@pytest.fixture
def legacy_path(tmp_path, monkeypatch) -> None:
    """`iptables`, `ip6tables` and their -restore/-save on PATH are the legacy variant (x_tables, one host-wide lock)
    for this test: nothing is read over nf_tables netlink, and local targets are not staged."""
    if not os.path.exists("/usr/sbin/iptables-legacy-restore"):
        pytest.skip("no iptables-legacy on this host")
    for family in ("iptables", "ip6tables"):
        for suffix in ("", "-restore", "-save"):
            (tmp_path / f"{family}{suffix}").symlink_to(f"/usr/sbin/{family}-legacy{suffix}")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")


@pytest.mark.e2e
@pytest.mark.netns
@pytest.mark.parametrize("sized", [20], indirect=True)
def test_with_legacy_iptables_every_target_is_blocked_checked_and_swept_from_iptables_listings(legacy_path, sized,
                                                                                               state_dir):
    from chaosext.egress import netns

    assert not netns.nft_backed("iptables")
    out = block_jwks_egress(sized.url, target=sized.glob, mode="reject", deadline_seconds=60, **FAST)

    assert out["verification"]["blocked"] is True
    assert all(t["rules"] == 2 and t["jump_positions"] == [1] for t in out["verification"]["targets"])
    assert sorted(sized.all_rules()) == sorted(sized.clients)  # iptables-legacy-save sees them
    (state_dir / f"{out['run_id']}.json").unlink()
    cli = subprocess.run([sys.executable, "-m", "chaosext.cli", "restore", "--all", "--target", sized.glob],
                         capture_output=True, text=True, timeout=120, env={**os.environ,
                                                                           "CHAOSEXT_STATE_DIR": str(state_dir)})
    assert cli.returncode == 0, cli.stderr
    assert f"removed fault {out['run_id']}" in cli.stdout
    assert sized.all_rules() == {}
