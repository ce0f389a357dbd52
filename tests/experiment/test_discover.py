"""`chaos discover chaosext`: Chaos Toolkit finds the experiment's probes, each with its docstring and argument types
(what the experiment files and `chaos init` rely on)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_chaos_discover_lists_the_experiment_probes_with_types(tmp_path: Path) -> None:
    out = tmp_path / "discovery.json"
    p = subprocess.run(["chaos", "--no-log-file", "discover", "--no-system-info", "--discovery-path", str(out),
                        "chaosext"], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    acts = {(a["mod"], a["name"]): a for a in json.loads(out.read_text())["activities"]}
    for mod, name in [("chaosext.auth.probes", "cached_key_fallback"), ("chaosext.auth.probes", "no_fail_open"),
                      ("chaosext.metrics.probes", "server_error_rate"), ("chaosext.outage.watch", "watch_outage"),
                      ("chaosext.metrics.probes", "alerts_match_cache_state"),
                      ("chaosext.outage.judge", "judge_outage"),
                      ("chaosext.audit.probes", "audit_degraded_recorded"),
                      ("chaosext.auth.drill", "fails_closed_after_expiry"), ("chaosext.outage.judge", "judge_drill")]:
        act = acts[(mod, name)]
        assert act["doc"] and act["type"] == "probe"
        assert all(arg.get("type") != "object" for arg in act.get("arguments", [])), act["arguments"]
    assert {"name": "duration_seconds", "default": 0, "type": "integer"} in acts[
        ("chaosext.outage.watch", "watch_outage")]["arguments"]
