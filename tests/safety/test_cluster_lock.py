"""The cluster-side run lock: a coordination.k8s.io/v1 Lease per cluster target, so two machines (a laptop and a CI
runner) aimed at the same NetworkPolicy / Istio / k8s-pod target exclude each other.

Contract tests: the real ``kubernetes`` client against tests/kubestub.py (no API server is installable here), which
answers with the API's shapes and its optimistic concurrency (``resourceVersion`` on PUT, ``preconditions`` on
DELETE: 409 Conflict). "Two machines" are two state directories (each machine's local lock files) and two host names
in the Lease's holder; the cluster is the one stub.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chaosext.run.heartbeat import Heartbeat
from chaosext.safety import lock
from tests.kubestub import KubeStub, status

pytestmark = [pytest.mark.contract]

URL = "http://10.96.40.7:8440/.well-known/jwks.json"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/tenancy/leases"
TARGET = "tenancy/app=policy"


@pytest.fixture
def cluster() -> Iterator[KubeStub]:
    with KubeStub() as stub:
        yield stub


def take(stub: KubeStub, tmp: Path, machine: str, run_id: str, monkeypatch: pytest.MonkeyPatch,
         via: str = "k8s-networkpolicy", target: str = TARGET) -> lock.TargetLock:
    """``chaos run``'s lock on ``machine`` (its own state dir, so only the cluster is shared)."""
    monkeypatch.setenv("CHAOSEXT_STATE_DIR", str(tmp / machine))
    monkeypatch.setattr(lock.socket, "gethostname", lambda: machine)
    key = lock.lock_key(via, target, URL)
    lease = lock.cluster_lease(via, target, key, {"kube_api_url": stub.url})
    assert lease is not None
    return lock.acquire(key, run_id, {"ends_at": time.time() + 600}, lease=lease)


def the_lease(stub: KubeStub) -> dict:
    (only,) = stub.objects[LEASES].values()
    return only


def test_a_laptop_and_a_ci_runner_on_one_cluster_target_exclude_each_other(cluster, tmp_path, monkeypatch):
    laptop = take(cluster, tmp_path, "laptop", "aaaa1111", monkeypatch)
    lease = the_lease(cluster)
    spec = lease["spec"]
    assert spec["holderIdentity"].startswith("aaaa1111@laptop:")
    assert spec["leaseDurationSeconds"] == lock.LEASE_SECONDS and spec["leaseTransitions"] == 0
    # a MicroTime (RFC 3339 with microseconds), as Go's RFC3339Micro layout parses it
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)", spec["renewTime"])
    assert lease["metadata"]["labels"]["chaosext.io/run-id"] == "aaaa1111"
    assert lease["metadata"]["annotations"]["chaosext.io/lock-key"] == laptop.key

    with pytest.raises(lock.LockHeld) as refused:
        take(cluster, tmp_path, "ci-runner", "bbbb2222", monkeypatch)
    for part in ("in use by run aaaa1111 on laptop", "tenancy/chaosext-lock-", "Nothing was changed"):
        assert part in str(refused.value), str(refused.value)
    assert the_lease(cluster)["spec"]["holderIdentity"].startswith("aaaa1111@")
    assert not list((tmp_path / "ci-runner" / "locks").glob("*.lock")), "the runner gave its local lock back"

    assert laptop.release()
    assert cluster.objects[LEASES] == {}, "release deletes the Lease"
    runner = take(cluster, tmp_path, "ci-runner", "bbbb2222", monkeypatch)
    assert the_lease(cluster)["spec"]["holderIdentity"].startswith("bbbb2222@ci-runner:")
    runner.release()


def test_istio_and_iptables_in_pods_are_cluster_targets_too(cluster, tmp_path, monkeypatch):
    for via, target in (("istio", TARGET), ("iptables", "k8s-pod:tenancy/app=policy")):
        held = take(cluster, tmp_path, "laptop", "cccc3333", monkeypatch, via=via, target=target)
        assert the_lease(cluster)["metadata"]["namespace"] == "tenancy"
        held.release()
    assert lock.cluster_lease("iptables", "local", "k", {}) is None
    assert lock.cluster_lease("envoy", "http://127.0.0.1:9901", "k", {}) is None


