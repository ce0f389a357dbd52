"""`chaos run` hands chaosext the experiment's configuration with lower-case keys; ENVOY_ADMIN_URL, KUBE_API_URL and
the Kubernetes credentials set there (or by `--var`, or only in the environment, or in the experiment's `secrets`)
must be the ones the fault driver uses. Asserted on what the driver reached: the Envoy whose admin API it switched
(a real Envoy, its runtime and a fetch through it) and the requests a Kubernetes API stub recorded.

The Kubernetes side is a contract test against the response shapes of the Kubernetes API reference (tests/kubestub.py;
no API server is installable here). The Envoy side runs the pinned real Envoy on free loopback ports. Each `chaos run`
is a real Chaos Toolkit process running small experiments written here (block, look, restore) -- and the shipped
experiment in `--dry` mode, whose plan names the Envoy admin URL it would switch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.egress.envoy_util import RealEnvoy, real_envoy
from tests.kubestub import KubeStub
from tests.targetutil import write_target

pytestmark = [pytest.mark.contract, pytest.mark.e2e]  # real `chaos run` processes, a real Envoy

REPO = Path(__file__).resolve().parents[2]
CHAOS = str(Path(sys.executable).parent / "chaos")
NP = "/apis/networking.k8s.io/v1/namespaces/tenancy/networkpolicies"
TOKEN = "k8s-t0ken"
SETTINGS = ("ENVOY_ADMIN_URL", "KUBE_API_URL", "KUBE_CONTEXT", "FAULT_VIA", "FAULT_TARGET", "CHAOSEXT_APPROVE",
            "KUBERNETES_SERVICE_HOST", "CHAOSTOOLKIT_IN_POD", "KUBERNETES_HOST", "KUBERNETES_API_KEY",
            "KUBERNETES_CONTEXT", "HTTP_PROXY", "NO_PROXY")


def activity(kind: str, name: str, module: str, func: str, arguments: dict[str, Any],
             secrets: list[str] | None = None) -> dict[str, Any]:
    provider: dict[str, Any] = {"type": "python", "module": module, "func": func, "arguments": arguments}
    if secrets:
        provider["secrets"] = secrets
    return {"type": kind, "name": name, "provider": provider}


def experiment(path: Path, configuration: dict[str, Any], block: dict[str, Any], look: dict[str, Any],
               secrets: dict[str, Any] | None = None) -> Path:
    """block -> look (a probe) -> restore, with this configuration block (and secrets scope ``k8s``)."""
    scopes = ["k8s"] if secrets else None
    where = {k: block[k] for k in ("via", "target") if k in block}
    doc = {"version": "1.0.0", "title": "the configured driver settings reach the driver", "description": "test",
           "configuration": configuration,
           "method": [activity("action", "block", "chaosext.egress.actions", "block_jwks_egress", block, scopes),
                      activity("probe", "look", *look["func"], look["arguments"], scopes),
                      activity("action", "restore", "chaosext.egress.actions", "restore_jwks_egress", where, scopes)]}
    if secrets:
        doc["secrets"] = {"k8s": secrets}
    path.write_text(json.dumps(doc, indent=1))
    return path


def chaos_run(tmp_path: Path, experiment_file: Path, *args: str, **env: str) -> tuple[dict[str, Any], str]:
    """Run ``chaos run`` as a user would; (journal, output). Nothing of this machine's KUBE_* / Envoy settings leaks
    in; faults are recorded in the test's own state directory."""
    full = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    full.update(CHAOSEXT_STATE_DIR=str(tmp_path / "faults"), KUBECONFIG=str(tmp_path / "no-kubeconfig"),
                CHAOSEXT_LAB_DIR=str(tmp_path / "no-lab"), CHAOSEXT_RUN_DIR=str(tmp_path / "run"), **env)
    journal = tmp_path / "journal.json"
    proc = subprocess.run([CHAOS, "--no-log-file", "run", "--journal-path", str(journal), *args, str(experiment_file)],
                          cwd=tmp_path, env=full, capture_output=True, text=True, timeout=180, check=False)
    output = proc.stdout + proc.stderr
    return (json.loads(journal.read_text()) if journal.exists() else {}), output


def outputs(journal: dict[str, Any]) -> dict[str, Any]:
    """{activity name: output} of the method; fails with the exception of a failed activity."""
    out = {}
    for run in journal.get("run") or []:
        name = run["activity"]["name"]
        assert run["status"] == "succeeded", f"{name}: {run.get('exception')}"
        out[name] = run.get("output")
    return out


# ---------------------------------------------------------------- Envoy: ENVOY_ADMIN_URL


@pytest.fixture
def envoy(tmp_path: Path) -> Iterator[RealEnvoy]:
    with real_envoy(tmp_path / "envoy") as proxy:
        yield proxy


