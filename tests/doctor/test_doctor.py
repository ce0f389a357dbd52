"""`chaosext doctor`: passes against a running lab, fails with the fix when something required is missing.

The Envoy and Kubernetes checks run against small loopback servers answering with the response shapes of the
projects' own documentation (Envoy admin `/server_info` and `/config_dump` BootstrapConfigDump; Kubernetes
`GET /version` version.Info, `SelfSubjectAccessReview` status, `PodList`), because neither binary can be installed
here (a real Envoy runs in tests/egress/test_egress_envoy.py). The stub does not speak the Kubernetes exec websocket
protocol: the iptables-in-pod check is tested only on its failure path here.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaosext.core.config import load_config
from chaosext.egress.checks import check_envoy, check_kube
from chaosext.run.context import RunContext
from chaosext.safety.preflight import check_approval
from tests.jsonstub import JsonStub
from tests.nsutil import in_ns
from tests.targetutil import target_config, write_lab


def _doctor(netns: str, *args: str, env: dict[str, str] | None = None):
    return in_ns(netns, [sys.executable, "-m", "chaosext.cli", "doctor", *args], env=env, timeout=60)


@pytest.mark.e2e
@pytest.mark.lab
@pytest.mark.netns
def test_doctor_passes_against_a_running_lab(module_netns: str, ns_lab: dict[str, Any]) -> None:
    """Everything a real run needs, checked against the lab with tokens by the client-credentials grant (the lab's
    client given as a real IdP's would be: TOKEN_CLIENT_ID / TOKEN_CLIENT_SECRET)."""
    env = {"TOKEN_CLIENT_ID": ns_lab["client_id"], "TOKEN_CLIENT_SECRET": ns_lab["client_secret"]}
    proc = _doctor(module_netns, "--state-dir", ns_lab["state_dir"], "--json", env=env)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stdout
    checks = {c["name"]: c for c in report["checks"]}
    names = {n for n, c in checks.items() if c["ok"]}
    assert {"approval", "iptables", "ip6tables", "k6", "idp discovery", "tokens", "prometheus", "alertmanager",
            "audit source (file)"} <= names
    assert {f"token: t{i:02d}" for i in range(1, 13)} <= names
    assert {"service: policy", "service: vuln", "service: notify"} <= names
    assert "client credentials (secrets/env" in checks["tokens"]["detail"]
    assert checks["idp discovery"]["detail"].endswith("/token")
    assert checks["idp jwks_uri"]["ok"], checks["idp jwks_uri"]
    assert "/api/v1/findings" in checks["service: vuln"]["detail"] and "HTTP 200" in checks["service: vuln"]["detail"]
    assert report["ok"] is True
    assert ns_lab["client_secret"] not in proc.stdout and "eyJ" not in proc.stdout + proc.stderr  # no JWT printed


@pytest.mark.e2e
@pytest.mark.lab
@pytest.mark.netns
def test_doctor_catches_services_that_would_fail_the_probes(module_netns: str, ns_lab: dict[str, Any]) -> None:
    """Two broken set-ups a reachability check would pass: tokens for another audience (every service answers 401
    to them), and SERVICE_URLS naming the wrong service (its read route 404s)."""
    comps = ns_lab["components"]
    proc = _doctor(module_netns, "--state-dir", ns_lab["state_dir"], "--json", env={"TOKEN_AUDIENCE": "another-api"})
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert proc.returncode == 1 and checks["tokens"]["ok"]
    policy = checks["service: policy"]
    assert policy["status"] == "MISSING" and "HTTP 401" in policy["detail"] and "TOKEN_AUDIENCE" in policy["fix"]
    swapped = f"policy={comps['vuln']['url']},vuln={comps['vuln']['url']},notify={comps['notify']['url']}"
    proc = _doctor(module_netns, "--state-dir", ns_lab["state_dir"], "--json", env={"SERVICE_URLS": swapped})
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert proc.returncode == 1 and checks["service: vuln"]["ok"]
    assert "HTTP 404" in checks["service: policy"]["detail"] and "services.policy" in checks["service: policy"]["fix"]


@pytest.mark.e2e
@pytest.mark.lab
@pytest.mark.netns
def test_doctor_warns_when_the_fault_would_block_an_address_the_idp_does_not_publish(
        module_netns: str, ns_lab: dict[str, Any], unused_port: int) -> None:
    """JWKS_URL elsewhere than discovery's jwks_uri: the fault would block something the services may never use."""
    elsewhere = f"http://127.0.0.1:{unused_port}/.well-known/jwks.json"
    # a JWKS_URL the lab's state file does not name is not the lab's: approved, as any other target would be
    proc = _doctor(module_netns, "--state-dir", ns_lab["state_dir"], "--json",
                   env={"JWKS_URL": elsewhere, "CHAOSEXT_APPROVE": "127.0.0.1"})
    jwks = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "idp jwks_uri")
    assert jwks["status"] == "warn" and elsewhere in jwks["detail"] and ns_lab["jwks_url"] in jwks["detail"]
    assert "fetch the keys" in jwks["fix"]


