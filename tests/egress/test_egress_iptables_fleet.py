"""The iptables fault at fleet scale: many targets at once, atomic per target, all or none.

Real iptables in network namespaces the tests create (tests/egress/netfleet.py: N client namespaces on one bridge
with a JWKS stand-in), removed after every test, also on failure. Kubernetes pod resolution runs against the
contract stub of test_egress_kubernetes.py (no API server is installable here).
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
from tests.egress.test_egress_kubernetes import _pod, kube  # noqa: F401 - the contract stub fixture

FAST = {"verify_timeout_seconds": 0.5}


@pytest.fixture
def four(state_dir) -> Iterator[Fleet]:
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    with fleet(4) as f:
        yield f


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
            others = [c for c in f.clients if c != victim]
            assert wait_for(lambda: all(f.rules(c) for c in others), timeout=20, interval=0.05)
            f.remove_client(victim)
            first = None  # its own transaction runs now, in a namespace that is gone
        return original(self, runner, spec, first)

    monkeypatch.setattr(IptablesDriver, "_apply_one", apply_one)


@pytest.mark.e2e
@pytest.mark.netns
def test_a_target_that_fails_midway_is_named_and_every_other_target_is_left_clean(four, state_dir, monkeypatch):
    victim = four.clients[2]
    _vanish_once_the_others_are_blocked(monkeypatch, four, victim)

    with pytest.raises(FaultError) as err:
        block_jwks_egress(four.url, target=four.glob, mode="reject", deadline_seconds=60, **FAST)

    assert f"failed on 1 of 4 target(s): netns:{victim}" in str(err.value)
    assert "the other 3 target(s) were restored" in str(err.value)
    assert four.all_rules() == {}
    assert not any(_blocked(four, c) for c in four.clients if c != victim)
    assert not list(state_dir.glob("*.json"))
    assert not [p for p in watchdog.find() if four.prefix.encode() in Path(f"/proc/{p}/cmdline").read_bytes()]


@pytest.mark.e2e
@pytest.mark.netns
def test_a_target_that_vanishes_right_after_resolve_is_named_and_nothing_is_left(four, state_dir, monkeypatch):
    victim = four.clients[1]
    original = IptablesDriver.preflight

    def preflight(self, spec):
        runners = original(self, spec)
        four.remove_client(victim)
        return runners

    monkeypatch.setattr(IptablesDriver, "preflight", preflight)
    with pytest.raises(FaultError, match=f"failed on 1 of 4 target\\(s\\): netns:{victim}: .*were restored"):
        block_jwks_egress(four.url, target=four.target_list, mode="reject", deadline_seconds=60, **FAST)
    assert four.all_rules() == {}
    assert not list(state_dir.glob("*.json"))


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
def test_the_watchdog_restores_every_target_of_a_sigkilled_run(four, state_dir):
    code = (
        "import json,sys,time\n"
        "from chaosext.egress.actions import block_jwks_egress\n"
        f"out = block_jwks_egress({four.url!r}, target={four.glob!r}, mode='reject', deadline_seconds=2,"
        " verify_timeout_seconds=0.5)\n"
        "print(json.dumps(out), flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)})
    try:
        out = json.loads(parent.stdout.readline())
        assert sorted(four.all_rules()) == sorted(four.clients)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        assert watchdog.find(out["run_id"]) == [out["watchdog_pid"]]
        assert wait_for(lambda: four.all_rules() == {}, timeout=15)
        assert wait_for(lambda: watchdog.find(out["run_id"]) == [], timeout=5)
        log = (state_dir / f"{out['run_id']}.watchdog.log").read_text()
        assert "reverted" in log and all(f"netns:{c}" in log for c in four.clients)
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.e2e
@pytest.mark.netns
def test_restore_all_cleans_every_target_of_a_glob_without_records(four, state_dir):
    out = block_jwks_egress(four.url, target=four.glob, mode="drop", deadline_seconds=60, **FAST)
    (state_dir / f"{out['run_id']}.json").unlink()
    four.remove_client(four.clients[0])  # a target gone meanwhile holds nothing to remove

    env = {**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)}
    cli = subprocess.run([sys.executable, "-m", "chaosext.cli", "restore", "--all", "--target", four.glob],
                         capture_output=True, text=True, timeout=60, env=env)

    assert cli.returncode == 0, cli.stderr
    assert f"removed fault {out['run_id']}" in cli.stdout
    assert four.all_rules() == {}
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
