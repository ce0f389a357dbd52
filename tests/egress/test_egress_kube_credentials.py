"""The Kubernetes fault drivers get their credentials the way chaostoolkit-kubernetes does (the experiment's
``secrets``: KUBERNETES_HOST + KUBERNETES_API_KEY), through chaosext's one client, everywhere the fault is touched:
apply, verify, the probes, restore, the k8s-pod target, and the detached dead-man watchdog -- and the credential never
lands in the fault record or on a command line.

Contract tests against a loopback stub answering with the Kubernetes API reference's response shapes
(tests/kubestub.py); no API server can be installed here.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.config import kube_config

from chaosext.core import kube
from chaosext.egress import watchdog
from chaosext.egress.actions import block_jwks_egress, restore_jwks_egress
from chaosext.egress.base import FaultError
from chaosext.egress.probes import egress_block_active
from tests.egress.egress_util import kill_watchdogs, wait_for
from tests.kubestub import KubeStub

pytestmark = pytest.mark.contract

NP = "/apis/networking.k8s.io/v1/namespaces/tenancy/networkpolicies"
URL = "http://10.96.40.7:8440/.well-known/jwks.json"
TOKEN = "s3cr3t-api-key"


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, state_dir: Path) -> Iterator[KubeStub]:
    """The stub API server; no kubeconfig, pod or KUBE_* settings from this machine."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "no-kubeconfig"))
    for var in ("KUBERNETES_SERVICE_HOST", "CHAOSTOOLKIT_IN_POD", "KUBE_API_URL", "KUBE_CONTEXT", "HTTP_PROXY",
                "NO_PROXY", *kube.KUBE_SECRET_KEYS):
        monkeypatch.delenv(var, raising=False)
    with KubeStub() as k:
        yield k


def secrets_for(stub: KubeStub) -> dict[str, str]:
    return {"KUBERNETES_HOST": stub.url, "KUBERNETES_API_KEY": TOKEN}


def test_fault_probe_and_restore_send_the_secrets_api_key_as_bearer(stub: KubeStub, state_dir: Path) -> None:
    secrets = secrets_for(stub)
    out = block_jwks_egress(URL, via="k8s-networkpolicy", target="tenancy/app=policy", deadline_seconds=120,
                            use_watchdog=False, secrets=secrets)
    assert out["verification"]["blocked"] is True
    # create the deadline Job, the policy it owns, then read the policy back (verify)
    assert [r.method for r in stub.requests][:3] == ["POST", "POST", "GET"]
    record = next(state_dir.glob("*.json")).read_text()
    assert TOKEN not in record and stub.url not in record  # the record keeps options, never credentials

    assert egress_block_active(via="k8s-networkpolicy", target="tenancy/app=policy", secrets=secrets)["active"]
    restore_jwks_egress(via="k8s-networkpolicy", target="tenancy/app=policy", secrets=secrets)
    assert ("DELETE", f"{NP}/chaosext-jwks-{out['run_id']}") in [(r.method, r.path) for r in stub.requests]
    assert stub.objects[NP] == {}
    assert {r.authorization for r in stub.requests} == {f"Bearer {TOKEN}"}


def test_without_credentials_the_fault_stops_before_any_change(stub: KubeStub, state_dir: Path) -> None:
    with pytest.raises(FaultError, match="no Kubernetes context"):
        block_jwks_egress(URL, via="k8s-networkpolicy", target="tenancy/app=policy", deadline_seconds=60,
                          use_watchdog=False)
    assert stub.requests == [] and not list(state_dir.glob("*.json"))


def test_k8s_pod_target_lists_pods_with_the_same_credentials(stub: KubeStub, state_dir: Path) -> None:
    with pytest.raises(FaultError, match="no running pod"):
        block_jwks_egress(URL, target="k8s-pod:tenancy/app=policy", deadline_seconds=60, use_watchdog=False,
                          secrets=secrets_for(stub))
    assert [(r.method, r.path, r.authorization) for r in stub.requests] == [
        ("GET", "/api/v1/namespaces/tenancy/pods", f"Bearer {TOKEN}")]


def test_the_dead_man_watchdog_reverts_with_the_run_s_credentials(stub: KubeStub, state_dir: Path,
                                                                   tmp_path: Path) -> None:
    """The credentials exist only in the experiment's secrets (not in this process's environment): the detached
    watchdog still removes the NetworkPolicy once the run's heartbeat stops. They reach it through its environment,
    not its command line."""
    out = block_jwks_egress(URL, via="k8s-networkpolicy", target="tenancy/app=policy", deadline_seconds=120,
                            verify=False, heartbeat_file=str(tmp_path / "heartbeat"), heartbeat_grace_seconds=1,
                            k6_dir=str(tmp_path / "k6"), secrets=secrets_for(stub))
    try:
        pid = out["watchdog_pid"]
        assert pid and TOKEN.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        started = time.monotonic()
        assert wait_for(lambda: stub.objects[NP] == {}, timeout=30), "the watchdog did not remove the policy"
        assert time.monotonic() - started < 30
        deletes = [r for r in stub.requests if r.method == "DELETE"]
        assert deletes and {r.authorization for r in deletes} == {f"Bearer {TOKEN}"}
        assert wait_for(lambda: not watchdog.find(out["run_id"]), timeout=10)
    finally:
        kill_watchdogs(out["run_id"])
