"""The lab's Prometheus and Alertmanager (the real Debian binaries) and the generated configuration."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from chaosext.core.procs import free_port
from chaosext.lab import promconfig
from tests.jsonstub import JsonStub


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], seconds: float) -> Any:
    """Call fetch until done(result) or the deadline; returns the last result (the assert shows it)."""
    end = time.monotonic() + seconds
    while True:
        result = fetch()
        if done(result) or time.monotonic() > end:
            return result
        time.sleep(0.5)


@pytest.mark.e2e
@pytest.mark.lab
def test_prometheus_scrapes_every_component(lab: dict[str, Any]) -> None:
    url = lab["prometheus_url"] + "/api/v1/targets"

    def targets() -> dict[str, str]:
        active = requests.get(url, timeout=5).json()["data"]["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}

    health = poll(targets, lambda h: h and all(v == "up" for v in h.values()), 20)
    assert health == {name: "up" for name in lab["components"]}
    # the authority is scraped on its ops listener, not on the address the fault blocks
    active = requests.get(url, timeout=5).json()["data"]["activeTargets"]
    authority = next(t for t in active if t["labels"]["job"] == "authority")
    assert authority["scrapeUrl"] == lab["components"]["authority"]["metrics"]
    assert lab["config"]["authority_host"] not in authority["scrapeUrl"]
    # a tenant service's target carries its service's name, so `up` of a dead target still names it
    # (tenant_service_target_down joins on it); the service's own `service` label on its series is kept as it is
    services = set(lab["service_urls"])
    assert {t["labels"]["job"]: t["labels"].get("service") for t in active if t["labels"]["job"] in services} == {
        s: s for s in services}
    query = lab["prometheus_url"] + "/api/v1/query"
    up = requests.get(query, params={"query": 'up{service!=""}'}, timeout=5).json()["data"]["result"]
    assert {r["metric"]["service"] for r in up} == services
    renamed = requests.get(query, params={"query": '{exported_service!=""}'}, timeout=5).json()["data"]["result"]
    assert renamed == []


@pytest.mark.e2e
@pytest.mark.lab
def test_repository_rules_are_loaded_with_lab_for_durations(lab: dict[str, Any]) -> None:
    sources = promconfig.find_rule_files(promconfig.default_rules_dir())
    if not sources:
        pytest.skip("no rule files under ops/devops/tenant/ yet")
    groups = requests.get(lab["prometheus_url"] + "/api/v1/rules", timeout=5).json()["data"]["groups"]
    loaded = {g["name"] for g in groups}
    expected = {g["name"] for src in sources for g in yaml.safe_load(src.read_text())["groups"]}
    assert expected <= loaded
    alert_for = lab["config"]["alert_for"]
    alerting = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
    assert all(r["duration"] <= alert_for for r in alerting)
    assert all(r["health"] != "err" for g in groups for r in g["rules"]), [
        (r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]


@pytest.mark.e2e
@pytest.mark.lab
def test_alertmanager_is_ready_without_gossip(lab: dict[str, Any]) -> None:
    am = lab["alertmanager_url"]
    assert requests.get(am + "/-/ready", timeout=5).status_code == 200
    status = requests.get(am + "/api/v2/status", timeout=5).json()
    assert status["cluster"]["status"] == "disabled"
    assert "null" in status["config"]["original"]


@pytest.mark.e2e
@pytest.mark.lab
def test_an_alert_with_a_production_for_reaches_alertmanager_in_seconds(
        lab_factory: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "alerts.yaml").write_text(yaml.safe_dump({"groups": [{"name": "lab-probe", "rules": [
        {"alert": "LabAlwaysFiring", "expr": "vector(1)", "for": "10m", "labels": {"severity": "page"}}]}]}))
    state = lab_factory(services="policy", rules_dir=str(rules), alert_for=1)

    def alerts() -> list[str]:
        got = requests.get(state["alertmanager_url"] + "/api/v2/alerts", timeout=5).json()
        return [a["labels"]["alertname"] for a in got]

    assert "LabAlwaysFiring" in poll(alerts, lambda names: "LabAlwaysFiring" in names, 30)
    assert "for: 10m" in (rules / "alerts.yaml").read_text()  # the source keeps its production value


def test_rule_copies_cap_for_and_keep_firing_for(tmp_path: Path) -> None:
    src = tmp_path / "alerts.yaml"
    src.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "Long", "expr": "up == 0", "for": "1h30m", "keep_firing_for": "5m"},
        {"alert": "Short", "expr": "up == 0", "for": "5s"},
        {"record": "job:up:sum", "expr": "sum by (job) (up)"}]}]}))
    (tmp_path / "not-rules.yaml").write_text("panels: []\n")
    found = promconfig.find_rule_files(tmp_path)
    assert found == [src]
    [copy] = promconfig.write_rule_copies(found, tmp_path / "out", 10)
    rules = yaml.safe_load(copy.read_text())["groups"][0]["rules"]
    assert rules[0]["for"] == "10s" and rules[0]["keep_firing_for"] == "10s"
    assert rules[1]["for"] == "5s"
    assert rules[2] == {"record": "job:up:sum", "expr": "sum by (job) (up)"}
    assert yaml.safe_load(src.read_text())["groups"][0]["rules"][0]["for"] == "1h30m"


@pytest.mark.parametrize("text, seconds", [("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("0s", 0), ("2d", 172800)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert promconfig.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "1.5h"])
def test_parse_duration_refuses_garbage(text: str) -> None:
    with pytest.raises(promconfig.PromConfigError):
        promconfig.parse_duration(text)


@pytest.mark.e2e
def test_sample_limit_backstop_fails_a_scrape_that_exposes_too_many_series(tmp_path: Path) -> None:
    """Cardinality backstop: the generated config's sample_limit makes real Prometheus refuse a target that
    exposes more series than the limit (up=0, "sample limit exceeded") instead of ingesting them."""
    import subprocess

    body = "".join(f'tenant_requests_total{{tenant="t{i:04d}"}} 1\n' for i in range(50)).encode()
    exporter = JsonStub(lambda method, path, query, _: (200, body, "text/plain; version=0.0.4"))
    prom_port = free_port()
    config = promconfig.prometheus_config(
        {"wide": exporter.url.removeprefix("http://")}, [], None, interval_seconds=1, sample_limit=10)
    assert config["scrape_configs"][0]["sample_limit"] == 10
    assert promconfig.prometheus_config({"x": "127.0.0.1:1"}, [], None)["scrape_configs"][0]["sample_limit"] \
        == promconfig.SAMPLE_LIMIT
    cfg_path = promconfig.write_yaml(tmp_path / "prometheus.yml", config, "sample_limit test")
    proc = subprocess.Popen(["prometheus", f"--config.file={cfg_path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def targets() -> list[dict[str, Any]]:
            try:
                r = requests.get(f"http://127.0.0.1:{prom_port}/api/v1/targets", timeout=2)
                return r.json()["data"]["activeTargets"]
            except (requests.RequestException, ValueError, KeyError):
                return []

        seen = poll(targets, lambda t: bool(t) and t[0].get("lastError"), 20)
        assert seen and seen[0]["health"] == "down", seen
        assert "sample limit" in seen[0]["lastError"], seen
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        exporter.close()
