"""The gated GitHub workflow and the kind manifests: the parts the runbook relies on are there, and they agree with
each other and with the code they start (flags, labels, ports)."""
from __future__ import annotations

import json
import os
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
def test_each_job_is_gated_and_restores_first_after_the_run(job_name: str) -> None:
    """Install, doctor, chaos run; then at once the panic button (always), then the verdict (also when `chaos run`
    exited non-zero), the report and the upload (always)."""
    job = _workflow()["jobs"][job_name]
    assert job["environment"] == "chaos-gameday", "the protected environment's required reviewers are the gate"
    runs = _runs(job)
    order = [next(i for i, r in enumerate(runs) if key in r) for key in
             ("scripts/setup", "chaosext doctor", "chaos ", "chaosext restore --all", "chaosext verdict",
              "chaosext report")]
    assert order == sorted(order), "install, doctor, chaos run, restore, verdict, report - in that order"
    assert any("--journal-path" in r for r in runs)
    run, restore = order[2], order[3]
    assert restore == run + 1, "the always-run restore is the first step after the run"
    assert job["steps"][restore]["if"] == "${{ always() }}"
    verdict = job["steps"][order[4]]
    assert "always()" in verdict["if"] and "steps.run.outcome != 'skipped'" in verdict["if"], \
        "the verdict judges a run that exited non-zero too"
    assert job["steps"][run]["id"] == "run"
    uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and uploads[0]["if"] == "${{ always() }}" and "artefacts/" in uploads[0]["with"]["path"]
    assert job["steps"].index(uploads[0]) > restore


@pytest.mark.parametrize("job_name", ["gameday", "kind"])
def test_chaos_and_chaosext_run_as_root_through_scripts_as_root(job_name: str) -> None:
    """scripts/setup makes .venv private to root and the runner user is not root: every chaos / chaosext call goes
    through scripts/as-root (sudo keeping the job's environment, .venv/bin on PATH). The gameday job is executed for
    real by tests/deploy/test_workflow_runs.py; the kind job (no kind cluster here) is checked by reading it."""
    for run in _runs(_workflow()["jobs"][job_name]):
        for line in run.splitlines():
            if re.search(r"(^|\s)(chaos|chaosext)\s", line) and not line.strip().startswith("#"):
                assert "scripts/as-root chaos" in line, f"{job_name}: {line.strip()}"
    assert os.access(REPO / "scripts" / "as-root", os.X_OK)


def test_jobs_run_only_for_their_environment_and_outlast_the_longest_allowed_outage() -> None:
    """The kind job only when the kind environment is chosen, the gameday job otherwise, the lab only for `lab`; each
    job's timeout is above the longest run the experiment allows (the fault's deadline is capped at
    MAX_OUTAGE_SECONDS; plus the baseline with its warm-up, the recovery, the alert wait and 15 minutes for set-up,
    report and upload)."""
    from chaosext.core.config import ExperimentConfig

    wf = _workflow()
    env_input = wf["on"]["workflow_dispatch"]["inputs"]["environment"]
    assert env_input["options"] == ["lab", "real", "kind"] and env_input["default"] == "lab"
    jobs = wf["jobs"]
    assert jobs["kind"]["if"] == "${{ inputs.environment == 'kind' }}"
    assert jobs["gameday"]["if"] == "${{ inputs.environment != 'kind' }}"
    lab_steps = [s for s in jobs["gameday"]["steps"] if "lab up" in s.get("run", "") or "lab down" in s.get("run", "")]
    assert len(lab_steps) == 2 and all("inputs.environment == 'lab'" in s["if"] for s in lab_steps)
    cfg = ExperimentConfig()
    longest = cfg.max_outage_seconds + cfg.baseline_seconds + 15 + cfg.recovery_seconds + cfg.alert_wait_seconds \
        + 15 * 60
    for name, job in jobs.items():
        assert job["timeout-minutes"] * 60 >= longest, f"{name}: {job['timeout-minutes']} min < {longest / 60:.0f}"