def test_a_lease_not_renewed_for_its_duration_is_taken_over(cluster, tmp_path, monkeypatch):
    take(cluster, tmp_path, "laptop", "dead0a01", monkeypatch)  # then the laptop dies: no more renewals
    old = datetime.fromtimestamp(time.time() - lock.LEASE_SECONDS - 1, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    the_lease(cluster)["spec"]["renewTime"] = old

    runner = take(cluster, tmp_path, "ci-runner", "11fe0002", monkeypatch)
    spec = the_lease(cluster)["spec"]
    assert spec["holderIdentity"].startswith("11fe0002@ci-runner:") and spec["leaseTransitions"] == 1
    assert runner.lease and runner.lease.took_over and runner.lease.took_over["run_id"] == "dead0a01"
    assert "took over the expired cluster lock" in runner.lease.message
    put = [r for r in cluster.requests if r.method == "PUT"][-1]
    assert put.body["metadata"]["resourceVersion"], "the takeover carries the resourceVersion it read"
    runner.release()


def test_of_two_machines_taking_over_an_expired_lease_the_slower_is_refused(cluster, tmp_path, monkeypatch):
    take(cluster, tmp_path, "laptop", "dead0a01", monkeypatch)
    the_lease(cluster)["spec"]["renewTime"] = "2020-01-01T00:00:00.000000Z"
    # between this machine's read and its write, another machine took the Lease (its resourceVersion moved on)
    cluster.forced[("PUT", LEASES)] = (409, status(409, "Conflict", "the object has been modified"))
    with pytest.raises(lock.LockHeld, match="another run took the expired cluster lock"):
        take(cluster, tmp_path, "ci-runner", "510e0003", monkeypatch)
    assert not list((tmp_path / "ci-runner" / "locks").glob("*.lock"))


def test_the_heartbeat_renews_the_lease_and_a_lost_lease_is_noticed(cluster, tmp_path, monkeypatch):
    held = take(cluster, tmp_path, "laptop", "bea70001", monkeypatch)
    first = the_lease(cluster)["spec"]["renewTime"]
    monkeypatch.setattr(lock, "LEASE_RENEW_SECONDS", 0.0)
    beat = Heartbeat(str(tmp_path / "heartbeat"), interval=0.05, on_beat=held.renew).start()
    try:
        deadline = time.monotonic() + 10
        while the_lease(cluster)["spec"]["renewTime"] == first:
            assert time.monotonic() < deadline, "the heartbeat never renewed the Lease"
            time.sleep(0.05)
        assert int(the_lease(cluster)["metadata"]["resourceVersion"]) > 1
        # another run took the Lease (this one's renewals had failed): the next renewal notices, release leaves it
        the_lease(cluster)["spec"]["holderIdentity"] = "other0002@ci-runner:1"
        the_lease(cluster)["metadata"]["resourceVersion"] = "999"
        deadline = time.monotonic() + 10
        while not (held.lease and held.lease.lost):
            assert time.monotonic() < deadline, "the lost Lease went unnoticed"
            time.sleep(0.05)
    finally:
        beat.stop()
    held.release()
    assert the_lease(cluster)["spec"]["holderIdentity"] == "other0002@ci-runner:1", "never delete another run's Lease"


def test_an_api_that_refuses_leases_says_which_rbac_is_missing(cluster, tmp_path, monkeypatch):
    cluster.forced[("POST", LEASES)] = (403, status(403, "Forbidden", 'leases.coordination.k8s.io is forbidden'))
    with pytest.raises(lock.LockHeld, match=r"get, create, update and delete on leases\.coordination\.k8s\.io in "
                                            r"namespace tenancy.*Nothing was changed"):
        take(cluster, tmp_path, "laptop", "abac0001", monkeypatch)
    assert not list((tmp_path / "laptop" / "locks").glob("*.lock"))
