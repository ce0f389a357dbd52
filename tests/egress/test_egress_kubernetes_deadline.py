"""The Kubernetes faults' cluster-side deadline: a NetworkPolicy / VirtualService goes away at its deadline with no
chaosext process alive (the CI runner that applied it died, no watchdog anywhere).

Contract tests: the real ``kubernetes`` client against tests/kubestub.py (no API server is installable here), whose
``run_controllers`` plays what the cluster does on its own as the Kubernetes documentation describes it -- the Job
controller fails a Job at ``status.startTime + activeDeadlineSeconds`` (condition ``Failed`` / ``DeadlineExceeded``),
the TTL-after-finished controller deletes a finished Job ``ttlSecondsAfterFinished`` later, and the garbage collector
deletes an object whose owners (``metadata.ownerReferences``, by uid, in the same namespace) are all gone.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from chaosext.egress.actions import block_jwks_egress, restore_jwks_egress
from chaosext.egress.base import FaultError
from chaosext.egress.cli import restore
from tests.kubestub import KubeStub, status

pytestmark = [pytest.mark.contract]

NS = "/apis/{}/namespaces/tenancy/{}"
JOBS = NS.format("batch/v1", "jobs")
NP = NS.format("networking.k8s.io/v1", "networkpolicies")
VS = NS.format("networking.istio.io/v1beta1", "virtualservices")
FAULTS = {"k8s-networkpolicy": NP, "istio": VS}
URL = "http://10.96.40.7:8440/.well-known/jwks.json"


@pytest.fixture
def kube() -> Iterator[KubeStub]:
    with KubeStub() as stub:
        yield stub


def block(stub: KubeStub, via: str = "k8s-networkpolicy", **kw: Any) -> dict[str, Any]:
    """A fault applied by a run that then dies: no watchdog, nothing on this machine will ever lift it."""
    args = {"jwks_url": URL, "via": via, "target": "tenancy/app=policy", "mode": "reject", "deadline_seconds": 120,
            "use_watchdog": False, "kube_api_url": stub.url, **kw}
    return block_jwks_egress(**args)


@pytest.mark.parametrize("via", sorted(FAULTS))
def test_the_fault_is_owned_by_a_job_whose_deadline_removes_it_without_the_runner(kube: KubeStub, state_dir,
                                                                                  via: str) -> None:
    out = block(kube, via)
    run_id = out["run_id"]
    fault = kube.get(FAULTS[via], f"chaosext-jwks-{run_id}")
    job = kube.get(JOBS, f"chaosext-deadline-{run_id}")
    assert fault and job, "the fault and its deadline Job are in the namespace"

    spec = job["spec"]
    assert 120 <= spec["activeDeadlineSeconds"] <= 121, "the Job fails when the fault's deadline passes"
    assert spec["ttlSecondsAfterFinished"] == 0
    assert fault["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"]}]
    assert job["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "chaosext", "chaosext.io/run-id": run_id,
                                         "chaosext.io/role": "deadline"}
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert out["applied"]["deadline_job"] == job["metadata"]["name"]
    assert out["verification"]["blocked"] is True and out["verification"]["cluster_deadline"] == job["metadata"]["name"]

    started = kube.now
    assert kube.run_controllers(at=started + spec["activeDeadlineSeconds"] - 1) == []
    assert kube.get(FAULTS[via], f"chaosext-jwks-{run_id}"), "still blocked one second before the deadline"

    done = kube.run_controllers(at=started + spec["activeDeadlineSeconds"])
    assert any("DeadlineExceeded" in d for d in done) and any("ttlSecondsAfterFinished" in d for d in done)
    assert kube.objects[FAULTS[via]] == {} and kube.objects[JOBS] == {}, done


def test_the_stub_keeps_objects_that_have_no_owner_or_a_live_one(kube: KubeStub) -> None:
    """The garbage collector of the stub deletes only what lost its owner (else the test above could not fail)."""
    kube.objects[NP] = {"plain": {"kind": "NetworkPolicy", "metadata": {"name": "plain", "uid": "u1"}}}
    kube.objects[JOBS] = {"keeper": {"kind": "Job", "metadata": {"name": "keeper", "uid": "j1"},
                                     "spec": {"template": {"spec": {"restartPolicy": "Never"}}},
                                     "status": {"startTime": "2026-12-01T10:00:00Z"}}}
    kube.objects[NP]["owned"] = {"kind": "NetworkPolicy", "metadata": {"name": "owned", "uid": "u2",
                                                                       "ownerReferences": [{"uid": "j1"}]}}
    other_ns = "/apis/batch/v1/namespaces/elsewhere/jobs"
    kube.objects[other_ns] = {"far": {"kind": "Job", "metadata": {"name": "far", "uid": "j9"}, "spec": {},
                                      "status": {"startTime": "2026-12-01T10:00:00Z"}}}
    kube.objects[NP]["cross"] = {"kind": "NetworkPolicy", "metadata": {"name": "cross", "uid": "u3",
                                                                       "ownerReferences": [{"uid": "j9"}]}}
    kube.run_controllers(at=kube.now + 10 ** 6)
    # a namespaced owner in another namespace counts as absent (Kubernetes' garbage-collection rule)
    assert set(kube.objects[NP]) == {"plain", "owned"}


def test_restore_deletes_the_fault_and_its_job_with_the_pod(kube: KubeStub, state_dir) -> None:
    out = block(kube)
    restore_jwks_egress(via="k8s-networkpolicy", target="tenancy/app=policy", kube_api_url=kube.url)
    assert kube.objects[NP] == {} and kube.objects[JOBS] == {}
    deletes = [(r.path, q) for r, q in zip(kube.requests, kube.queries, strict=True) if r.method == "DELETE"]
    assert (f"{JOBS}/chaosext-deadline-{out['run_id']}", {"propagationPolicy": "Background"}) in deletes


def test_a_job_the_api_refuses_stops_the_fault_before_any_change(kube: KubeStub, state_dir) -> None:
    kube.forced[("POST", JOBS)] = (403, status(403, "Forbidden", 'jobs.batch is forbidden: User "ci" cannot create'))
    with pytest.raises(FaultError, match=r"forbidden.*deadline Job.*jobs\.batch"):
        block(kube)
    assert not kube.objects.get(NP) and not list(state_dir.glob("*.json"))


def test_a_fault_the_api_refuses_takes_its_job_back(kube: KubeStub, state_dir) -> None:
    kube.forced[("POST", NP)] = (403, status(403, "Forbidden", "networkpolicies.networking.k8s.io is forbidden"))
    with pytest.raises(FaultError, match="forbidden"):
        block(kube)
    assert kube.objects[JOBS] == {}, "no deadline Job is left behind without its fault"


def test_restore_all_sweeps_a_deadline_job_left_alone(kube: KubeStub, state_dir) -> None:
    """A run that died between creating the Job and the policy leaves a Job only: the panic button finds it by label."""
    out = block(kube)
    del kube.objects[NP][f"chaosext-jwks-{out['run_id']}"]
    for record in state_dir.glob("*.json"):
        record.unlink()
    res = CliRunner().invoke(restore, ["--all", "--via", "k8s-networkpolicy", "--target", "tenancy/app=policy",
                                       "--kube-api-url", kube.url])
    assert res.exit_code == 0, res.output
    assert kube.objects[JOBS] == {}, res.output


def test_dry_run_shows_the_job_and_the_owned_object(kube: KubeStub, state_dir) -> None:
    out = block(kube, dry_run=True)
    commands = out["commands"]
    assert commands[0].startswith(f"POST {JOBS} ") and '"activeDeadlineSeconds"' in commands[0]
    assert commands[1].startswith(f"POST {NP} ") and '"ownerReferences"' in commands[1]
    assert not [r for r in kube.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]
