"""`chaosext doctor`: passes against a running lab, fails with the fix when something required is missing.

The Envoy and Kubernetes checks run against small loopback servers answering with the response shapes of the
projects' own documentation (Envoy admin `/server_info` and `/config_dump` BootstrapConfigDump; Kubernetes
`SelfSubjectAccessReview` status), because neither binary can be installed here.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from chaosext.doctor import check_envoy, check_kube

from ops_util import in_ns
from jsonstub import JsonStub


def _doctor(netns: str, *args: str, env: dict[str, str] | None = None):
    return in_ns(netns, [sys.executable, "-m", "chaosext.cli", "doctor", *args], env=env, timeout=60)


@pytest.mark.lab
@pytest.mark.netns
def test_doctor_passes_against_a_running_lab(netns: str, ns_lab: dict[str, Any]) -> None:
    proc = _doctor(netns, "--state-dir", ns_lab["state_dir"], "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stdout
    names = {c["name"] for c in report["checks"] if c["ok"]}
    assert {"iptables", "ip6tables", "k6", "prometheus", "alertmanager"} <= names
    assert report["ok"] is True


@pytest.mark.lab
@pytest.mark.netns
def test_doctor_fails_without_k6_and_names_the_fix(netns: str, ns_lab: dict[str, Any], tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("iptables", "ip6tables", "ip"):
        for d in ("/usr/sbin", "/sbin", "/usr/bin"):
            if Path(d, tool).exists():
                (bare / tool).symlink_to(Path(d, tool))
                break
    env = {"PATH": str(bare), "K6_BIN": ""}
    proc = in_ns(netns, [sys.executable, "-m", "chaosext.cli", "doctor", "--state-dir", ns_lab["state_dir"]],
                 env=env, timeout=60)
    assert proc.returncode == 1, proc.stdout
    line = next(l for l in proc.stdout.splitlines() if " k6 " in f" {l} ")
    assert line.startswith("MISSING")
    assert "fix:" in proc.stdout and "K6_BIN" in proc.stdout
    assert "required check(s) missing" in proc.stdout


@pytest.mark.lab
@pytest.mark.netns
def test_doctor_fails_on_a_dead_prometheus(netns: str, ns_lab: dict[str, Any], unused_port: int) -> None:
    dead = f"http://127.0.0.1:{unused_port}"
    proc = _doctor(netns, "--state-dir", ns_lab["state_dir"], env={"PROMETHEUS_URL": dead})
    assert proc.returncode == 1
    prom = [l for l in proc.stdout.splitlines() if l.startswith("MISSING") and "prometheus" in l]
    assert prom and dead in prom[0] and "(env)" in prom[0]
    assert "PROMETHEUS_URL" in proc.stdout.split(prom[0], 1)[1].splitlines()[1]  # the fix line under it
    assert any(l.startswith("ok") and "alertmanager" in l for l in proc.stdout.splitlines())


@pytest.mark.netns
def test_doctor_fails_without_cap_net_admin(tmp_path: Path) -> None:
    """In a rootless user namespace (`unshare -rn` maps us to root but the iptables lock/tables need the real one)
    the check either passes (rules listable) or fails with the CAP_NET_ADMIN fix - never a traceback."""
    import subprocess

    proc = subprocess.run(["unshare", "-rn", sys.executable, "-m", "chaosext.cli", "doctor", "--json",
                           "--prometheus-url", "http://127.0.0.1:9", "--alertmanager-url", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    report = json.loads(proc.stdout)
    ipt = next(c for c in report["checks"] if c["name"] == "iptables")
    assert ipt["ok"] or "CAP_NET_ADMIN" in ipt["fix"]
    assert proc.returncode == 1  # the dead Prometheus is required


def test_doctor_rejects_a_target_it_does_not_know() -> None:
    from click.testing import CliRunner

    from chaosext.doctor import doctor

    result = CliRunner().invoke(doctor, ["--target", "bogus"])
    assert result.exit_code == 2 and "netns:<name>" in result.output
    result = CliRunner().invoke(doctor, ["--via", "envoy", "--target", "local"])
    assert result.exit_code == 2 and "envoy:<admin-url>" in result.output


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


# check_envoy against a real Envoy 1.40.0 (with and without admin layer / fault filter): tests/egress/test_egress_envoy.py


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
    cfg = client.Configuration()
    cfg.host = url
    checks = check_kube("chaosext-lab", "k8s-networkpolicy", client.ApiClient(cfg))
    by_name = {c.name: c for c in checks}
    assert by_name["k8s: create networkpolicies.networking.k8s.io in chaosext-lab"].ok
    denied = by_name["k8s: delete networkpolicies.networking.k8s.io in chaosext-lab"]
    assert not denied.ok and "Role" in denied.fix and denied.detail == "RBAC: no rule"
    assert {s["spec"]["resourceAttributes"]["namespace"] for s in handler.seen} == {"chaosext-lab"}
