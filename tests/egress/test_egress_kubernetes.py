"""Contract tests of the NetworkPolicy / Istio drivers and the k8s-pod target: the real ``kubernetes`` python client
against a local HTTP server answering with Kubernetes API shapes (no API server is installable here).

Shapes follow the Kubernetes API reference / API conventions: created objects echo back with 201, lists are
``{"kind": "<Kind>List", "metadata": {...}, "items": [...]}``, errors are ``Status`` objects
``{"kind": "Status", "status": "Failure", "reason": "NotFound|AlreadyExists|Forbidden", "code": 404|409|403}``;
label selectors arrive as ``?labelSelector=k=v``; ephemeral containers are added by PATCHing
``/api/v1/namespaces/{ns}/pods/{name}/ephemeralcontainers``. Istio objects are custom resources under
``/apis/networking.istio.io/v1beta1``. Pod exec (websocket) is not exercised here.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chaosext.egress.actions import block_jwks_egress, restore_jwks_egress
from chaosext.egress.base import FaultError
from chaosext.egress.kubernetes import PodRunner, pod_runners
from chaosext.egress.probes import egress_block_active
from tests.kubestub import KubeStub, status

pytestmark = [pytest.mark.contract]

class FakeKube(KubeStub):
    """The shared Kubernetes API stub plus the pods' ``ephemeralcontainers`` subresource (the k8s-pod target)."""

    def add(self, collection: str, obj: dict[str, Any]) -> None:
        self.objects.setdefault(collection, {})[obj["metadata"]["name"]] = obj

    def _handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        parts = path.rstrip("/").split("/")
        if parts[-1] != "ephemeralcontainers" or method != "PATCH":
            return super()._handle(method, path, query, body)
        pod = self.objects.get("/".join(parts[:-2]), {}).get(parts[-2])
        if not pod:
            return 404, status(404, "NotFound", f'pods "{parts[-2]}" not found')
        pod["spec"].setdefault("ephemeralContainers", []).extend(body["spec"]["ephemeralContainers"])
        pod["status"]["ephemeralContainerStatuses"] = [
            {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
             "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
            for c in pod["spec"]["ephemeralContainers"]]
        return 200, pod


@pytest.fixture
def kube() -> Iterator[tuple[FakeKube, str]]:
    with FakeKube() as fake:
        yield fake, fake.url


NP = "/apis/networking.k8s.io/v1/namespaces/tenancy/networkpolicies"
JOBS = "/apis/batch/v1/namespaces/tenancy/jobs"
VS = "/apis/networking.istio.io/v1beta1/namespaces/tenancy/virtualservices"
URL = "http://10.96.40.7:8440/.well-known/jwks.json"


def _np(api: str, **kw: Any) -> dict:
    args = {"jwks_url": URL, "via": "k8s-networkpolicy", "target": "tenancy/app=policy", "mode": "drop",
            "deadline_seconds": 120, "use_watchdog": False, "kube_api_url": api, **kw}
    return block_jwks_egress(**args)


def test_networkpolicy_denies_only_the_jwks_address_and_port_and_is_removed_by_label(kube, state_dir):
    fake, api = kube
    out = _np(api)

    assert [r[:2] for r in fake.requests if r[0] == "POST"] == [("POST", JOBS), ("POST", NP)]  # the deadline first
    body = next(r for r in fake.requests if r[1] == NP)[2]
    assert body["metadata"]["name"] == f"chaosext-jwks-{out['run_id']}"
    assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "chaosext",
                                          "chaosext.io/run-id": out["run_id"]}
    spec = body["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app": "policy"}} and spec["policyTypes"] == ["Egress"]
    assert spec["egress"][0]["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.96.40.7/32"]}},
                                       {"ipBlock": {"cidr": "::/0"}}]
    assert spec["egress"][1]["to"] == [{"ipBlock": {"cidr": "10.96.40.7/32"}}]
    assert {"protocol": "TCP", "port": 1, "endPort": 8439} in spec["egress"][1]["ports"]
    assert {"protocol": "TCP", "port": 8441, "endPort": 65535} in spec["egress"][1]["ports"]
    assert not any(p.get("port") == 8440 for p in spec["egress"][1]["ports"])
    assert out["verification"]["blocked"] is True
    assert egress_block_active(via="k8s-networkpolicy", target="tenancy/app=policy",
                               configuration={"KUBE_API_URL": api})["active"] is True

    restore_jwks_egress(via="k8s-networkpolicy", target="tenancy/app=policy", kube_api_url=api)
    assert ("DELETE", f"{NP}/chaosext-jwks-{out['run_id']}", None) in [r[:3] for r in fake.requests]
    assert fake.objects[NP] == {} and fake.objects[JOBS] == {}
    again = restore_jwks_egress(via="k8s-networkpolicy", target="tenancy/app=policy", kube_api_url=api)
    assert again["left"] == []


