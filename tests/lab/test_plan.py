"""`chaosext lab up`'s settings -> plan, without starting a lab: validation messages, the components and their
command lines, start waves, the host checks and the client file."""
from __future__ import annotations

import socket
import stat
import sys
from pathlib import Path

import pytest

from chaosext.core.procs import free_ports
from chaosext.lab import configs
from chaosext.lab.plan import APT_HINT, CLIENTS_FILE, SERVICES, LabConfig, LabError, plan, preflight, waves


def config(tmp_path: Path, **overrides: object) -> LabConfig:
    return LabConfig(state_dir=str(tmp_path / "lab"), **overrides)  # type: ignore[arg-type]


def test_comma_lists_are_split_and_the_state_dir_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = LabConfig(state_dir="rel", services="policy, notify", holes="ignore-exp,alg-confusion")  # type: ignore[arg-type]
    assert cfg.state_dir == str(tmp_path / "rel")
    assert cfg.services == ("policy", "notify") and cfg.holes == ("ignore-exp", "alg-confusion")
    assert cfg.as_dict()["services"] == ["policy", "notify"]
    assert "state_dir" not in cfg.identity() and "ready_timeout" not in cfg.identity()
    assert cfg.identity()["jwks_ttl"] == 300


def test_every_bad_value_is_named_by_its_flag(tmp_path: Path) -> None:
    cfg = config(tmp_path, services=("policy", "billing"), egress="squid", cache_mode="sometimes", vuln_port=70000,
                 jwks_ttl=0, alert_for=-1, jwks_max_stale=-1, tenant_header="X Tenant", ready_timeout=0)
    with pytest.raises(LabError) as err:
        cfg.validate()
    lines = str(err.value).splitlines()
    assert lines[0] == "bad lab settings:"
    assert [line.split()[0] for line in lines[1:]] == [
        "--services", "--egress", "--cache-mode", "--vuln-port", "--jwks-ttl", "--alert-for", "--jwks-max-stale",
        "--tenant-header", "--ready-timeout"]
    assert "distinct names from policy,vuln,notify" in lines[1]
    config(tmp_path).validate()  # the defaults are fine


def test_the_jwt_gateway_needs_envoy_and_a_running_service(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="--envoy-jwt-service policy: needs --egress envoy"):
        config(tmp_path, envoy_jwt_service="policy").validate()
    with pytest.raises(LabError, match="--envoy-jwt-service vuln"):
        config(tmp_path, egress="envoy", services=("policy",), envoy_jwt_service="vuln").validate()
    config(tmp_path, egress="envoy", envoy_jwt_service="policy").validate()


def test_plan_orders_the_components_and_hands_each_its_settings(tmp_path: Path) -> None:
    cfg = config(tmp_path, holes=("ignore-exp", "alg-confusion"), fail_open=True, tenants="t01,t02")
    comps = plan(cfg)
    assert [c.name for c in comps] == ["authority", *SERVICES, "alertmanager", "prometheus"]
    authority = comps[0]
    assert authority.binds == [("127.0.0.2", 8440), ("127.0.0.1", 8441)]
    assert authority.health == "http://127.0.0.1:8441/healthz" and authority.url == "http://127.0.0.2:8440"
    assert authority.argv[authority.argv.index("--tenants") + 1] == "t01,t02"
    assert authority.argv[authority.argv.index("--clients-file") + 1] == str(Path(cfg.state_dir) / CLIENTS_FILE)
    policy = comps[1]
    assert policy.argv[policy.argv.index("--jwks-url") + 1] == "http://127.0.0.2:8440/.well-known/jwks.json"
    assert [policy.argv[i + 1] for i, a in enumerate(policy.argv) if a == "--hole"] == ["ignore-exp", "alg-confusion"]
    assert "--fail-open" in policy.argv and "--no-audit" not in policy.argv
    prometheus = comps[-1]
    assert f"--config.file={cfg.state_dir}/prometheus/prometheus.yml" in prometheus.argv
    assert "--rules.alert.resend-delay=2s" in prometheus.argv
    assert waves(comps) == [comps[:1], comps[1:]]
    assert [c.name for c in plan(config(tmp_path, no_prometheus=True))] == ["authority", *SERVICES]


def test_with_envoy_the_services_fetch_through_it_and_it_starts_with_the_authority(tmp_path: Path) -> None:
    cfg = config(tmp_path, egress="envoy", services=("policy", "vuln"), envoy_jwt_service="vuln", no_prometheus=True)
    comps = plan(cfg)
    assert [c.name for c in comps] == ["authority", "envoy", "policy", "vuln"]
    assert [[c.name for c in wave] for wave in waves(comps)] == [["authority", "envoy"], ["policy", "vuln"]]
    policy, vuln = comps[2], comps[3]
    assert policy.argv[policy.argv.index("--jwks-url") + 1] == "http://127.0.0.1:8444/.well-known/jwks.json"
    assert policy.url == "http://127.0.0.1:8451" and vuln.url == "http://127.0.0.1:8454"  # the jwt gateway
    assert ("127.0.0.1", 8454) in comps[1].binds


def test_preflight_refuses_a_busy_port_and_names_the_component(tmp_path: Path) -> None:
    ports = free_ports(["127.0.0.2", "127.0.0.1", "127.0.0.1"])
    cfg = config(tmp_path, no_prometheus=True, services=("policy",), authority_port=ports[0], ops_port=ports[1],
                 policy_port=ports[2])
    preflight(cfg, plan(cfg))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports[2]))
        busy.listen()
        with pytest.raises(LabError, match=f"port already in use: policy 127.0.0.1:{ports[2]}.*nothing was started"):
            preflight(cfg, plan(cfg))


def test_preflight_refuses_two_components_on_one_port(tmp_path: Path) -> None:
    cfg = config(tmp_path, no_prometheus=True, policy_port=8441)
    with pytest.raises(LabError, match=r"policy and authority are both set to listen on 127\.0\.0\.1:8441"):
        preflight(cfg, plan(cfg))


def test_preflight_names_the_packages_of_a_missing_binary(tmp_path: Path) -> None:
    cfg = config(tmp_path, prometheus_bin=str(tmp_path / "no-such-prometheus"), promtool_bin=sys.executable,
                 alertmanager_bin=sys.executable)
    with pytest.raises(LabError) as err:
        preflight(cfg, plan(cfg))
    assert str(err.value) == f"{tmp_path / 'no-such-prometheus'} not found: {APT_HINT}"
    cfg = config(tmp_path, egress="envoy", envoy_bin=str(tmp_path), no_prometheus=True)  # a directory: not a binary
    with pytest.raises(LabError, match="not found \\(--egress envoy\\)"):
        preflight(cfg, plan(cfg))


def test_the_lab_client_file_is_private_and_new_each_time(tmp_path: Path) -> None:
    first = configs.new_client(tmp_path)
    second = configs.new_client(tmp_path)
    assert first["client_id"] == second["client_id"] == "chaosext-lab"
    assert first["client_secret"] != second["client_secret"] and len(second["client_secret"]) >= 32
    path = tmp_path / CLIENTS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert second["client_secret"] in path.read_text()
