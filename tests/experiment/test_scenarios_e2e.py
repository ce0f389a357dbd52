"""The two scenarios on top of an unreachable JWKS (FAULT_MODE=drop), in one `chaosext scorecard` on a lab where
policy keeps the key set it fetched first for ever (``jwks_pinned``), vuln reports ready with no key
(``ready_without_keys``) and fetches the JWKS for every unknown kid, awaited (``jwks_unknown_kid_storm``), and notify
is healthy. cold-start-during-outage runs first: after a rotation the pinned policy refuses every new token for ever,
so the next run's own pre-flight would (rightly) refuse to start."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.experiment.test_scorecard_e2e import run_scorecard

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.netns, pytest.mark.slow]


def test_rotation_and_cold_start_name_the_service_that_breaks_them(experiment, lab_factory, tmp_path):
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120, jwks_pinned="policy", ready_without_keys="vuln",
                      jwks_unknown_kid_storm="vuln")

    doc = run_scorecard(experiment, lab, tmp_path, "cold-start-during-outage,rotation-during-outage",
                        FAULT_MODE="drop", COLD_START_SERVICE="vuln,notify")

    cells, out = doc["cells"], doc["_output"]
    cold, rotation = cells["cold-start-during-outage"], cells["rotation-during-outage"]
    # cold start: vuln said "ready" with no key; notify stayed out of rotation; both refused every valid token
    assert cold["vuln"]["status"] == "failed" and "cold-start-not-ready" in cold["vuln"]["checks"], out
    assert "cold-start-fails-closed" not in cold["vuln"]["checks"], out  # it refused, it only claimed to be ready
    assert cold["notify"]["status"] == "held" and cold["policy"]["status"] == "held", out
    # rotation: pinned policy never takes the new key; vuln's refusals each wait for a JWKS fetch; notify refuses
    # the new key at once and takes it after the restore
    assert rotation["policy"] == {"status": "failed", "checks": ["rotation-accepted-after-restore"]}, out
    assert rotation["vuln"]["status"] == "failed" and "rotation-fails-closed" in rotation["vuln"]["checks"], out
    assert rotation["notify"]["status"] == "held", out
    journal = json.loads(Path(doc["runs"]["rotation-during-outage"]["journal"]).read_text())
    judged = next(r["output"] for r in journal["run"] if r["activity"]["name"] == "judge-outage")
    closed = judged["checks"]["rotation-fails-closed"]
    assert closed["new_kids"] != closed["old_kids"]
    assert closed["per_service"]["notify"]["refused_share"] == 1.0 and closed["per_service"]["notify"]["accepted"] == 0
    assert "fetch on the request path" in closed["per_service"]["vuln"]["why"]
    after = judged["checks"]["rotation-accepted-after-restore"]["per_service"]
    assert after["notify"]["ok"] and after["notify"]["accepted_after_seconds"] is not None
    assert after["policy"]["accepted_after_seconds"] is None
