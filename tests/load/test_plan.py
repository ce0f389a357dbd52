"""The load plan chaosext writes for k6 from the target description, and the one default of K6_RATE."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chaosext.core.config import ExperimentConfig, load_config
from chaosext.core.errors import ConfigError
from chaosext.load.plan import PLAN_FILE, load_plan, write_plan

from .targets import SHOP_ROUTES, write_target

ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, **settings: str) -> ExperimentConfig:
    target = write_target(tmp_path / "target.yaml", {"orders": "http://10.0.0.3:4000", "billing": "http://10.0.0.4:80"},
                          tenants=["acme", "globex"], tenant_header="X-Tenant-ID")
    return load_config({"target_file": str(target), "chaosext_lab_dir": str(tmp_path / "no-lab"), **settings})


def test_the_plan_is_the_descriptions_services_routes_tenants_and_header(tmp_path: Path) -> None:
    plan = load_plan(config(tmp_path))
    assert plan["tenant_header"] == "X-Tenant-ID" and plan["tenants"] == ["acme", "globex"]
    assert [(s["name"], s["url"]) for s in plan["services"]] == [("orders", "http://10.0.0.3:4000"),
                                                                ("billing", "http://10.0.0.4:80")]
    orders = plan["services"][0]["routes"]
    assert [(r["method"], r["path"], r["weight"], r["kind"]) for r in orders] == [
        ("GET", "/v2/orders", 3, "read"), ("GET", "/v2/orders/{id}", 1, "read"), ("POST", "/v2/orders", 1, "write")]
    assert orders[2]["body"] == '{"sku":"x-1"}'
    assert [r["kind"] for r in plan["services"][1]["routes"]] == ["read", "write", "write"]


def test_settings_over_the_description_reach_the_plan(tmp_path: Path) -> None:
    plan = load_plan(config(tmp_path, tenant_header="none", tenants="t1,t2,t3", service_urls="billing=http://b:9"))
    assert plan["tenant_header"] == "" and plan["tenants"] == ["t1", "t2", "t3"]
    assert [s["name"] for s in plan["services"]] == ["billing"]
    assert len(plan["services"][0]["routes"]) == len(SHOP_ROUTES["billing"])


def test_the_plan_file_is_the_runs_own_and_holds_no_secret(tmp_path: Path) -> None:
    cfg = config(tmp_path, token_client_secret="s3cret-value")
    (tmp_path / "run").mkdir()
    decoy = tmp_path / "elsewhere.json"
    decoy.write_text("{}")
    (tmp_path / "run" / PLAN_FILE).symlink_to(decoy)  # a link planted where the plan goes is replaced, not followed
    path = write_plan(cfg, tmp_path / "run")
    assert path.stat().st_mode & 0o777 == 0o600 and not path.is_symlink() and decoy.read_text() == "{}"
    text = path.read_text()
    assert "s3cret" not in text
    assert set(json.loads(text)) == {"tenant_header", "tenants", "services"}


def test_a_target_with_nothing_to_drive_is_refused_with_where_to_describe_it(tmp_path: Path) -> None:
    target = write_target(tmp_path / "t.yaml", {"orders": "http://10.0.0.3:4000"},
                          {"orders": [{"method": "GET", "path": "/v2/orders", "weight": 0}]})
    cfg = load_config({"target_file": str(target), "chaosext_lab_dir": str(tmp_path / "no-lab")})
    with pytest.raises(ConfigError, match=r"nothing to drive.*services\.<name>\.routes"):
        load_plan(cfg)


def test_k6_rate_has_one_default_the_experiments_and_the_script_has_none() -> None:
    """K6_RATE's default lives in the settings (and the experiments' configuration blocks, which must agree); the
    k6 script has none of its own and docs/load.md says whose default applies."""
    default = ExperimentConfig().k6_rate
    for experiment in sorted((ROOT / "experiments").glob("*.json")):
        entries = json.loads(experiment.read_text())["configuration"].values()
        rates = [e["default"] for e in entries if isinstance(e, dict) and e.get("key") == "K6_RATE"]
        assert rates == [str(default)], f"{experiment.name}: K6_RATE default {rates}, the settings' is {default}"
    script = (ROOT / "ops" / "devops" / "tenant" / "k6-tenant-load.js").read_text()
    assert "requiredEnv('K6_RATE')" in script and not re.search(r"intEnv\('K6_RATE', [1-9]", script)
    row = next(line for line in (ROOT / "docs" / "load.md").read_text().splitlines() if line.startswith("| `K6_RATE`"))
    assert re.findall(r"default (\d+)", row.split("|")[2]) == [str(default)], row
