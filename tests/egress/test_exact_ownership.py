"""Issue 27, item 9: a chain, rule, Kubernetes object or Envoy runtime tag is chaosext's only when it matches the
whole pattern (``CHAOSEXT-<8 hex>``, ``chaosext:<8 hex>``, ``chaosext-jwks-<8 hex>`` with the run-id label, the Envoy
``run_id`` tag). `restore --all` used to match run ids as substrings: ``chaosext:ssh`` in an unrelated rule's comment
and a user chain named ``CHAOSEXT-corpfw`` were both removed."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from chaosext.egress.actions import block_jwks_egress, restore
from tests.egress.envoy_util import RealEnvoy, real_envoy
from tests.kubestub import KubeStub
from tests.nsutil import fresh_netns

URL = "http://10.213.251.2:8440/.well-known/jwks.json"
USER_RULES = [
    ["-N", "CHAOSEXT-corpfw"],
    ["-A", "CHAOSEXT-corpfw", "-p", "tcp", "--dport", "443", "-j", "ACCEPT"],
    ["-A", "OUTPUT", "-j", "CHAOSEXT-corpfw"],
    ["-A", "OUTPUT", "-p", "tcp", "--dport", "22", "-m", "comment", "--comment", "chaosext:ssh", "-j", "ACCEPT"],
    ["-A", "OUTPUT", "-p", "tcp", "--dport", "25", "-m", "comment", "--comment", "chaosext:1a2b3c4d keep",
     "-j", "ACCEPT"],
    ["-N", "CHAOSEXT-1a2b3c4d5"],
    ["-A", "OUTPUT", "-j", "CHAOSEXT-1a2b3c4d5"],
]


def _ns_iptables(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "iptables", "-w", "5", *argv], check=True,
                          capture_output=True, text=True, timeout=20).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    with fresh_netns("cxown") as name:
        yield name


@pytest.mark.e2e
@pytest.mark.netns
def test_restore_all_removes_only_rules_and_chains_whose_names_are_exactly_chaosexts(netns: str,
                                                                                    state_dir: Path) -> None:
    for rule in USER_RULES:
        _ns_iptables(netns, *rule)
    before = _ns_iptables(netns, "-S").splitlines()
    out = block_jwks_egress(jwks_url=URL, via="iptables", target=f"netns:{netns}", deadline_seconds=60,
                            use_watchdog=False, verify=False, run_id="1a2b3c4d")
    assert any("CHAOSEXT-1a2b3c4d " in line or line.endswith("CHAOSEXT-1a2b3c4d")
               for line in _ns_iptables(netns, "-S").splitlines())
    swept = restore("iptables", f"netns:{netns}", all_on_target=True, verify=False)
    after = _ns_iptables(netns, "-S").splitlines()
    assert after == before, f"restore --all touched rules that are not chaosext's: {sorted(set(before) - set(after))}"
    assert [r["run_id"] for r in swept["restored"]] == [out["run_id"]] and swept["left"] == []


@pytest.mark.contract
def test_kubernetes_objects_are_ours_only_with_the_exact_name_and_run_id_label() -> None:
    """Objects that merely carry the managed-by label (a run-id label ``ssh``, or a name not made from the run id)
    are somebody else's; restore --all deletes only chaosext-jwks-<run id> labelled with that run id."""
    np = "/apis/networking.k8s.io/v1/namespaces/tenancy/networkpolicies"

    def obj(name: str, run_id: str) -> dict[str, object]:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": "tenancy",
                             "labels": {"app.kubernetes.io/managed-by": "chaosext", "chaosext.io/run-id": run_id}},
                "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}

    with KubeStub() as kube:
        kube.objects[np] = {"chaosext-jwks-1a2b3c4d": obj("chaosext-jwks-1a2b3c4d", "1a2b3c4d"),
                            "team-ssh-allow": obj("team-ssh-allow", "ssh"),
                            "chaosext-jwks-ssh": obj("chaosext-jwks-ssh", "ssh"),
                            "corp-egress": obj("corp-egress", "0badc0de")}
        swept = restore("k8s-networkpolicy", "tenancy/app=policy", all_on_target=True, verify=False,
                        options={"kube_api_url": kube.url})
        assert sorted(kube.objects[np]) == ["chaosext-jwks-ssh", "corp-egress", "team-ssh-allow"]
        assert [r["run_id"] for r in swept["restored"]] == ["1a2b3c4d"]


@pytest.mark.e2e
def test_envoy_keys_without_a_chaosext_run_id_tag_are_left_alone(tmp_path: Path, state_dir: Path) -> None:
    with real_envoy(tmp_path / "envoy") as proxy:
        _set(proxy, {"chaosext.jwks.abort.abort_percent": "100", "chaosext.jwks.run_id": "manual-drill"})
        swept = restore("envoy", proxy.admin_url, all_on_target=True, verify=False)
        assert swept["restored"] == []
        assert proxy.runtime().get("chaosext.jwks.run_id") == "manual-drill"
        assert proxy.runtime().get("chaosext.jwks.abort.abort_percent") == "100"


def _set(proxy: RealEnvoy, keys: dict[str, str]) -> None:
    assert requests.post(f"{proxy.admin_url}/runtime_modify", params=keys, timeout=5).status_code == 200