@pytest.mark.parametrize("source", ["configuration", "--var", "environment"])
def test_envoy_admin_url_reaches_the_envoy_driver(tmp_path: Path, envoy: RealEnvoy, source: str) -> None:
    """FAULT_TARGET stays ``local``: the admin URL comes only from ENVOY_ADMIN_URL, as configured."""
    declared = {"type": "env", "key": "ENVOY_ADMIN_URL", "default": ""}
    configuration: dict[str, Any] = {"envoy_admin_url": envoy.admin_url if source == "configuration" else declared}
    block = {"jwks_url": envoy.jwks_url, "via": "envoy", "mode": "reject", "deadline_seconds": 60,
             "use_watchdog": False, "driver_options": {"envoy_stat_prefix": "jwks_egress", "envoy_verify_fetch": True}}
    look = {"func": ("chaosext.egress.probes", "egress_block_active"), "arguments": {"via": "envoy"}}
    path = experiment(tmp_path / "exp.json", configuration, block, look)
    args = ("--var", f"envoy_admin_url={envoy.admin_url}") if source == "--var" else ()
    env = {"ENVOY_ADMIN_URL": envoy.admin_url} if source == "environment" else {}
    journal, output = chaos_run(tmp_path, path, *args, **env)

    out = outputs(journal)
    assert out["block"]["applied"]["admin_url"] == envoy.admin_url, output[-3000:]  # the driver's target
    assert out["block"]["verification"]["fetch"]["status"] == 503  # a fetch through that Envoy was refused
    assert out["look"]["active"] is True and out["look"]["target"] == "local"
    assert out["restore"]["restored"] and not out["restore"]["left"]
    assert not [k for k in envoy.runtime() if k.startswith("chaosext.")]  # lifted again


def test_the_shipped_experiment_plans_the_fault_on_the_configured_envoy(tmp_path: Path) -> None:
    """`chaos run --dry activities experiments/jwks-outage.json`: the safety control's plan names the exact admin
    calls, on the ENVOY_ADMIN_URL given with `--var` (the experiment's configuration), not the environment's. The
    target is a description (tests/targetutil.py) whose JWKS host 127.0.0.1 is the target approved."""
    wanted, other = "http://127.0.0.1:19901", "http://127.0.0.1:29901"
    journal, output = chaos_run(tmp_path, REPO / "experiments" / "jwks-outage.json", "--dry", "activities", "--var",
                                f"envoy_admin_url={wanted}", FAULT_VIA="envoy", FAULT_TARGET="local",
                                CHAOSEXT_APPROVE="127.0.0.1", CHAOSEXT_ALLOW_HTTP="true", ENVOY_ADMIN_URL=other,
                                TARGET_FILE=write_target(tmp_path / "target"))
    assert f"[dry run]             GET {wanted}/runtime" in output, output[-3000:]
    assert f"POST {wanted}/runtime_modify?chaosext.jwks." in output and other not in output
    assert journal["status"] == "completed"


# ---------------------------------------------------------------- Kubernetes: KUBE_API_URL, KUBERNETES_* secrets


@pytest.fixture
def kube() -> Iterator[KubeStub]:
    with KubeStub() as k:
        yield k


K8S_BLOCK = {"jwks_url": "http://10.96.40.7:8440/.well-known/jwks.json", "via": "k8s-networkpolicy",
             "target": "tenancy/app=policy", "deadline_seconds": 120, "use_watchdog": False}
K8S_LOOK = {"func": ("chaosext.egress.probes", "egress_block_active"),
            "arguments": {"via": "k8s-networkpolicy", "target": "tenancy/app=policy"}}


@pytest.mark.parametrize("source", ["configuration", "--var", "environment"])
def test_kube_api_url_reaches_the_kubernetes_driver(tmp_path: Path, kube: KubeStub, source: str) -> None:
    declared = {"type": "env", "key": "KUBE_API_URL", "default": ""}
    configuration: dict[str, Any] = {"kube_api_url": kube.url if source == "configuration" else declared}
    path = experiment(tmp_path / "exp.json", configuration, K8S_BLOCK, K8S_LOOK)
    args = ("--var", f"kube_api_url={kube.url}") if source == "--var" else ()
    env = {"KUBE_API_URL": kube.url} if source == "environment" else {}
    journal, output = chaos_run(tmp_path, path, *args, **env)

    out = outputs(journal)
    assert out["block"]["verification"]["blocked"] is True, output[-3000:]
    assert out["look"]["active"] is True
    name = f"chaosext-jwks-{out['block']['run_id']}"
    seen = [(r.method, r.path, r.authorization) for r in kube.requests]
    assert ("POST", NP, None) in seen and ("DELETE", f"{NP}/{name}", None) in seen  # no auth: a proxy URL
    assert kube.objects[NP] == {}


def test_kubernetes_credentials_from_the_experiments_secrets_reach_the_driver(tmp_path: Path, kube: KubeStub) -> None:
    """chaostoolkit-kubernetes' way: KUBERNETES_HOST / KUBERNETES_API_KEY in a `secrets` scope the activities ask
    for (here `env` secrets, as a Vault secret would resolve too)."""
    secrets = {"KUBERNETES_HOST": {"type": "env", "key": "STAGING_API"},
               "KUBERNETES_API_KEY": {"type": "env", "key": "STAGING_TOKEN"}}
    path = experiment(tmp_path / "exp.json", {}, K8S_BLOCK, K8S_LOOK, secrets)
    journal, output = chaos_run(tmp_path, path, STAGING_API=kube.url, STAGING_TOKEN=TOKEN)

    out = outputs(journal)
    assert out["block"]["verification"]["blocked"] is True and out["look"]["active"] is True, output[-3000:]
    assert {r.authorization for r in kube.requests} == {f"Bearer {TOKEN}"}
    assert {r.method for r in kube.requests} >= {"POST", "GET", "DELETE"} and kube.objects[NP] == {}
    assert TOKEN not in output
