"""`chaosext lab up/down/status` with real processes on loopback (free ports, never the documented defaults)."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from chaosext.core.config import load_config, validate
from chaosext.core.procs import free_ports, process_alive
from chaosext.lab.processes import find_lab_processes
from chaosext.lab.testing import lab_up_argv, running_lab
from chaosext.metrics.cache import read_caches
from chaosext.run.context import RunContext
from tests.nsutil import fresh_netns

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

RESOURCE = {"policy": "policies", "vuln": "findings", "notify": "notifications"}


def lab_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run `chaosext lab ...` as a user would."""
    return subprocess.run([sys.executable, "-m", "chaosext.lab.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)


def pgrep(state_dir: Path | str) -> list[str]:
    """Processes whose command line names the state dir (other than pgrep itself)."""
    out = subprocess.run(["pgrep", "-af", f"{state_dir}/"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if line.strip()]


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting for its reaper)."""
    return not process_alive(pid)


def same_lab_argv(state: dict[str, Any]) -> list[str]:
    """The `lab up` command line that started this lab (same state dir, ports and settings)."""
    config = {k: v for k, v in state["config"].items() if k != "state_dir"}
    return lab_up_argv(state["state_dir"], **config)


def token(state: dict[str, Any], tenant: str = "t01") -> str:
    """A token by the standard client-credentials grant with the lab client that `lab status --json` shows."""
    resp = requests.post(state["token_url"], timeout=5, auth=(state["client_id"], state["client_secret"]),
                         data={"grant_type": "client_credentials", "tenant": tenant, "scope": "policy:read"})
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def test_up_status_and_services_accept_an_authority_token(lab: dict[str, Any]) -> None:
    status = lab_cli("status", "--state-dir", lab["state_dir"], "--json")
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["healthy"] is True
    assert set(state["components"]) == {"authority", "policy", "vuln", "notify", "prometheus", "alertmanager"}
    assert all(c["healthy"] for c in state["components"].values())
    host, port = lab["config"]["authority_host"], lab["config"]["authority_port"]
    assert state["jwks_url"] == f"http://{host}:{port}/.well-known/jwks.json"
    assert state["authority_url"] == f"http://{host}:{port}"
    assert state["fault"] == {"via": "iptables", "target": "local", "host": host, "port": port}
    human = lab_cli("status", "--state-dir", lab["state_dir"])
    assert human.returncode == 0 and "healthy" in human.stdout and "fault target" in human.stdout

    jwt = token(lab)
    header = lab["tenant_header"]
    for name, url in lab["service_urls"].items():
        path = f"{url}/api/v1/{RESOURCE[name]}"
        ok = requests.get(path, headers={"Authorization": f"Bearer {jwt}", header: "t01"}, timeout=5)
        assert ok.status_code == 200, (name, ok.status_code, ok.text)
        anonymous = requests.get(path, headers={header: "t01"}, timeout=5)
        assert anonymous.status_code == 401, name


def test_up_describes_the_lab_as_a_target_chaosext_reads_like_any_other(lab: dict[str, Any]) -> None:
    """`lab up` writes the lab's target description (docs/target.md) beside state.json and names it there; with no
    TARGET_FILE the run's settings are the lab's through it: its services, every route answering a valid token, each
    cache read fresh through its HTTP signal, and nothing to refuse."""
    path = Path(lab["target_file"])
    assert path.parent == Path(lab["state_dir"]) and stat.S_IMODE(path.stat().st_mode) == 0o600
    cfg = load_config({"chaosext_lab_dir": lab["state_dir"]})
    assert cfg.target_file == str(path) and cfg.service_urls == lab["service_urls"] and validate(cfg) == []
    assert (cfg.jwks_url, cfg.tenant_header) == (lab["jwks_url"], lab["tenant_header"])
    jwt = token(lab)
    for svc in cfg.services.values():
        for route in svc.routes:
            url = svc.url + route.path.replace("{id}", "1")
            answer = requests.request(route.method, url, data=route.body or None, timeout=5, headers={
                "Authorization": f"Bearer {jwt}", cfg.tenant_header: "t01", "Content-Type": "application/json"})
            ok = answer.ok or (route.templated and answer.status_code == 404)  # item 1 may not exist
            assert ok, (svc.name, route.text, answer.status_code, answer.text)
    readings = read_caches(RunContext(cfg))
    assert {n: (r.state, r.source) for n, r in readings.items()} == {n: ("fresh", "http") for n in lab["service_urls"]}


def test_up_twice_is_safe(lab: dict[str, Any]) -> None:
    pids = {n: c["pid"] for n, c in lab["components"].items()}
    again = run(same_lab_argv(lab))
    assert again.returncode == 0, again.stderr
    state = json.loads(again.stdout)
    assert state.get("already_running") is True
    assert {n: c["pid"] for n, c in state["components"].items()} == pids

    other = run(lab_up_argv(lab["state_dir"], **{**{k: v for k, v in lab["config"].items() if k != "state_dir"},
                                                 "jwks_ttl": 7, "jwks_max_stale": 7}))
    assert other.returncode != 0
    assert "already running" in other.stderr and "jwks_ttl" in other.stderr and "lab down" in other.stderr


def test_half_dead_lab_restarts_and_down_leaves_nothing(lab_factory: Any) -> None:
    state = lab_factory(no_prometheus=True)
    sd = state["state_dir"]
    old_policy = state["components"]["policy"]["pid"]
    os.kill(old_policy, signal.SIGKILL)

    status = lab_cli("status", "--state-dir", sd)
    assert status.returncode == 1
    assert "policy" in status.stdout and "DOWN" in status.stdout

    again = run(same_lab_argv(state))
    assert again.returncode == 0, again.stderr
    assert "restarting" in again.stderr
    restarted = json.loads(again.stdout)
    assert restarted["components"]["policy"]["pid"] != old_policy
    assert lab_cli("status", "--state-dir", sd).returncode == 0

    pids = [c["pid"] for c in restarted["components"].values()] + [c["pid"] for c in state["components"].values()]
    down = lab_cli("down", "--state-dir", sd, "--grace", "5")
    assert down.returncode == 0, down.stderr
    assert all(gone(pid) for pid in pids)
    assert pgrep(sd) == []
    assert not (Path(sd) / "state.json").exists()
    assert lab_cli("status", "--state-dir", sd).returncode == 1
    again_down = lab_cli("down", "--state-dir", sd)
    assert again_down.returncode == 0 and "nothing was running" in again_down.stdout

    # a state dir left over from a lab that no longer runs (say, after a reboot): status says down, up starts afresh
    (Path(sd) / "state.json").write_text(json.dumps(restarted))
    assert lab_cli("status", "--state-dir", sd).returncode == 1
    fresh = run(same_lab_argv(state))
    assert fresh.returncode == 0, fresh.stderr
    assert "no longer runs" in fresh.stderr
    assert lab_cli("status", "--state-dir", sd).returncode == 0
    assert lab_cli("down", "--state-dir", sd, "--grace", "5").returncode == 0
    assert pgrep(sd) == []


def test_down_never_signals_a_reused_pid(tmp_path: Path) -> None:
    """state.json names a pid that now belongs to another process (this test's own): down must leave it alone."""
    sd = tmp_path / "lab"
    sd.mkdir()
    me = os.getpid()
    component = {"pid": me, "url": "http://127.0.0.1:1", "health": "http://127.0.0.1:1/healthz", "log": "x", "port": 1}
    (sd / "state.json").write_text(json.dumps({"version": 1, "state_dir": str(sd), "config": {},
                                               "components": {"policy": component}}))
    status = lab_cli("status", "--state-dir", str(sd))
    assert status.returncode == 1 and "process not running" in status.stdout and "Traceback" not in status.stderr
    down = lab_cli("down", "--state-dir", str(sd), "--grace", "1")
    assert down.returncode == 0 and "nothing was running" in down.stdout
    assert not gone(me)


def test_port_in_use_starts_nothing(tmp_path: Path) -> None:
    sd = tmp_path / "lab"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(lab_up_argv(sd, vuln_port=port))
    assert result.returncode == 1
    assert "port already in use" in result.stderr and f"vuln 127.0.0.1:{port}" in result.stderr
    assert "nothing was started" in result.stderr
    assert find_lab_processes(sd) == [] and pgrep(sd) == []
    assert not (sd / "state.json").exists()


def test_a_component_failing_to_start_stops_the_ones_already_started(tmp_path: Path) -> None:
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\necho 'boom: cannot open storage' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    sd = tmp_path / "lab"
    result = run(lab_up_argv(sd, prometheus_bin=str(fake), services="policy"))
    assert result.returncode == 1
    assert "prometheus exited with code 3" in result.stderr and "boom: cannot open storage" in result.stderr
    assert find_lab_processes(sd) == [] and pgrep(sd) == []
    assert not (sd / "state.json").exists()


def test_missing_prometheus_binary_names_the_apt_packages(tmp_path: Path) -> None:
    sd = tmp_path / "lab"
    result = run(lab_up_argv(sd, prometheus_bin=str(tmp_path / "no-such-prometheus")))
    assert result.returncode == 1
    assert "apt-get install prometheus prometheus-alertmanager" in result.stderr and "--no-prometheus" in result.stderr
    assert pgrep(sd) == []


def test_corrupt_state_dir_says_what_to_do(tmp_path: Path) -> None:
    sd = tmp_path / "lab"
    sd.mkdir()
    (sd / "state.json").write_text('{"version": 1, "compo')
    for args in (["status"], ["up", "--no-prometheus"]):
        result = lab_cli(*args, "--state-dir", str(sd))
        assert result.returncode == 1, args
        assert "corrupt" in result.stderr and f"chaosext lab down --state-dir {sd}" in result.stderr
    via_env = subprocess.run([sys.executable, "-m", "chaosext.lab.cli", "status"], capture_output=True, text=True,
                             timeout=60, check=False, env={**os.environ, "CHAOSEXT_LAB_DIR": str(sd)})
    assert via_env.returncode == 1 and f"{sd}/state.json is corrupt" in via_env.stderr
    assert pgrep(sd) == []
    cleared = lab_cli("down", "--state-dir", str(sd))
    assert cleared.returncode == 0 and not (sd / "state.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--cache-mode", "sometimes"], "'sometimes' is not one of"),
    (["--services", "policy,billing"], "distinct names from policy,vuln,notify"),
    (["--jwks-ttl", "60", "--jwks-max-stale", "30"], "--jwks-max-stale 30 is below --jwks-ttl 60"),
    (["--rules-dir", "/nonexistent/rules"], "--rules-dir /nonexistent/rules is not a directory"),
])
def test_bad_flag_values_are_refused_before_anything_starts(tmp_path: Path, args: list[str], message: str) -> None:
    sd = tmp_path / "lab"
    ports = free_ports(["127.0.0.2"] + ["127.0.0.1"] * 6)
    port_args = ["--authority-port", str(ports[0]), "--ops-port", str(ports[1]), "--policy-port", str(ports[2]),
                 "--vuln-port", str(ports[3]), "--notify-port", str(ports[4]), "--prometheus-port", str(ports[5]),
                 "--alertmanager-port", str(ports[6])]
    result = lab_cli("up", "--state-dir", str(sd), *port_args, *args)
    assert result.returncode in (1, 2)
    assert message in result.stderr
    assert pgrep(sd) == []