@pytest.mark.e2e
@pytest.mark.lab
@pytest.mark.netns
def test_doctor_refuses_an_unapproved_target_and_names_the_approval(module_netns: str, ns_lab: dict[str, Any]) -> None:
    target = "netns:" + module_netns  # the lab's own namespace, named as a remote target would be
    proc = _doctor(module_netns, "--state-dir", ns_lab["state_dir"], "--target", target, "--json",
                   env={"CHAOSEXT_APPROVE": ""})
    approval = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "approval")
    assert proc.returncode == 1 and approval["status"] == "MISSING"
    assert f"CHAOSEXT_APPROVE={target}" in approval["fix"] and "chaos-gameday" in approval["fix"]
    proc = _doctor(module_netns, "--state-dir", ns_lab["state_dir"], "--target", target, "--json",
                   env={"CHAOSEXT_APPROVE": target})
    approval = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "approval")
    assert approval["ok"] and target in approval["detail"]


def test_approval_check_needs_the_exact_target(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHAOSEXT_APPROVE", raising=False)
    base = target_config(tmp_path, fault_target="staging/app=policy", fault_via="k8s-networkpolicy")

    def approval(configuration: dict[str, str]) -> Any:
        return check_approval(RunContext(load_config(configuration)))

    assert not approval(base).ok
    wrong = approval({**base, "chaosext_approve": "staging/app=vuln"})
    assert not wrong.ok and "does not name" in wrong.detail and "CHAOSEXT_APPROVE=staging/app=policy" in wrong.fix
    assert approval({**base, "chaosext_approve": "staging/app=policy"}).ok
    assert not approval(target_config(tmp_path)).ok  # a loopback target but no lab: approval needed
    assert approval({"chaosext_lab_dir": str(write_lab(tmp_path / "lab"))}).ok  # the running lab itself needs none


@pytest.mark.e2e
@pytest.mark.lab
@pytest.mark.netns
def test_doctor_fails_without_k6_and_names_the_fix(module_netns: str, ns_lab: dict[str, Any], tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("iptables", "ip6tables", "ip"):
        for d in ("/usr/sbin", "/sbin", "/usr/bin"):
            if Path(d, tool).exists():
                (bare / tool).symlink_to(Path(d, tool))
                break
    env = {"PATH": str(bare), "K6_BIN": ""}
    proc = in_ns(module_netns, [sys.executable, "-m", "chaosext.cli", "doctor", "--state-dir", ns_lab["state_dir"]],
                 env=env, timeout=60)
    assert proc.returncode == 1, proc.stdout
    line = next(x for x in proc.stdout.splitlines() if " k6 " in f" {x} ")
    assert line.startswith("MISSING")
    assert "fix:" in proc.stdout and "K6_BIN" in proc.stdout
    assert "required check(s) missing" in proc.stdout


@pytest.mark.e2e
@pytest.mark.lab
@pytest.mark.netns
def test_doctor_fails_on_a_dead_prometheus(module_netns: str, ns_lab: dict[str, Any], unused_port: int) -> None:
    dead = f"http://127.0.0.1:{unused_port}"
    proc = _doctor(module_netns, "--state-dir", ns_lab["state_dir"], env={"PROMETHEUS_URL": dead})
    assert proc.returncode == 1
    prom = [x for x in proc.stdout.splitlines() if x.startswith("MISSING") and "prometheus" in x]
    assert prom and dead in prom[0] and "(env)" in prom[0]
    assert "PROMETHEUS_URL" in proc.stdout.split(prom[0], 1)[1].splitlines()[1]  # the fix line under it
    assert any(x.startswith("ok") and "alertmanager" in x for x in proc.stdout.splitlines())


@pytest.mark.e2e
@pytest.mark.netns
def test_doctor_fails_without_cap_net_admin(tmp_path: Path) -> None:
    """In a rootless user namespace (`unshare -rn` maps us to root but the iptables lock/tables need the real one)
    the check either passes (rules listable) or fails with the CAP_NET_ADMIN fix - never a traceback."""
    import subprocess

    # a valid target, no lab: its loopback URLs and plain-http services are approved as any other target's would be
    env = dict(os.environ, CHAOSEXT_APPROVE="127.0.0.1", CHAOSEXT_ALLOW_HTTP="true",
               CHAOSEXT_LAB_DIR=str(tmp_path / "no-lab"))
    proc = subprocess.run(["unshare", "-rn", sys.executable, "-m", "chaosext.cli", "doctor", "--json",
                           "--prometheus-url", "http://127.0.0.1:9", "--alertmanager-url", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=60,
                          env={**env, "TARGET_FILE": target_config(tmp_path)["target_file"]})  # the checks run
    report = json.loads(proc.stdout)
    ipt = next(c for c in report["checks"] if c["name"] == "iptables")
    assert ipt["ok"] or "CAP_NET_ADMIN" in ipt["fix"]
    assert proc.returncode == 1  # the dead Prometheus is required


def test_doctor_rejects_a_target_it_does_not_know(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one FAULT_TARGET parser refuses it in the pre-flight's configuration line, naming the forms it takes, and
    nothing past the static checks runs (no network, no tool)."""
    from click.testing import CliRunner

    from chaosext.doctor import doctor

    lab = ["--state-dir", str(tmp_path / "nolab"), "--json"]
    monkeypatch.setenv("TARGET_FILE", target_config(tmp_path)["target_file"])  # every other setting is valid
    for args, forms in ((["--target", "bogus"], "netns:<name|glob>"),
                        (["--via", "envoy", "--target", "netns:lab"], "envoy:<admin-url>")):
        result = CliRunner().invoke(doctor, [*args, *lab])
        assert result.exit_code == 1, result.output
        checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
        assert checks["configuration"]["status"] == "MISSING" and forms in checks["configuration"]["detail"]
        assert set(checks) == {"configuration", "forgery classes", "jku/x5u key URL"}


class _Fake:
    """Answers ``routes[(method, path)] = (status, doc or doc(json_body))``, else 404; keeps POST bodies in ``seen``."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}
        self.seen: list[dict[str, Any]] = []

    def __call__(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        body = {} if body is None else body
        if method == "POST":
            self.seen.append(body)
        status, doc = self.routes.get((method, path), (404, {}))
        return status, doc(body) if callable(doc) else doc


@pytest.fixture
def fake_server() -> Iterator[tuple[str, _Fake]]:
    fake = _Fake()
    with JsonStub(fake, json_body=True) as stub:
        yield stub.url, fake


def _bootstrap_dump(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Envoy /config_dump as documented: configs[] with a v3 BootstrapConfigDump holding the bootstrap."""
    return {"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
         "bootstrap": {"node": {"id": "lab"}, "layered_runtime": {"layers": layers}},
         "last_updated": "2026-11-29T21:00:00Z"},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "static_clusters": []},
    ]}


# check_envoy against a real Envoy 1.40.0 (with and without admin layer / fault filter):
# tests/egress/test_egress_envoy.py


@pytest.mark.contract
def test_envoy_unreachable_fails(unused_port: int) -> None:
    checks = check_envoy(f"http://127.0.0.1:{unused_port}")
    assert len(checks) == 1 and not checks[0].ok and checks[0].fix


@pytest.mark.contract
def test_kube_permissions_from_self_subject_access_reviews(fake_server: tuple[str, _Fake]) -> None:
    """The API server answers SelfSubjectAccessReview with the documented shape (status.allowed, reason);
    deleting NetworkPolicies is denied here, so that check fails and names the Role to grant."""
    from kubernetes import client

    url, handler = fake_server

    def review(body: dict[str, Any]) -> dict[str, Any]:
        attrs = body["spec"]["resourceAttributes"]
        allowed = not (attrs["verb"] == "delete" and attrs["resource"] == "networkpolicies")
        return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": body["spec"],
                "status": {"allowed": allowed, **({} if allowed else {"reason": "RBAC: no rule"})}}

    handler.routes[("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")] = (201, review)
    handler.routes[("GET", "/version/")] = (200, _VERSION)
    cfg = client.Configuration()
    cfg.host = url
    checks = check_kube("chaosext-lab", "k8s-networkpolicy", client.ApiClient(cfg))
    by_name = {c.name: c for c in checks}
    assert by_name["k8s: create networkpolicies.networking.k8s.io in chaosext-lab"].ok
    denied = by_name["k8s: delete networkpolicies.networking.k8s.io in chaosext-lab"]
    assert not denied.ok and "Role" in denied.fix and denied.detail == "RBAC: no rule"
    assert {s["spec"]["resourceAttributes"]["namespace"] for s in handler.seen} == {"chaosext-lab"}


@pytest.mark.contract
@pytest.mark.parametrize("via", ["k8s-networkpolicy", "istio", "iptables-in-pod"])
def test_kube_permissions_include_the_deadline_job_and_the_cluster_lock(fake_server: tuple[str, _Fake],
                                                                      via: str) -> None:
    """The fault's cluster-side deadline (a Job owning the NetworkPolicy / VirtualService) and the run's cluster lock
    (a Lease) need RBAC of their own: doctor asks for it before a run does."""
    from kubernetes import client

    url, handler = fake_server
    handler.routes[("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")] = (201, _allow_all)
    handler.routes[("GET", "/version/")] = (200, _VERSION)
    cfg = client.Configuration()
    cfg.host = url
    names = {c.name for c in check_kube("tenancy", via, client.ApiClient(cfg))}
    lease = {f"k8s: {verb} leases.coordination.k8s.io in tenancy" for verb in ("get", "create", "update", "delete")}
    jobs = {f"k8s: {verb} jobs.batch in tenancy" for verb in ("create", "delete", "list")}
    assert lease <= names, sorted(names)
    assert (jobs <= names) == (via != "iptables-in-pod"), sorted(names)


#: `GET /version` as documented (k8s.io/apimachinery/pkg/version.Info); the Python client asks for `/version/`
_VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "gitCommit": "0" * 40, "gitTreeState": "clean",
            "buildDate": "2024-08-13T07:28:49Z", "goVersion": "go1.22.5", "compiler": "gc", "platform": "linux/amd64"}


def _pod(name: str, phase: str = "Running") -> dict[str, Any]:
    """A v1 Pod as listed by `GET /api/v1/namespaces/{ns}/pods` (the fields the drivers read)."""
    return {"metadata": {"name": name, "namespace": "chaosext-lab", "labels": {"app": "policy"}},
            "spec": {"containers": [{"name": "svc", "image": "chaosext-lab:ci"}]}, "status": {"phase": phase}}


def _allow_all(body: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "spec": body["spec"],
            "status": {"allowed": True}}


@pytest.mark.contract
def test_kube_checks_use_the_drivers_client_and_need_running_target_pods(fake_server: tuple[str, _Fake]) -> None:
    """Through the fault drivers' own client (KUBE_API_URL, as `kubectl proxy` gives): API reachable (version),
    RBAC allowed, and the selector must match running pods: a NetworkPolicy that selects nothing blocks nothing."""
    url, handler = fake_server
    handler.routes[("GET", "/version/")] = (200, _VERSION)
    handler.routes[("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")] = (201, _allow_all)
    pods = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
            "items": [_pod("policy-7c9f-abcde"), _pod("policy-old", "Succeeded")]}
    handler.routes[("GET", "/api/v1/namespaces/chaosext-lab/pods")] = (200, pods)
    checks = {c.name: c for c in check_kube("chaosext-lab", "k8s-networkpolicy", target="chaosext-lab/app=policy",
                                            options={"kube_api_url": url})}
    assert checks["kube api"].ok and "v1.31.0" in checks["kube api"].detail
    assert checks["k8s: target pods"].ok and "1 running pod(s): policy-7c9f-abcde" in checks["k8s: target pods"].detail
    pods["items"] = [_pod("policy-old", "Succeeded")]
    checks = {c.name: c for c in check_kube("chaosext-lab", "k8s-networkpolicy", target="chaosext-lab/app=policy",
                                            options={"kube_api_url": url})}
    missing = checks["k8s: target pods"]
    assert not missing.ok and "no running pod" in missing.detail and "kubectl get pods -n chaosext-lab -l app=policy" \
        in missing.fix


@pytest.mark.contract
def test_kube_api_unreachable_stops_before_rbac(unused_port: int) -> None:
    checks = check_kube("chaosext-lab", "k8s-networkpolicy", target="chaosext-lab/app=policy",
                        options={"kube_api_url": f"http://127.0.0.1:{unused_port}"})
    assert [c.name for c in checks] == ["kube context", "kube api"]
    assert not checks[1].ok and "cluster-info" in checks[1].fix


@pytest.mark.contract
def test_iptables_in_pod_check_fails_with_the_net_admin_fix(fake_server: tuple[str, _Fake]) -> None:
    """The exec into the pod fails (this stub refuses the exec websocket, as an API server does without
    pods/exec): the line says so and names NET_ADMIN / k8s_debug_image, never a traceback."""
    url, handler = fake_server
    handler.routes[("GET", "/version/")] = (200, _VERSION)
    handler.routes[("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")] = (201, _allow_all)
    handler.routes[("GET", "/api/v1/namespaces/chaosext-lab/pods/policy-0")] = (200, _pod("policy-0"))
    checks = check_kube("chaosext-lab", "iptables-in-pod", target="chaosext-lab/policy-0",
                        options={"kube_api_url": url})
    line = checks[-1]
    assert line.name == "iptables in k8s-pod:chaosext-lab/policy-0" and not line.ok
    assert "NET_ADMIN" in line.fix and "k8s_debug_image" in line.fix
