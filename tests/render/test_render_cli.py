"""`chaosext render rules|dashboard|load-plan` as a user runs them: from a target description to files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from chaosext.cli import main


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHAOSEXT_LAB_DIR", str(tmp_path / "no-lab"))
    monkeypatch.delenv("TARGET_FILE", raising=False)
    path = tmp_path / "target.yaml"
    path.write_text(yaml.safe_dump({
        "version": 1, "tenants": ["acme", "globex"], "tenant_header": "X-Tenant-ID",
        "identity_provider": {"authority_url": "http://idp:3000"},
        "services": {"orders": {"url": "http://orders:4000", "routes": ["GET /v2/orders", "POST /v2/orders"]},
                     "billing": {"url": "http://billing:4000", "routes": ["GET /invoices/{id}"]}},
        "prometheus": {"metrics": {"requests": "http_requests_total", "service_label": "app",
                                   "status_label": "code", "latency_histogram": "off"}}}, sort_keys=False))
    return path


def test_rules_dashboard_and_load_plan_are_written_for_the_described_target(target: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out"
    rules = runner.invoke(main, ["render", "rules", "--target-file", str(target), "--out", str(out)])
    assert rules.exit_code == 0, rules.output
    assert {p.name for p in out.iterdir()} == {"recording-rules.yaml", "alerts.yaml", "services.yaml"}
    assert "left out tenant_latency_p95_high" in rules.output
    assert '"app", "orders"' in (out / "services.yaml").read_text()
    assert "http_requests_total" in (out / "recording-rules.yaml").read_text()
    dash = runner.invoke(main, ["render", "dashboard", "--target-file", str(target), "--out", str(out)])
    assert dash.exit_code == 0, dash.output
    panels = json.loads((out / "tenant-audit.json").read_text())["panels"]
    assert not [p for p in panels if "p95" in p["title"]]
    plan = runner.invoke(main, ["render", "load-plan", "--target-file", str(target), "--out", str(out / "plan.json")])
    assert plan.exit_code == 0, plan.output
    doc = json.loads((out / "plan.json").read_text())
    assert [s["name"] for s in doc["services"]] == ["orders", "billing"] and doc["tenant_header"] == "X-Tenant-ID"
    assert f"TARGET_JSON={out / 'plan.json'}" in plan.output and "AUTHORITY_URL=http://idp:3000" in plan.output


def test_without_a_target_it_says_how_to_give_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSEXT_LAB_DIR", str(tmp_path / "no-lab"))
    monkeypatch.delenv("TARGET_FILE", raising=False)
    result = CliRunner().invoke(main, ["render", "rules", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "--target-file" in result.output and "chaosext lab up" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nservices: {orders: {url: http://o, routez: []}}\n")
    result = CliRunner().invoke(main, ["render", "dashboard", "--target-file", str(bad), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "routez" in result.output
