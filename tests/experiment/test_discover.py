"""`chaos discover chaosext`: Chaos Toolkit finds the experiment's probes, each with its docstring and argument types
(what the experiment files and `chaos init` rely on)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def test_chaos_discover_lists_the_experiment_probes_with_types(tmp_path: Path) -> None:
    out = tmp_path / "discovery.json"
    p = subprocess.run(["chaos", "--no-log-file", "discover", "--no-system-info", "--discovery-path", str(out),
                        "chaosext"], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    acts = {(a["mod"], a["name"]): a for a in json.loads(out.read_text())["activities"]}
    hypothesis = [("chaosext.outage.hypothesis", name) for name in (
        "jwks_caches_fresh", "valid_tokens_accepted", "forged_tokens_refused", "error_rate_within_max",
        "expiry_alerts_clear", "audit_pipeline_healthy")]
    for mod, name in [*hypothesis, ("chaosext.outage.watch", "watch_outage"), ("chaosext.outage.judge", "judge_outage"),
                      ("chaosext.outage.drill", "fails_closed_after_expiry"),
                      ("chaosext.outage.drill", "alerts_clear_before_fault"), ("chaosext.outage.judge", "judge_drill")]:
        act = acts[(mod, name)]
        assert act["doc"] and act["type"] == "probe"
        assert all(arg.get("type") != "object" for arg in act.get("arguments", [])), act["arguments"]
    for path in sorted(EXPERIMENTS.glob("*.json")):  # every chaosext activity the shipped experiments name
        doc = json.loads(path.read_text())
        for act in [*doc["steady-state-hypothesis"]["probes"], *doc["method"], *doc.get("rollbacks", [])]:
            provider = act["provider"]
            if provider.get("module", "").startswith("chaosext"):
                assert acts[(provider["module"], provider["func"])]["type"] == act["type"], (path.name, act["name"])
    assert {"name": "duration_seconds", "default": 0, "type": "integer"} in acts[
        ("chaosext.outage.watch", "watch_outage")]["arguments"]