def test_lab_status_without_a_lab_fails_with_a_hint(tmp_path: Path) -> None:
    result = lab_cli("status", "--state-dir", str(tmp_path / "none"))
    assert result.returncode == 1 and "chaosext lab up" in result.stderr


@pytest.fixture
def netns() -> Any:
    """A network namespace of this test's own, loopback up; deleted afterwards."""
    with fresh_netns("chxlab", loopback=True) as name:
        yield name


@pytest.mark.netns
def test_lab_runs_inside_a_network_namespace(tmp_path: Path, netns: str) -> None:
    """exec_prefix puts the whole lab in the test's namespace, so iptables there touches only that lab."""
    sd = tmp_path / "lab"
    with running_lab(sd, exec_prefix=["ip", "netns", "exec", netns], no_prometheus=True, services="policy") as state:
        health = state["components"]["policy"]["health"]
        inside = run(["ip", "netns", "exec", netns, sys.executable, "-c",
                      f"import urllib.request; print(urllib.request.urlopen({health!r}, timeout=5).status)"])
        assert inside.stdout.strip() == "200", inside.stderr
        with pytest.raises(requests.ConnectionError):
            requests.get(health, timeout=2)  # not listening in the host's namespace
        pids = [c["pid"] for c in state["components"].values()]
    assert all(gone(pid) for pid in pids)
    assert pgrep(sd) == []
