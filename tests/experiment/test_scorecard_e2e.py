"""`chaosext scorecard` on the lab, every JWKS_FAILURE mode in one command (each a full `chaos run`: baseline, outage,
recovery), judged per service: in one lab, policy replaces its key cache with whatever the JWKS answers
(``jwks_swap``) and vuln fetches the JWKS on the request path without a timeout (``jwks_fetch_inline``), while notify
is the healthy lab service. The table must name each broken service in exactly the modes that catch it, with the
check that does, and notify must hold in every mode the iptables driver can make against an http JWKS
(tls-untrusted needs an https one: not run, with why). Everything runs inside the test's own network namespace;
EXPIRY_ALERTS=none keeps the lab's 5-minute alert windows of a failed mode out of the next mode's baseline (the
alerts are judged by the experiment tests)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaosext.core.failures import JWKS_FAILURES
from chaosext.egress import impostor
from tests.experiment.experiment_util import ExperimentRunner

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.netns, pytest.mark.slow]

#: short, and the settings each knob needs to show: a slow JWKS beyond the lab's 2 s fetch timeout, inside the outage
SCORECARD_ENV = {"OUTAGE_SECONDS": "8", "BASELINE_SECONDS": "6", "BASELINE_MIN_REQUESTS": "20", "FAULT_MODE": "reject",
                 "JWKS_SLOW_SECONDS": "4", "EXPIRY_ALERTS": "none", "COLD_START_SERVICE": "policy,notify"}
BODY_MODES = ("http-error", "empty-keys", "malformed", "rotated")


def run_scorecard(experiment: ExperimentRunner, lab: dict, tmp_path: Path, modes: str, **extra: str) -> dict:
    env = experiment.env_for(lab, **{**SCORECARD_ENV, **extra})
    out = tmp_path / "scorecard"
    proc = experiment.popen(["chaosext", "scorecard", "--modes", modes, "--out", str(out), "--json",
                             str(out / "card.json")], env)
    output, _ = proc.communicate(timeout=1200)
    doc = json.loads((out / "card.json").read_text())
    doc["_exit"], doc["_output"], doc["_html"] = proc.returncode, output, (out / "scorecard.html").read_text()
    for run in doc["runs"].values():  # every mode's fault is gone, its impostor with it
        if run.get("journal") and Path(run["journal"]).exists():
            for step in json.loads(Path(run["journal"]).read_text()).get("run") or []:
                if step["activity"]["name"] == "block-jwks-egress" and isinstance(step.get("output"), dict):
                    assert impostor.find(step["output"]["run_id"]) == []
    return doc


def test_one_command_runs_every_mode_and_names_each_broken_service_and_its_check(experiment, lab_factory,
                                                                                 tmp_path):
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120, jwks_swap="policy", jwks_fetch_inline="vuln")

    doc = run_scorecard(experiment, lab, tmp_path, "all")

    cells, out = doc["cells"], doc["_output"]
    assert doc["modes"] == list(JWKS_FAILURES) and doc["services"] == ["policy", "vuln", "notify"], out
    assert doc["_exit"] == 1, out
    # tls-untrusted: refused before anything ran, naming why (an http JWKS has no TLS to fail)
    assert {c["status"] for c in cells["tls-untrusted"].values()} == {"not run"}
    assert "needs an https JWKS_URL" in cells["tls-untrusted"]["notify"]["why"]
    assert doc["runs"]["tls-untrusted"]["seconds"] == 0
    ran = [m for m in JWKS_FAILURES if m != "tls-untrusted"]
    # the healthy service held in every mode that ran
    assert {m: cells[m]["notify"]["status"] for m in ran} == {m: "held" for m in ran}, out
    # swap: every answer that is no usable key set empties policy's cache: valid tokens refused
    for mode in BODY_MODES:
        assert cells[mode]["policy"]["status"] == "failed" and "cached-key-fallback" in cells[mode]["policy"]["checks"]
        assert cells[mode]["vuln"]["status"] == "held", (mode, out)
    for mode in ("unreachable", "slow", "rotation-during-outage", "cold-start-during-outage"):
        assert cells[mode]["policy"]["status"] == "held", (mode, out)  # no answer to swap in
    # fetch-inline: a slow JWKS stacks onto vuln's requests
    assert cells["slow"]["vuln"]["status"] == "failed" and "latency-within-slo" in cells["slow"]["vuln"]["checks"]
    for mode in ("unreachable", *BODY_MODES, "rotation-during-outage", "cold-start-during-outage"):
        assert cells[mode]["vuln"]["status"] == "held", (mode, out)
    # the scenarios ran and were judged per service
    slow = json.loads(Path(doc["runs"]["slow"]["journal"]).read_text())
    judged = next(r["output"] for r in slow["run"] if r["activity"]["name"] == "judge-outage")
    assert judged["mode"] == "slow" and judged["checks"]["latency-within-slo"]["per_service"]["vuln"]["ok"] is False
    cold = json.loads(Path(doc["runs"]["cold-start-during-outage"]["journal"]).read_text())
    judged = next(r["output"] for r in cold["run"] if r["activity"]["name"] == "judge-outage")
    for service in ("policy", "notify"):
        fails_closed = judged["checks"]["cold-start-fails-closed"]["per_service"][service]
        assert fails_closed["ok"] and fails_closed["ticks_without_keys"] > 0 and fails_closed["keys_back"]
        assert set(fails_closed["answers"]) <= {"401", "503"} and fails_closed["no_keys_seconds"] > 0
        assert judged["checks"]["cold-start-not-ready"]["per_service"][service]["reported_not_ready"] is True
    # the table, the JSON for CI and the HTML report say the same
    assert "slow: vuln failed" in out and "empty-keys: policy failed cached-key-fallback" in out
    assert '<h2 id="scorecard">' in doc["_html"] and "cached-key-fallback" in doc["_html"]