def test_networkpolicy_ipv6_addresses_go_to_the_v6_block(kube, state_dir):
    fake, api = kube
    _np(api, jwks_url="http://[fd00:10::7]:8440/jwks")
    to = next(r for r in fake.requests if r[1] == NP)[2]["spec"]["egress"][0]["to"]
    assert to == [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0", "except": ["fd00:10::7/128"]}}]


def test_networkpolicy_409_means_already_applied_and_404_delete_is_tolerated(kube, state_dir):
    fake, api = kube
    out = _np(api)
    second = _np(api)  # reuses the record: the POST answers 409, still one object
    assert second["run_id"] == out["run_id"] and second["applied"]["created"] is False
    assert len(fake.objects[NP]) == 1
    del fake.objects[NP][f"chaosext-jwks-{out['run_id']}"]  # someone deleted it already
    assert restore_jwks_egress(via="k8s-networkpolicy", target="tenancy/app=policy", kube_api_url=api)["left"] == []


def test_networkpolicy_403_is_a_clear_error_and_leaves_no_record(kube, state_dir):
    fake, api = kube
    fake.forced[("POST", NP)] = (403, status(403, "Forbidden", "networkpolicies is forbidden"))
    with pytest.raises(FaultError, match=r"forbidden.*RBAC"):
        _np(api)
    assert not state_dir.exists() or not list(state_dir.glob("*.json"))


def test_networkpolicy_orphans_are_found_by_label_without_records(kube, state_dir):
    fake, api = kube
    out = _np(api)
    for f in state_dir.glob("*.json"):
        f.unlink()
    from click.testing import CliRunner

    from chaosext.egress.cli import restore

    res = CliRunner().invoke(restore, ["--all", "--via", "k8s-networkpolicy", "--target", "tenancy/app=policy",
                                       "--kube-api-url", api])
    assert res.exit_code == 0, res.output
    assert f"removed fault {out['run_id']}" in res.output and fake.objects[NP] == {}


def test_no_kube_context_is_a_clear_error(state_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(FaultError, match="no Kubernetes context"):
        block_jwks_egress(URL, via="k8s-networkpolicy", target="tenancy/app=policy", deadline_seconds=60,
                          use_watchdog=False)


def test_istio_abort_for_the_authority_host_from_the_selected_pods(kube, state_dir):
    fake, api = kube
    out = block_jwks_egress("http://authority.auth.svc.cluster.local:8440/jwks", via="istio",
                            target="tenancy/app=policy", mode="reject", deadline_seconds=60, use_watchdog=False,
                            kube_api_url=api)
    post = [r for r in fake.requests if r[0] == "POST"]
    assert [p[1] for p in post] == [JOBS, VS]
    spec = post[1][2]["spec"]
    assert spec["hosts"] == ["authority.auth.svc.cluster.local"] and spec["exportTo"] == ["."]
    assert spec["http"][0]["fault"] == {"abort": {"httpStatus": 503, "percentage": {"value": 100.0}}}
    assert spec["http"][0]["match"] == [{"port": 8440, "sourceLabels": {"app": "policy"}}]
    assert "fault" not in spec["http"][1]  # everyone else keeps the normal route
    assert out["verification"]["blocked"] is True
    restore_jwks_egress(via="istio", target="tenancy/app=policy", kube_api_url=api)
    assert fake.objects[VS] == {}


def test_istio_drop_is_a_delay_as_long_as_the_outage(kube, state_dir):
    fake, api = kube
    block_jwks_egress("http://authority:8440/jwks", via="istio", target="tenancy/", mode="drop",
                      deadline_seconds=45, use_watchdog=False, kube_api_url=api)
    http = next(r for r in fake.requests if r[0] == "POST" and r[1] != JOBS)[2]["spec"]["http"][0]
    assert http["fault"]["delay"]["fixedDelay"] == "45s" and "sourceLabels" not in http["match"][0]


@pytest.mark.parametrize("setup,url,message", [
    (None, "https://authority:8443/jwks", "TLS passthrough"),
    ({"coll": "/apis/networking.istio.io/v1beta1/namespaces/auth/serviceentries",
      "obj": {"metadata": {"name": "authority-tls"},
              "spec": {"hosts": ["authority"], "ports": [{"number": 8440, "name": "tls", "protocol": "TLS"}]}}},
     "http://authority:8440/jwks", "ServiceEntry authority-tls"),
    ({"coll": "/apis/networking.istio.io/v1beta1/namespaces/istio-system/gateways",
      "obj": {"metadata": {"name": "egress"}, "spec": {"servers": [
          {"hosts": ["*/authority"], "port": {"number": 443}, "tls": {"mode": "PASSTHROUGH"}}]}}},
     "http://authority:8440/jwks", "Gateway egress"),
    ({"coll": VS, "obj": {"metadata": {"name": "authority-routes"}, "spec": {"hosts": ["authority"]}}},
     "http://authority:8440/jwks", "already routes"),
])
def test_istio_refuses_tls_passthrough_and_competing_routes(kube, state_dir, setup, url, message):
    fake, api = kube
    if setup:
        fake.add(setup["coll"], setup["obj"])
        # the fake lists cluster-wide collections at /apis/<g>/<v>/<plural>
        plural = setup["coll"].rsplit("/", 1)[1]
        if plural != "virtualservices":
            fake.add(f"/apis/networking.istio.io/v1beta1/{plural}", setup["obj"])
    with pytest.raises(FaultError, match=message):
        block_jwks_egress(url, via="istio", target="tenancy/app=policy", mode="reject", deadline_seconds=60,
                          use_watchdog=False, kube_api_url=api)
    assert not [r for r in fake.requests if r[0] == "POST"]


def _pod(name: str, host_network: bool = False, phase: str = "Running") -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "tenancy", "labels": {"app": "policy"}},
            "spec": {"containers": [{"name": "policy", "image": "policy:1"}], "hostNetwork": host_network},
            "status": {"phase": phase}}


