"""Fixtures of the report tests: a real journal of the JWKS-outage experiment run against the namespaced lab
(``ns_lab`` in ``module_netns``, tests/conftest.py; short outage). Everything is removed afterwards, even on failure."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.nsutil import in_ns

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO / "experiments" / "jwks-outage.json"


@pytest.fixture(scope="module")
def lab_journal(module_netns: str, ns_lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """journal.json of a real `chaos run experiments/jwks-outage.json` against the namespaced lab (15 s outage)."""
    out = tmp_path_factory.mktemp("run")
    journal = out / "journal.json"
    env = {"CHAOSEXT_LAB_DIR": ns_lab["state_dir"], "OUTAGE_SECONDS": "15", "K6_RATE": "50", "BASELINE_SECONDS": "10",
           "BASELINE_MIN_REQUESTS": "30", "RECOVERY_SECONDS": "30",
           "CHAOSEXT_STATE_DIR": str(out / "faults")}
    proc = in_ns(module_netns, ["chaos", "--log-file", str(out / "chaos.log"), "run", "--journal-path", str(journal),
                                str(EXPERIMENT)], env=env, timeout=240)
    assert journal.exists(), f"chaos run wrote no journal (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return journal
