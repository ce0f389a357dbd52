"""deploy/README.md's Tenancy Observability section stays true to the shipped files."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chaosext.lab import promconfig

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "deploy" / "README.md"
ALERTS = ROOT / "ops" / "devops" / "tenant" / "alerts.yaml"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Tenancy Observability")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_alert_table_matches_alerts_yaml() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    rows = re.findall(r"^\| `(\w+)` \| (\w+), (\w+) \|.*\[docs/runbook.md#([\w-]+)\]", _section(), re.M)
    assert {name for name, *_ in rows} == set(rules)
    for name, severity, duration, anchor in rows:
        assert rules[name]["labels"]["severity"] == severity, name
        assert rules[name]["for"] == duration, name
        assert rules[name]["annotations"]["runbook_url"] == f"{promconfig.SHIPPED_RUNBOOK_BASE}#{anchor}", name


def test_runbook_base_is_documented_and_rewritable(tmp_path: Path) -> None:
    """One base for every runbook_url: the README names it, and the lab's copy can point every alert elsewhere."""
    assert promconfig.SHIPPED_RUNBOOK_BASE in _section()
    [copy] = promconfig.write_rule_copies([ALERTS], tmp_path / "rules", 10, runbook_base="https://wiki.example.org/rb")
    urls = [r["annotations"]["runbook_url"] for g in yaml.safe_load(copy.read_text())["groups"] for r in g["rules"]]
    assert urls and all(re.fullmatch(r"https://wiki\.example\.org/rb#[a-z-]+", u) for u in urls), urls
    for bad in ("docs/runbook.md", "wiki.example.org/rb", "https://x.example/rb#a"):
        with pytest.raises(promconfig.PromConfigError, match="absolute"):
            promconfig.set_runbook_base({"groups": []}, bad)


def test_alertmanager_routing_example_is_a_valid_config(tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    if not amtool:
        pytest.fail("amtool not found: run scripts/setup (Debian package prometheus-alertmanager)")
    block = re.search(r"```yaml\n(route:.*?)```", _section(), re.S).group(1)
    doc = yaml.safe_load(block)
    routed = {r["receiver"] for r in doc["route"]["routes"]} | {doc["route"]["receiver"]}
    assert routed <= {r["name"] for r in doc["receivers"]}
    path = tmp_path / "alertmanager.yml"
    path.write_text(block)
    proc = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
