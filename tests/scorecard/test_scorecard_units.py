"""`chaosext scorecard` without running anything: a bad mode name is refused before anything, a mode the driver
cannot make is "not run" with why and starts no run, each journal becomes per-service cells (held / failed + checks
/ not run + why) with the run's own failures apart, and the table, JSON and HTML say the same."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chaosext import scorecard as sc
from chaosext.report.scorecard import render_scorecard_html
from tests.targetutil import target_config

SERVICES = ["policy", "vuln", "notify"]


def journal(checks: dict[str, Any] | None = None, after_ok: bool = True, baseline_ok: bool = True) -> dict[str, Any]:
    """A Chaos Toolkit journal of the experiment, as far as the scorecard reads one."""
    ok = {"status": "succeeded", "tolerance_met": True, "output": {"ok": True}}
    before = {"steady_state_met": baseline_ok, "probes": [
        {**ok, "activity": {"name": "jwks-caches-fresh"}, "tolerance_met": baseline_ok}]}
    if not baseline_ok:
        return {"experiment": {"title": "t"}, "status": "completed", "deviated": False, "rollbacks": [],
                "steady_states": {"before": before}, "run": []}
    after_probe = {**ok, "activity": {"name": "valid-tokens-accepted"}} if after_ok else {
        "status": "succeeded", "tolerance_met": False, "activity": {"name": "valid-tokens-accepted"},
        "output": {"ok": False, "failures": [{"service": "vuln", "status": 401}]}}
    # the services served stale keys: the outage exercised the stale-key path (else the verdict's NOT EXERCISED)
    checks = {"auth-degraded-audited": {"ok": True, "affected": SERVICES}, **(checks or {})}
    failed = [n for n, r in checks.items() if not r.get("ok")]
    judged = {"ok": not failed, "failed": failed, "checks": checks}
    run = [{"activity": {"name": "block-jwks-egress"}, "status": "succeeded",
            "output": {"run_id": "ab12cd34", "verification": {"blocked": True}}},
           {"activity": {"name": "watch-outage"}, "status": "succeeded", "output": {"watched": True, "ticks": 3}},
           {"activity": {"name": "restore-jwks-egress"}, "status": "succeeded", "output": {}},
           {"activity": {"name": "judge-outage"}, "status": "succeeded", "output": judged}]
    return {"experiment": {"title": "t"}, "status": "completed", "deviated": not after_ok, "run": run,
            "rollbacks": [],
            "steady_states": {"before": before, "after": {"steady_state_met": after_ok, "probes": [after_probe]}}}


def test_a_bad_mode_name_is_refused_before_anything_naming_every_mode(tmp_path: Path) -> None:
    result = CliRunner().invoke(sc.scorecard, ["--modes", "slow,melting", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "melting unknown" in result.output
    assert "unreachable, slow, http-error, empty-keys, malformed, rotated, tls-untrusted" in result.output
    assert not (tmp_path / "out").exists()
    assert sc.parse_modes("all") == sc.parse_modes("") == list(sc.JWKS_FAILURES)
    assert sc.parse_modes("slow,slow,unreachable") == ["slow", "unreachable"]


def test_a_mode_the_driver_cannot_make_is_not_run_and_starts_nothing(tmp_path: Path, monkeypatch) -> None:
    def no_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("no chaos run for a mode the driver cannot make")

    monkeypatch.setattr(sc.subprocess, "run", no_run)
    env = {k.upper(): v for k, v in target_config(tmp_path, fault_via="k8s-networkpolicy",
                                                  fault_target="tenancy/app=policy").items()}
    doc = sc.run_scorecard(["slow", "empty-keys", "tls-untrusted"], tmp_path / "out", env, echo=lambda _: None)

    assert set(doc["services"]) == set(doc["cells"]["slow"])
    for mode in ("slow", "empty-keys", "tls-untrusted"):
        cell = next(iter(doc["cells"][mode].values()))
        assert cell["status"] == "not run" and "k8s-networkpolicy can make: unreachable" in cell["why"]
        assert doc["runs"][mode]["capability"] is True
    assert sc.exit_code(doc) == 0  # nothing could run, so nothing failed: every cell says why


def test_a_journal_becomes_per_service_cells_with_the_runs_failures_apart() -> None:
    checks = {"cached-key-fallback": {"ok": False, "services_failed": ["policy"]},
              "latency-within-slo": {"ok": True, "services_failed": []},
              "client-error-rate-below-max": {"ok": False, "error_rate": 0.2}}
    cells, run = sc.cells_of(journal(checks, after_ok=False), SERVICES, verified=False)

    assert cells == {"policy": {"status": "failed", "checks": ["cached-key-fallback"]},
                     "vuln": {"status": "failed", "checks": ["recovery: valid-tokens-accepted"]},
                     "notify": {"status": "held"}}
    assert run["verdict"] == "FAIL" and run["run_failed"] == ["client-error-rate-below-max"]
    held, passed = sc.cells_of(journal({"no-fail-open": {"ok": True}}), SERVICES, verified=False)
    assert {c["status"] for c in held.values()} == {"held"} and passed["verdict"] == "PASS"
    refused, why = sc.cells_of(journal(baseline_ok=False), SERVICES, verified=False)
    assert {c["status"] for c in refused.values()} == {"not run"} and "baseline unhealthy" in refused["vuln"]["why"]
    assert why["verdict"] == "NOT RUN"


def test_exit_code_table_json_and_html_say_the_same() -> None:
    cells, run = sc.cells_of(journal({"cached-key-fallback": {"ok": False, "services_failed": ["policy"]}}), SERVICES,
                           verified=False)
    doc = {"modes": ["empty-keys", "tls-untrusted"], "services": SERVICES, "wall_seconds": 61.0,
           "target": {"via": "iptables", "target": "local", "jwks_url": "http://127.0.0.2:8440/jwks"},
           "cells": {"empty-keys": cells, "tls-untrusted": {s: {"status": "not run", "why": "needs https"}
                                                           for s in SERVICES}},
           "runs": {"empty-keys": {**run, "seconds": 30.0, "journal": "empty-keys/journal.json"},
                    "tls-untrusted": {"verdict": "NOT RUN", "reasons": ["needs https"], "run_failed": [],
                                      "capability": True, "seconds": 0.0}}}
    assert sc.exit_code(doc) == 1
    table = sc.render_table(doc)
    assert table.splitlines()[1].split()[:3] == ["policy", "FAILED", "cached-key-fallback"]
    assert "empty-keys: policy failed cached-key-fallback" in table and "tls-untrusted: not run: needs https" in table
    html = render_scorecard_html(json.loads(json.dumps(doc)))
    assert html.count('class="held"') == 2 and html.count('class="failed"') == 1 and "needs https" in html
    doc["cells"]["empty-keys"]["policy"] = {"status": "held"}
    doc["runs"]["empty-keys"]["verdict"] = "PASS"
    assert sc.exit_code(doc) == 0
    doc["runs"]["empty-keys"].update(verdict="NOT RUN", capability=False)
    assert sc.exit_code(doc) == 3


@pytest.mark.parametrize("argv", [["--var", "NOEQUALS"], ["--outage-seconds", "0"]])
def test_bad_options_are_refused(tmp_path: Path, argv: list[str]) -> None:
    result = CliRunner().invoke(sc.scorecard, [*argv, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and not (tmp_path / "o").exists()


def test_the_verdict_says_which_service_failed_which_check_in_which_mode() -> None:
    from chaosext.verdict import render

    checks = {"cached-key-fallback": {"ok": False, "services_failed": ["policy"]},
              "client-error-rate-below-max": {"ok": False}}
    doc = journal(checks)
    judged = doc["run"][-1]["output"]
    judged.update(mode="empty-keys", per_service={"services": {"policy": ["cached-key-fallback"], "vuln": []},
                                                   "run": ["client-error-rate-below-max"], "not_judged": []})
    text = render(doc, wide=True)
    assert "per service (JWKS_FAILURE=empty-keys):" in text
    assert "policy           FAILED cached-key-fallback" in text and "vuln             held" in text
    assert "(the run)        FAILED client-error-rate-below-max" in text


def test_each_mode_runs_in_a_private_directory_and_a_planted_symlink_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Issue 27 for the scorecard (root writes into a directory the operator names, maybe a CI workspace): each mode's
    journal and logs go into a 0700 directory chaos runs in by descriptor; a symlink planted where a mode's directory
    goes is refused, and nothing is written where it points."""
    from chaosext.core import safefs

    seen: list[str] = []

    def fake_chaos(argv: list[str], cwd: str, **kwargs: Any) -> Any:
        seen.append(os.path.realpath(cwd))
        Path(cwd, "journal.json").write_text(json.dumps(journal()))
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(sc.subprocess, "run", fake_chaos)
    monkeypatch.setattr(sc, "_settle", lambda *a: None)
    env = {k.upper(): v for k, v in target_config(tmp_path).items()}
    out = tmp_path / "out"
    doc = sc.run_scorecard(["unreachable"], out, env, echo=lambda _: None)

    assert seen == [str(out / "unreachable")] and (out / "unreachable" / "chaos.log").exists()
    assert stat.S_IMODE((out / "unreachable").stat().st_mode) == 0o700
    assert doc["runs"]["unreachable"]["verdict"] == sc.cells_of(journal(), SERVICES)[1]["verdict"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "slow").symlink_to(elsewhere)
    with pytest.raises(safefs.UnsafePath):
        sc.run_scorecard(["slow"], out, env, echo=lambda _: None)
    assert list(elsewhere.iterdir()) == [] and seen == [str(out / "unreachable")]