def test_k8s_pod_target_adds_a_net_admin_ephemeral_container(kube):
    fake, api = kube
    from kubernetes import client

    fake.add("/api/v1/namespaces/tenancy/pods", _pod("policy-1"))
    fake.add("/api/v1/namespaces/tenancy/pods", _pod("policy-2", phase="Pending"))
    cfg = client.Configuration()
    cfg.host = api
    runners = pod_runners("tenancy/app=policy", {"k8s_debug_image": "netshoot:v0.13"}, client.ApiClient(cfg))

    assert [r.label for r in runners] == ["k8s-pod:tenancy/policy-1"]
    assert not [r for r in fake.requests if r[0] == "PATCH"]  # nothing changes until a command runs (dry run)
    assert runners[0].ensure_debug_container() == "chaosext-netadmin"
    patch = [r for r in fake.requests if r[0] == "PATCH"]
    assert patch[0][1] == "/api/v1/namespaces/tenancy/pods/policy-1/ephemeralcontainers"
    c = patch[0][2]["spec"]["ephemeralContainers"][0]
    assert c["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"] and c["image"] == "netshoot:v0.13"
    assert runners[0].container == "chaosext-netadmin"
    assert runners[0].shown(["iptables", "-S"]).startswith("kubectl exec -n tenancy policy-1 -c chaosext-netadmin")
    assert isinstance(runners[0], PodRunner)


def test_k8s_pod_target_refuses_host_network_pods_and_missing_pods(kube, state_dir):
    fake, api = kube
    fake.add("/api/v1/namespaces/tenancy/pods", _pod("node-agent", host_network=True))
    with pytest.raises(FaultError, match="hostNetwork"):
        block_jwks_egress(URL, target="k8s-pod:tenancy/node-agent", deadline_seconds=60, use_watchdog=False,
                          kube_api_url=api)
    with pytest.raises(FaultError, match="not found"):
        block_jwks_egress(URL, target="k8s-pod:tenancy/nope", deadline_seconds=60, use_watchdog=False,
                          kube_api_url=api)
    assert not [r for r in fake.requests if r[0] in ("POST", "PATCH")]