def test_the_lab_on_the_runner_gets_a_ttl_below_the_outage() -> None:
    """The lab the gameday job starts goes stale within the outage (so auth.degraded is audited) and does not expire
    (max-stale above it): the same rule as scripts/lab-experiment, for any outage length."""
    step = next(s for s in _workflow()["jobs"]["gameday"]["steps"] if "lab up" in s.get("run", ""))
    for outage in (10, 60, 300, 3000):
        script = step["run"].replace("scripts/as-root chaosext lab up", "echo").replace(
            "scripts/as-root chaosext lab status", "true")
        out = subprocess.run(["bash", "-eo", "pipefail", "-c", script], env={"OUTAGE_SECONDS": str(outage),
                             "PATH": os.environ["PATH"]}, capture_output=True, text=True, check=True).stdout.split()
        ttl, max_stale = int(out[out.index("--jwks-ttl") + 1]), int(out[out.index("--jwks-max-stale") + 1])
        assert ttl < outage < max_stale, (outage, ttl, max_stale)


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


def _secret_bound(env: dict[str, Any]) -> set[str]:
    return {k for k, v in (env or {}).items() if "secrets." in str(v)}


def test_real_environment_job_carries_the_approval_and_the_secrets() -> None:
    """The approval comes from the protected environment (a variable: approving the environment approves the
    target); the kubeconfig and client credentials from its secrets; the backends' credentials too -- each only in
    the steps that talk to the target."""
    job = _workflow()["jobs"]["gameday"]
    env = job["env"]
    assert env["CHAOSEXT_APPROVE"] == "${{ vars.CHAOSEXT_APPROVE }}"
    doctor = next(s for s in job["steps"] if "chaosext doctor" in s.get("run", ""))
    for name in ("TOKEN_CLIENT_ID", "TOKEN_CLIENT_SECRET", "PROMETHEUS_BEARER_TOKEN", "ALERTMANAGER_BEARER_TOKEN",
                 "KUBERNETES_API_KEY"):
        assert doctor["env"][name] == f"${{{{ secrets.{name} }}}}", name
    # a cluster without a kubeconfig: chaostoolkit-kubernetes' host + token, with the server's certificate checked
    assert env["KUBERNETES_HOST"] == "${{ vars.KUBERNETES_HOST }}" and env["KUBERNETES_VERIFY_SSL"]
    for name in ("TARGET_FILE", "JWKS_URL", "AUTHORITY_URL", "SERVICE_URLS", "PROMETHEUS_URL", "ALERTMANAGER_URL",
                 "AUDIT_SOURCE"):
        assert env[name] == f"${{{{ vars.{name} }}}}", name
    assert doctor["env"]["TOKEN_CLIENTS"] == "${{ secrets.TOKEN_CLIENTS }}"  # an IdP with one client per tenant
    kube = next(s for s in job["steps"] if "KUBECONFIG" in str(s.get("env", {})))
    assert kube["env"]["KUBECONFIG_CONTENT"] == "${{ secrets.KUBECONFIG }}"
    assert "umask 077" in kube["run"] and "KUBECONFIG=$RUNNER_TEMP/kubeconfig" in kube["run"]
    runs = _runs(job)
    assert runs.index(kube["run"]) < next(i for i, r in enumerate(runs) if "chaosext doctor" in r)
    cleanup = next(s for s in job["steps"] if 'rm -f "$RUNNER_TEMP/kubeconfig"' in s.get("run", ""))
    assert cleanup["if"] == "${{ always() }}"


