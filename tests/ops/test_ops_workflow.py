"""The gated GitHub workflow and the kind manifests: the parts the runbook relies on are there, and they agree with
each other and with the code they start (flags, labels, ports)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "jwks-outage.yml"
KIND = REPO / "deploy" / "kind"


def _workflow() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # PyYAML reads the key `on` as boolean True
    return doc


def _runs(job: dict[str, Any]) -> list[str]:
    return [s.get("run", "") for s in job["steps"]]


def _manifests() -> list[dict[str, Any]]:
    return [d for f in sorted((KIND / "manifests").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def test_workflow_is_manual_with_the_four_inputs() -> None:
    wf = _workflow()
    assert list(wf["on"]) == ["workflow_dispatch"], "must only run when a person dispatches it"
    inputs = wf["on"]["workflow_dispatch"]["inputs"]
    assert {"target", "outage_seconds", "fault_method", "dry_run"} <= set(inputs)
    assert inputs["dry_run"]["type"] == "boolean" and inputs["dry_run"]["default"] is True
    assert set(inputs["fault_method"]["options"]) == {"iptables", "envoy", "k8s-networkpolicy", "istio"}
    assert wf["concurrency"]["cancel-in-progress"] is False and wf["concurrency"]["group"]


@pytest.mark.parametrize("job_name", ["gameday", "kind"])
def test_each_job_is_gated_and_always_restores(job_name: str) -> None:
    job = _workflow()["jobs"][job_name]
    assert job["environment"] == "chaos-gameday", "the protected environment's required reviewers are the gate"
    runs = _runs(job)
    order = [next(i for i, r in enumerate(runs) if key in r) for key in
             ("scripts/setup", "chaosext doctor", "chaos ", "chaosext verdict", "chaosext report")]
    assert order == sorted(order), "install, doctor, chaos run, verdict, report - in that order"
    assert any("--journal-path" in r for r in runs)
    last = job["steps"][-1] if job_name == "kind" else next(s for s in job["steps"] if "restore" in s.get("run", ""))
    assert "chaosext restore --all" in last["run"] and last["if"] == "${{ always() }}"
    assert job["steps"].index(last) > next(i for i, r in enumerate(runs) if "chaos " in r)
    uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and uploads[0]["if"] == "${{ always() }}" and "artefacts/" in uploads[0]["with"]["path"]


def test_gate_is_documented_in_the_workflow_and_the_runbook() -> None:
    assert "Required reviewers" in WORKFLOW.read_text()
    runbook = (REPO / "docs" / "runbook.md").read_text()
    assert "chaos-gameday" in runbook and "required reviewers" in runbook.lower()


def test_kind_job_uses_the_kubernetes_fault_on_the_labs_pods() -> None:
    job = _workflow()["jobs"]["kind"]
    assert job["env"]["FAULT_VIA"] == "k8s-networkpolicy"
    namespace, selector = job["env"]["FAULT_TARGET"].split("/", 1)
    key, value = selector.split("=")
    services = [d for d in _manifests() if d["kind"] == "Deployment" and d["metadata"]["namespace"] == namespace
                and d["spec"]["template"]["metadata"]["labels"].get(key) == value]
    assert sorted(d["metadata"]["name"] for d in services) == ["notify", "policy", "vuln"]
    kind_step = next(s for s in job["steps"] if "kind-action" in str(s.get("uses", "")))
    assert (REPO / kind_step["with"]["config"]).exists()
    authority = next(d for d in _manifests() if d["kind"] == "Service" and d["metadata"]["name"] == "authority")
    assert authority["spec"]["clusterIP"] in job["env"]["JWKS_URL"]


def test_workflow_passes_actionlint() -> None:
    actionlint = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    if not Path(actionlint).exists():
        pytest.fail("actionlint is not installed: run `bash scripts/setup` (requirements-tools.txt)")
    proc = subprocess.run([actionlint, "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_manifests_are_deployments_services_and_configmaps() -> None:
    docs = _manifests()
    kinds = {d["kind"] for d in docs}
    assert kinds == {"Namespace", "Deployment", "Service", "ConfigMap"}
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert deployments == {"authority", "policy", "vuln", "notify", "prometheus", "alertmanager"}
    for d in docs:
        if d["kind"] == "Deployment":
            assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()


def _lab_commands() -> list[list[str]]:
    out = []
    for d in _manifests():
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                if c["image"].startswith("chaosext-lab"):
                    out.append([str(x) for x in c["command"]])
    return out


def test_pod_commands_use_flags_the_lab_modules_accept() -> None:
    commands = _lab_commands()
    assert len(commands) == 4
    for cmd in commands:
        assert cmd[:2] == ["python", "-m"]
        help_text = subprocess.run([sys.executable, "-m", cmd[2], "--help"], capture_output=True, text=True,
                                   timeout=30, check=True).stdout
        for flag in (a for a in cmd[3:] if a.startswith("--")):
            assert re.search(rf"{re.escape(flag)}\b", help_text), f"{cmd[2]} has no {flag}"


def test_node_ports_are_published_by_the_kind_cluster() -> None:
    config = yaml.safe_load((KIND / "kind-config.yaml").read_text())
    mapped = {m["containerPort"] for node in config["nodes"] for m in node.get("extraPortMappings", [])}
    node_ports = {p["nodePort"] for d in _manifests() if d["kind"] == "Service" for p in d["spec"]["ports"]}
    assert node_ports == mapped


def test_prometheus_config_in_the_configmap_is_valid(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool is not installed: run `bash scripts/setup` (Debian package prometheus)")
    cm = next(d for d in _manifests() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "prometheus-config")
    config = yaml.safe_load(cm["data"]["prometheus.yml"])
    rules = []
    for path in config["rule_files"]:  # the workflow fills ConfigMap tenant-rules from ops/devops/tenant/
        src = REPO / "ops" / "devops" / "tenant" / Path(path).name
        assert src.exists(), f"{path} has no source file {src}"
        rules.append(str(src))
    config["rule_files"] = rules
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workflow = WORKFLOW.read_text()
    for path in config["rule_files"]:
        assert f"--from-file=ops/devops/tenant/{Path(path).name}" in workflow


def test_every_alert_runbook_link_lands_on_a_runbook_section() -> None:
    runbook = (REPO / "docs" / "runbook.md").read_text()
    alerts = yaml.safe_load((REPO / "ops" / "devops" / "tenant" / "alerts.yaml").read_text())
    links = [r["annotations"]["runbook_url"] for g in alerts["groups"] for r in g["rules"] if "alert" in r]
    assert len(links) >= 6
    for link in links:
        path, anchor = link.split("#")
        assert path.endswith("docs/runbook.md")
        assert f'<a id="{anchor}"></a>' in runbook, f"runbook has no section for {link}"
    for command in ("chaosext doctor", "chaosext restore --all", "chaosext verdict", "chaosext report", "chaos run"):
        assert command in runbook