def test_secrets_are_scoped_to_the_steps_that_need_them() -> None:
    """No secret at job level (every step, the install of third-party code included, would see it): only the steps
    that talk to the target get them -- doctor and the run all of them, the restore the Kubernetes key, the report
    Prometheus' credentials."""
    job = _workflow()["jobs"]["gameday"]
    assert not _secret_bound(job["env"]), "secrets at job level reach every step"
    holders = {s["name"]: _secret_bound(s.get("env", {})) for s in job["steps"] if _secret_bound(s.get("env", {}))}
    by_run = {next(k for k in ("doctor", "chaos --log-file", "restore", "report", "KUBECONFIG")
                   if k in s.get("run", "")): s["name"] for s in job["steps"] if s["name"] in holders}
    assert set(by_run) == {"doctor", "chaos --log-file", "restore", "report", "KUBECONFIG"}, holders
    assert holders[by_run["doctor"]] == holders[by_run["chaos --log-file"]] and len(holders[by_run["doctor"]]) >= 15
    assert holders[by_run["restore"]] == {"KUBERNETES_API_KEY"}
    assert holders[by_run["report"]] == {n for n in holders[by_run["doctor"]] if n.startswith("PROMETHEUS_")}
    install = next(s for s in job["steps"] if "scripts/setup" in s.get("run", ""))
    assert "env" not in install and "--locked" in install["run"]


@pytest.mark.parametrize("job_name", ["gameday", "kind"])
def test_no_secret_reaches_a_command_line(job_name: str) -> None:
    """Secrets are never expanded into a script (`${{ secrets.X }}` in run:), and a secret-bound variable is only
    used by shell builtins (`[ -n ... ]`, printf writing a 0600 file): never as an argument of a program (ps)."""
    job = _workflow()["jobs"][job_name]
    bound = _secret_bound(job.get("env", {}))
    for step in job["steps"]:
        run = step.get("run", "")
        assert "secrets." not in run and "inputs." not in run, f"expression expanded into a script: {run}"
        for name in bound | _secret_bound(step.get("env", {})):
            for line in (x for x in run.splitlines() if f"${name}" in x or f"${{{name}}}" in x):
                builtin = (rf"""\bprintf '%s\\n' "\${name}" > "[^"]+"\)$""", rf'^if \[ -n "\${name}" \]; then$')
                assert any(re.search(b, line.strip()) for b in builtin), line


def test_third_party_actions_are_pinned_by_commit_sha() -> None:
    lines = [x.strip() for x in WORKFLOW.read_text().splitlines() if x.strip().startswith(("uses:", "- uses:"))]
    assert len(lines) >= 4
    for line in lines:
        assert re.fullmatch(r"(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40}\s+# v\d+(\.\d+)*", line), \
            f"not pinned by full SHA with its tag in a comment: {line}"


def test_kind_job_reaches_the_pods_through_port_forwards_it_tears_down() -> None:
    """No ClusterIP route from the runner: `kubectl port-forward` per Service, set up before the doctor, killed
    (always) at the end; every URL the probes use is a forwarded loopback port or the Authority's ClusterIP bound on
    the runner's loopback (so the NetworkPolicy blocks the same address the runner checks)."""
    job = _workflow()["jobs"]["kind"]
    env = job["env"]
    runs = _runs(job)
    fwd = next(i for i, r in enumerate(runs) if "kubectl -n chaosext-lab port-forward" in r)
    assert fwd < next(i for i, r in enumerate(runs) if "chaosext doctor" in r)
    forwarded = {int(m) for m in re.findall(r'forward \S+ \w+ (\d+):\d+', runs[fwd])}
    described = json.loads((REPO / env["TARGET_FILE"]).read_text())
    urls = [env["JWKS_URL"], env["AUTHORITY_URL"], env["PROMETHEUS_URL"], env["ALERTMANAGER_URL"],
            *(s["url"] for s in described["services"].values()),
            *(s["cache"]["http"]["url"] for s in described["services"].values())]
    for url in urls:
        host, port = re.match(r"http://([\d.]+):(\d+)", url).groups()
        assert host in ("127.0.0.1", env["AUTHORITY_IP"]) and int(port) in forwarded, url
    assert 'ip addr add "$AUTHORITY_IP/32" dev lo' in runs[fwd] and "--address" in runs[fwd]
    services = {d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]} for d in _manifests()
                if d["kind"] == "Service"}
    for svc, remote in re.findall(r'forward \S+ (\w+) \d+:(\d+)', runs[fwd]):
        assert int(remote) in services.get(svc, set()), f"port-forward to {svc}:{remote}, no such Service port"
    assert authority_ip_is_the_clusterip(env["AUTHORITY_IP"])
    assert "TOKEN_ENDPOINT" not in env, "discovery works through the forward; no NodePort shortcut"
    stop = next(s for s in job["steps"] if "port-forward.pids" in s.get("run", "") and "kill" in s.get("run", ""))
    assert stop["if"] == "${{ always() }}" and job["steps"].index(stop) > fwd
    assert env["CHAOSEXT_APPROVE"] == env["FAULT_TARGET"], "the job's own kind cluster is approved with the job"


def _args(name: str) -> dict[str, str]:
    """The ``--flag value`` pairs of the command of the Deployment ``name`` in the kind manifests."""
    deployment = next(d for d in _manifests() if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    command = [str(a) for a in deployment["spec"]["template"]["spec"]["containers"][0]["command"]]
    return {a[2:]: command[i + 1] for i, a in enumerate(command[:-1]) if a.startswith("--")}


def test_kind_job_drives_the_pods_through_the_labs_own_description() -> None:
    """The kind job names no service itself (issue 23: the target is data): TARGET_FILE is the lab's description,
    exactly as `chaosext lab up` writes it (chaosext.lab.target.describe) for the pods' settings in the manifests
    and the ports the job forwards, so k6 and the probes drive the lab's routes and read its caches."""
    from chaosext.lab.plan import LabConfig
    from chaosext.lab.target import describe

    env = _workflow()["jobs"]["kind"]["env"]
    assert "SERVICE_URLS" not in env
    described = json.loads((REPO / env["TARGET_FILE"]).read_text())
    authority, policy = _args("authority"), _args("policy")
    host, port = re.match(r"http://([\d.]+):(\d+)$", authority["issuer"]).groups()
    cfg = LabConfig(state_dir=str(Path(env["AUDIT_SOURCE"].removeprefix("file:")).parent), authority_host=host,
                    authority_port=int(port), audience=authority["audience"], tenant_header=policy["tenant-header"],
                    jwks_ttl=float(policy["jwks-ttl"]), jwks_max_stale=float(policy["jwks-max-stale"]))
    runs = _runs(_workflow()["jobs"]["kind"])
    forwards = dict(re.findall(r'forward 127\.0\.0\.1 (\w+) (\d+):\d+', next(r for r in runs if "port-forward" in r)))
    comps: dict[str, dict[str, str]] = {
        name: {"url": f"http://127.0.0.1:{forwards[name]}", "health": f"http://127.0.0.1:{forwards[name]}/healthz"}
        for name in cfg.services}
    comps.update({name: {"url": f"http://127.0.0.1:{forwards[name]}"} for name in ("prometheus", "alertmanager")})
    assert described == json.loads(json.dumps(describe(cfg, comps))), \
        "deploy/kind/target.json is not the lab's description of the pods: regenerate it with describe()"
    assert described["identity_provider"]["jwks_url"] == env["JWKS_URL"]


def authority_ip_is_the_clusterip(address: str) -> bool:
    authority = next(d for d in _manifests() if d["kind"] == "Service" and d["metadata"]["name"] == "authority")
    return authority["spec"]["clusterIP"] == address


def test_runbook_lists_the_real_environment_setup_in_order() -> None:
    """docs/runbook.md names every variable and secret the gameday job reads, in the order a person sets them up."""
    runbook = (REPO / "docs" / "runbook.md").read_text()
    section = runbook.split("### Against a real environment", 1)[1].split("\n## ", 1)[0]
    job = _workflow()["jobs"]["gameday"]
    names = [k for k, v in job["env"].items() if "vars." in str(v) or "secrets." in str(v)] + ["KUBECONFIG"]
    for name in names:
        assert f"`{name}`" in section.split("From CI", 1)[1], f"runbook does not list {name}"
    steps = section.split("From CI", 1)[1]
    order = [steps.index(k) for k in ("Required reviewers", "`CHAOSEXT_APPROVE`", "`KUBECONFIG`",
                                        "`TOKEN_CLIENT_ID`", "`PROMETHEUS_BEARER_TOKEN`")]
    assert order == sorted(order)


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
