"""What a release gate reads from `chaosext verdict`: a forged token accepted in any phase FAILS (exit 1, on top),
"not run" is for availability only, an outage that never made a cache stale is NOT EXERCISED (5), an incomplete
journal is unreadable (2), and a journal is checked against its run's own record (run.json, sealed with a per-run
key by the safety control): an edited journal FAILS, saying where it differs, and no journal passes without it.

Journals here have the exact shape `chaos run experiments/jwks-outage.json` writes (the e2e tests in
tests/experiment run the real thing); the record is written by the safety control's own code.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chaosext.core import journal_record
from chaosext.egress.base import FaultError
from chaosext.outage.notebook import Judgments, edit_notebook
from chaosext.run.context import run_context
from chaosext.safety import cleanup, controls
from chaosext.verdict import EXIT_CODES, classify, verdict
from tests.runutil import start_run

RUN_ID = "ab12cd34"


def _probe(name: str, output: dict[str, Any]) -> dict[str, Any]:
    return {"activity": {"type": "probe", "name": name, "tolerance": {"type": "jsonpath", "path": "$.ok",
                                                                     "expect": True}},
            "status": "succeeded", "output": output, "tolerance_met": bool(output.get("ok"))}


def _step(name: str, output: Any, status: str = "succeeded") -> dict[str, Any]:
    return {"activity": {"type": "action", "name": name}, "status": status, "output": output}


def _forged(accepted: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    accepted = accepted or []
    return {"ok": not accepted, "tried": 40, "accepted_count": len(accepted), "inconclusive_count": 0,
            "classes": {"alg-none": {"tried": 20, "refused": 20 - len(accepted), "accepted": len(accepted),
                                     "inconclusive": 0, "first_accepted_s": None},
                        "unknown-kid": {"tried": 20, "refused": 20, "accepted": 0, "inconclusive": 0,
                                        "first_accepted_s": None}},
            "accepted": accepted, "inconclusive": [], "skipped": {}, "refused_statuses": [401, 403],
            "why": "FAIL-OPEN: ..." if accepted else "", **extra}


HOLE = {"class": "alg-none", "variant": "none", "service": "policy", "tenant": "t03", "method": "GET",
        "route": "/api/v1/policies", "status": 200, "at_s": None}


def _live(phase: str, forged: dict[str, Any] | None = None) -> dict[str, Any]:
    forged = forged or _forged()
    probes = [_probe("jwks-caches-fresh", {"ok": True, "phase": phase}),
              _probe("forged-tokens-refused", {"phase": phase, **forged}),
              _probe("error-rate-below-max", {"ok": True, "phase": phase, "error_rate": 0.0, "requests": 900})]
    return {"steady_state_met": all(p["tolerance_met"] for p in probes), "probes": probes}


def _journal(affected: tuple[str, ...] = ("policy", "vuln"), before: dict[str, Any] | None = None,
             no_fail_open: dict[str, Any] | None = None) -> dict[str, Any]:
    checks = {"outage-held": {"ok": True, "planned_seconds": 12, "ticks": 6},
              "no-fail-open": {"phase": "outage", **(no_fail_open or _forged(
                  coverage={"tenants": 3, "attacked": 3, "missing": [], "pairs": 60, "pairs_total": 60,
                            "ticks": 6, "bound_ticks": 3, "bound_seconds": 6.0}))},
              "server-error-rate-below-max": {"ok": True, "error_rate": 0.0, "requests": 1200},
              "auth-degraded-audited": {"ok": True, "affected": list(affected), "recorded": list(affected)},
              "alerts-fire-iff-cache-expired": {"ok": True, "cache_expired": False, "expired_services": []}}
    failed = [n for n, r in checks.items() if not r.get("ok")]
    j = {"chaoslib-version": "1.44.0", "platform": "Linux", "node": "lab",
         "experiment": {"title": "Tenant APIs survive a 12s outage", "steady-state-hypothesis": {}},
         "start": "2026-12-01T10:00:00", "end": "2026-12-01T10:01:00", "duration": 60.0,
         "status": "completed", "deviated": False,
         "steady_states": {"before": before or _live("baseline"), "after": _live("recovery"), "during": []},
         "run": [_step("block-jwks-egress", {"run_id": RUN_ID, "verification": {"blocked": True}}),
                 _step("watch-outage", {"watched": True, "ticks": 6}),
                 _step("restore-jwks-egress", {"restored": True}),
                 _step("judge-outage", {"ok": not failed, "failed": failed, "checks": checks})],
         "rollbacks": [_step("restore-jwks-egress", {"restored": False}), _step("stop-k6", {"stopped": []})]}
    if before is not None and not before["steady_state_met"]:
        j["run"], j["steady_states"]["after"] = [], None
    return j


def _sealed(tmp_path: Path, journal: dict[str, Any], run_id: str = RUN_ID, restore_error: str = "",
            k6_error: str = "") -> dict[str, Any]:
    """What the safety control does for a real run: a run directory and key at the start (and judge-outage's
    judgments in the outage notebook); at the end its after-experiment hook, its own code: the always-restore,
    ``closed`` in run.json, the run named in the journal with how it was closed, the judged view sealed in run.json.
    No fault was applied here, so the restore and the k6 stop it calls are this test's: ``restore_error`` makes the
    restore fail the way the driver does when rules are left (FaultError), ``k6_error`` the stop. Returns the
    journal as `chaos run` writes it."""
    conf = start_run(tmp_path, run_id)
    ctx = run_context(conf)
    assert ctx.run_dir is not None
    journal_record.new_key(ctx.run_dir)
    out = journal["run"][-1]["output"] if journal["run"] else {}
    with edit_notebook(ctx.run_dir) as notebook:
        notebook.judgments = Judgments({f"check_{n}": r for n, r in (out.get("checks") or {}).items()})

    def restore_run(ctx: Any, reason: str = "") -> dict[str, Any]:
        if restore_error:
            raise FaultError(restore_error)
        return {"restored": [], "left": [], "nothing_to_restore": True}

    def stop(ctx: Any, owner_run_id: str = "") -> dict[str, Any]:
        if k6_error:
            raise RuntimeError(k6_error)
        return {"stopped": []}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cleanup, "restore_run", restore_run)
        mp.setattr(cleanup, "stop", stop)
        controls.after_experiment_control(context=journal["experiment"], state=journal, configuration=conf)
    written: dict[str, Any] = json.loads(json.dumps(journal))
    return written


class Verdict:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _verdict(tmp_path: Path, journal: Any, *args: str) -> Verdict:
    """`chaosext verdict --wide journal.json ...` (the command itself, in this process)."""
    path = tmp_path / "journal.json"
    path.write_text(json.dumps(journal))
    r = CliRunner().invoke(verdict, ["--wide", str(path), *args])
    return Verdict(r.exit_code, r.stdout, r.stderr)


def test_a_clean_run_whose_journal_matches_its_record_passes(tmp_path: Path) -> None:
    v = _verdict(tmp_path, _sealed(tmp_path, _journal()))
    assert v.returncode == 0, v.stdout + v.stderr
    assert "VERDICT: PASS" in v.stdout and "run record: verified" in v.stdout
    assert "every class x tenant pair within 3 ticks (6.0s), this outage had 6" in v.stdout


def test_a_forged_token_accepted_in_the_baseline_is_a_security_failure_not_not_run(tmp_path: Path) -> None:
    """The baseline stopped the run before the fault (Chaos Toolkit skipped the method): still exit 1, the finding
    first, naming class, tenant, service and route."""
    journal = _sealed(tmp_path, _journal(before=_live("baseline", _forged([HOLE]))))
    v = _verdict(tmp_path, journal, "--json")
    out = json.loads(v.stdout)
    assert v.returncode == 1 and out["verdict"] == "FAIL" and out["exit_code"] == 1
    assert out["reasons"][0].startswith("SECURITY: 1 forged token(s) ACCEPTED in the baseline, before the fault")
    assert "alg-none (none) on policy tenant t03 GET /api/v1/policies -> 200" in out["reasons"][0]
    screen = _verdict(tmp_path, journal).stdout.splitlines()
    assert screen[3].startswith("SECURITY FINDINGS") and "tenant t03" in screen[4]


@pytest.mark.parametrize("where", ["outage", "recovery", "key-url", "backstop"])
def test_a_security_finding_in_any_phase_is_on_top(tmp_path: Path, where: str) -> None:
    journal = _journal()
    if where == "outage":
        journal["run"][-1]["output"]["checks"]["no-fail-open"] = {"phase": "outage", **_forged([HOLE])}
    elif where == "recovery":
        journal["steady_states"]["after"] = _live("recovery", _forged([HOLE]))
    elif where == "key-url":
        journal["run"][-1]["output"]["checks"]["no-fail-open"]["key_url_fetched"] = ["/jwks.json"]
    else:
        journal["run"][-1]["output"]["checks"]["no-fail-open"]["metric_backstop"] = {
            "ok": False, "exported": True, "unverified_accepts": 4.0, "selector": "jwt_validations_total{...}"}
    kind, reasons = classify(journal)
    assert kind == "FAIL" and reasons[0].startswith("SECURITY:"), reasons


def test_an_unhealthy_baseline_without_a_security_finding_is_not_run(tmp_path: Path) -> None:
    before = _live("baseline")
    before["probes"][0] = _probe("jwks-caches-fresh", {"ok": False, "phase": "baseline", "not_fresh": ["vuln"]})
    before["steady_state_met"] = False
    kind, reasons = classify(_journal(before=before))
    assert kind == "NOT RUN" and EXIT_CODES[kind] == 3 and "jwks-caches-fresh" in reasons[0]


def test_an_outage_that_made_no_cache_stale_is_not_exercised(tmp_path: Path) -> None:
    v = _verdict(tmp_path, _sealed(tmp_path, _journal(affected=())))
    assert v.returncode == 5 and "VERDICT: NOT EXERCISED (exit 5)" in v.stdout, v.stdout
    assert "no service served stale keys" in v.stdout and "OUTAGE_SECONDS (12s)" in v.stdout


@pytest.mark.parametrize("text", ['{"status": "completed"}', "[]", '{"status": "completed", "run": [], '
                                  '"steady_states": {}, "rollbacks": [], "experiment": {}, "x": 1}'.replace(
                                      '"status": "completed", ', '"status": "running", ')])
def test_an_incomplete_journal_is_unreadable(tmp_path: Path, text: str) -> None:
    path = tmp_path / "journal.json"
    path.write_text(text)
    v = subprocess.run([sys.executable, "-m", "chaosext.cli", "verdict", str(path)], capture_output=True, text=True,
                       timeout=60, check=False)  # once as a user runs it
    assert v.returncode == 2 and "cannot read" in v.stderr and "Chaos Toolkit journal" in v.stderr, v.stderr


def test_an_edited_journal_fails_and_says_where_it_differs(tmp_path: Path) -> None:
    """A failed run (no-fail-open accepted a forged token) whose journal was edited to read as a pass."""
    failing = _journal(no_fail_open=_forged([HOLE]))
    journal = _sealed(tmp_path, failing)
    edited = copy.deepcopy(journal)
    judge_out = edited["run"][-1]["output"]
    judge_out["checks"]["no-fail-open"] = {"phase": "outage", **_forged()}
    judge_out["ok"], judge_out["failed"] = True, []
    assert classify(edited)[0] == "PASS"  # the journal alone would pass: only the record can tell
    v = _verdict(tmp_path, edited, "--json")
    out = json.loads(v.stdout)
    assert v.returncode == 1 and out["verdict"] == "FAIL" and out["record"]["status"] == "mismatch"
    assert out["reasons"][0].startswith("THE JOURNAL DISAGREES WITH ITS RUN'S RECORD")
    assert any("run[judge-outage].output.checks.no-fail-open" in r for r in out["reasons"]), out["reasons"]
    assert any("not the judgments the run recorded in outage.json: no-fail-open" in r for r in out["reasons"])


def test_no_pass_without_a_trustworthy_record(tmp_path: Path) -> None:
    journal = _sealed(tmp_path, _journal())
    run_dir = Path(journal["extensions"][0]["run_dir"])
    # the journal names no run (the extension removed): cannot be checked
    bare = {k: v for k, v in journal.items() if k != "extensions"}
    v = _verdict(tmp_path, bare)
    assert v.returncode == 2 and "VERDICT: UNVERIFIED" in v.stdout and "names no chaosext run" in v.stdout
    # a run directory others may write is not a record to trust
    os.chmod(run_dir, 0o755)
    v = _verdict(tmp_path, journal)
    assert v.returncode == 2 and "open to others" in v.stdout
    os.chmod(run_dir, 0o700)
    # the record itself edited to match an edited journal: its seal no longer matches
    data = json.loads((run_dir / "run.json").read_text())
    data["journal_record"]["view"]["status"] = "failed"
    (run_dir / "run.json").write_text(json.dumps(data))
    v = _verdict(tmp_path, journal)
    assert v.returncode == 1 and "was altered (its seal does not match)" in v.stdout
    # --run-dir points at another run's record: no match either
    (tmp_path / "other").mkdir()
    other_journal = _sealed(tmp_path / "other", _journal(), run_id="0badc0de")
    assert _verdict(tmp_path, other_journal).returncode == 0
    v = _verdict(tmp_path, journal, "--run-dir", other_journal["extensions"][0]["run_dir"])
    assert v.returncode == 1 and f"the journal names run {RUN_ID}" in v.stdout and "is run 0badc0de" in v.stdout


def test_the_exit_codes_are_the_documented_ones() -> None:
    assert EXIT_CODES == {"PASS": 0, "FAIL": 1, "UNREADABLE": 2, "UNVERIFIED": 2, "NOT RUN": 3, "DRY RUN": 4,
                          "NOT EXERCISED": 5, "INCOMPLETE": 6}


def test_a_failing_error_rate_check_shows_its_top_statuses_services_and_tenants(tmp_path: Path) -> None:
    journal = _journal()
    checks = journal["run"][-1]["output"]["checks"]
    checks["server-error-rate-below-max"] = {
        "ok": False, "error_rate": 0.2, "requests": 1000, "errors": 200, "note": "",
        "top_errors": [{"status": "401", "service": "vuln", "tenant": "t02", "errors": 150},
                       {"status": "503", "service": "policy", "tenant": "t01", "errors": 50}]}
    journal["run"][-1]["output"].update(ok=False, failed=["server-error-rate-below-max"])
    v = _verdict(tmp_path, _sealed(tmp_path, journal))
    assert v.returncode == 1
    assert "top errors (status x service x tenant): 401 vuln t02: 150, 503 policy t01: 50" in v.stdout


LEFT = ("chaosext faults left on local after restore: ['iptables -A CHAOSEXT-ab12cd34 -d 127.0.0.2/32 -p tcp -j DROP']"
        "; remove them with `chaosext restore --all --via iptables --target local`")


def test_a_fault_the_run_did_not_lift_fails_it_even_when_every_check_passed(tmp_path: Path) -> None:
    """The safety control's always-restore at the end failed (rules left): every probe and outage check passed, the
    record is intact, and still the run FAILS, the fault named on top and in the first reason."""
    journal = _sealed(tmp_path, _journal(), restore_error=LEFT)
    entry = journal_record.entry_of(journal)
    assert entry["closed"]["fault_restored"] is False and entry["closed"]["error"].startswith("FaultError: chaosext")
    run = json.loads((Path(entry["run_dir"]) / "run.json").read_text())
    assert run["closed"]["fault_restored"] is False  # the record the control keeps (the next run's cool-down reads it)
    assert run["journal_record"]["view"]["closed"] == entry["closed"]  # and sealed with the journal's view
    v = _verdict(tmp_path, journal, "--json")
    out = json.loads(v.stdout)
    assert v.returncode == 1 and out["verdict"] == "FAIL" and out["record"]["status"] == "verified", out
    assert out["reasons"][0].startswith(f"THE FAULT WAS NOT LIFTED: the safety control's restore at the end of run "
                                        f"{RUN_ID} failed (FaultError: chaosext faults left on local")
    assert f"`chaosext restore --run-id {RUN_ID}`" in out["reasons"][0]
    screen = _verdict(tmp_path, journal).stdout
    assert "LEFT BEHIND (the safety control could not undo this run's changes: the run FAILS):" in screen
    assert "run closed: fault lifted" not in screen


def test_a_journal_edited_to_say_the_fault_was_lifted_disagrees_with_its_record(tmp_path: Path) -> None:
    journal = _sealed(tmp_path, _journal(), restore_error=LEFT)
    edited = copy.deepcopy(journal)
    journal_record.entry_of(edited)["closed"].update(fault_restored=True, error="")
    assert classify(edited)[0] == "PASS"  # the journal alone would pass: the seal covers how the run was closed
    out = json.loads(_verdict(tmp_path, edited, "--json").stdout)
    assert out["verdict"] == "FAIL" and out["record"]["status"] == "mismatch"
    assert any("closed.fault_restored: journal true, run record false" in r for r in out["reasons"]), out["reasons"]


def test_a_clean_close_is_shown_and_a_k6_left_running_fails(tmp_path: Path) -> None:
    v = _verdict(tmp_path, _sealed(tmp_path, _journal()))
    assert v.returncode == 0 and "run closed: fault lifted, k6 stopped" in v.stdout
    (tmp_path / "k6").mkdir()
    out = json.loads(_verdict(tmp_path, _sealed(tmp_path / "k6", _journal(), k6_error="k6 did not stop"),
                              "--json").stdout)
    assert out["verdict"] == "FAIL" and out["reasons"][0].startswith(f"the k6 load of run {RUN_ID} was not stopped")


def test_an_interrupted_run_whose_control_lifted_the_fault_says_so(tmp_path: Path) -> None:
    """Ctrl-C in the outage: the method's restore never ran; the safety control lifted the fault when the run
    closed. The verdict fails the run (interrupted) but does not claim the restore failed."""
    journal = _journal()
    journal["status"] = "interrupted"
    journal["run"] = journal["run"][:2]
    journal["steady_states"]["after"] = None
    out = json.loads(_verdict(tmp_path, _sealed(tmp_path, journal), "--json").stdout)
    assert out["verdict"] == "FAIL" and "run status is 'interrupted', not 'completed'" in out["reasons"]
    assert "this run's restore did not succeed" not in out["reasons"]
    assert ("the method's restore-jwks-egress did not run; the safety control lifted the fault when the run closed"
            in out["reasons"]), out["reasons"]


def test_a_fault_left_after_an_unhealthy_baseline_is_a_failure_not_not_run(tmp_path: Path) -> None:
    before = _live("baseline")
    before["probes"][0] = _probe("jwks-caches-fresh", {"ok": False, "phase": "baseline", "not_fresh": ["vuln"]})
    before["steady_state_met"] = False
    out = json.loads(_verdict(tmp_path, _sealed(tmp_path, _journal(before=before), restore_error=LEFT),
                              "--json").stdout)
    assert out["verdict"] == "FAIL" and out["reasons"][0].startswith("THE FAULT WAS NOT LIFTED")


#: an outage check and a recovery probe that could not be judged on the target, shaped as chaosext.outage.checks
#: (alerts_match_cache_state with expiry_rules_gap) and chaosext.outage.hypothesis (jwks_caches_fresh) return them
ALERTS_GAP = {"phase": "outage", "ok": True, "not_judged": True, "expected": ["JwksKeysExpired"],
              "gap": "Prometheus at http://10.77.0.4:9090 has no alerting rule named JwksKeysExpired (EXPIRY_ALERTS): "
                     "'it did not fire' would prove nothing; load the rules or fix EXPIRY_ALERTS"}
CACHE_GAP = {"phase": "recovery", "ok": True, "not_recovered": [], "states": {"orders": "unknown"},
             "source": ["none"], "not_judged": True,
             "unknown": {"orders": "no cache series for orders (METRIC_CACHE_* by service)"},
             "gap": "the cache state of orders cannot be read: no cache series for orders (METRIC_CACHE_* by service)"}


def _with_gaps(journal: dict[str, Any]) -> dict[str, Any]:
    journal["run"][-1]["output"]["checks"]["alerts-fire-iff-cache-expired"] = ALERTS_GAP
    journal["run"][-1]["output"]["not_judged"] = ["alerts-fire-iff-cache-expired"]
    journal["steady_states"]["after"]["probes"][0] = _probe("jwks-caches-fresh", CACHE_GAP)
    return journal


def test_checks_not_judged_on_this_target_are_incomplete_never_a_pass(tmp_path: Path) -> None:
    """Every check that could be judged passed; two could not (no alert rules loaded, a service without a cache
    signal): INCOMPLETE, exit 6, every gap listed with its check, its phase and what to configure."""
    journal = _sealed(tmp_path, _with_gaps(_journal()))
    v = _verdict(tmp_path, journal, "--json")
    out = json.loads(v.stdout)
    assert (v.returncode, out["verdict"], out["pass"], out["record"]["status"]) == (6, "INCOMPLETE", False,
                                                                                   "verified"), out
    assert out["reasons"] == [
        "not judged: alerts-fire-iff-cache-expired (outage): Prometheus at http://10.77.0.4:9090 has no alerting "
        "rule named JwksKeysExpired (EXPIRY_ALERTS): 'it did not fire' would prove nothing; load the rules or fix "
        "EXPIRY_ALERTS",
        "not judged: jwks-caches-fresh (recovery): the cache state of orders cannot be read: no cache series for "
        "orders (METRIC_CACHE_* by service)"]
    assert out["gaps"] == [r.removeprefix("not judged: ") for r in out["reasons"]]
    screen = _verdict(tmp_path, journal).stdout
    assert "VERDICT: INCOMPLETE (exit 6)" in screen and "VERDICT: PASS" not in screen
    assert "OUTAGE: held (every check, even after the first failure; 1 not judged: GAP, see the verdict)" in screen
    assert "RECOVERY (after the restore): held (1 not judged: GAP, see the verdict)" in screen
    rows = [line.split() for line in screen.splitlines()]
    assert ["alerts-fire-iff-cache-expired", "GAP"] in [r[:2] for r in rows]
    assert ["jwks-caches-fresh", "GAP"] in [r[:2] for r in rows]


def test_gaps_are_listed_after_what_failed_and_a_security_finding_still_wins(tmp_path: Path) -> None:
    kind, reasons = classify(_with_gaps(_journal(no_fail_open=_forged([HOLE]))))
    assert kind == "FAIL" and reasons[0].startswith("SECURITY:")
    assert [r for r in reasons if r.startswith("not judged: ")] == reasons[-2:] and len(reasons) > 2
    kind, reasons = classify(_with_gaps(_journal(affected=())))
    assert kind == "NOT EXERCISED" and reasons[0].startswith("NOT EXERCISED") and len(reasons) == 3


def test_a_dry_run_is_never_a_pass_even_without_its_dry_mark(tmp_path: Path) -> None:
    """The probes of `chaos run --dry actions` judge nothing and say so (chaosext.outage.hypothesis.dry): the verdict
    is DRY RUN; the same journal without Chaos Toolkit's `dry` mark is INCOMPLETE, not PASS."""
    from chaosext.core.config import load_config
    from chaosext.outage.hypothesis import dry
    from chaosext.run.context import RunContext
    from tests.runutil import settings

    skipped = dry(RunContext(load_config(settings(tmp_path)), None, "actions"))
    assert skipped is not None and skipped["ok"] is True
    journal = _journal()
    for when in ("before", "after"):
        journal["steady_states"][when]["probes"] = [
            {**p, "output": {**skipped}, "tolerance_met": True} for p in journal["steady_states"][when]["probes"]]
    journal["experiment"]["dry"] = "actions"
    assert classify(journal)[0] == "DRY RUN"
    del journal["experiment"]["dry"]
    kind, reasons = classify(journal)
    assert kind == "INCOMPLETE" and len(reasons) == 6
    assert reasons[0] == ("not judged: jwks-caches-fresh (baseline): dry run (actions): nothing was started or "
                          "injected, so nothing is judged")


def test_the_exit_codes_are_distinct_where_a_gate_must_tell_them_apart() -> None:
    assert EXIT_CODES["INCOMPLETE"] == 6 and EXIT_CODES["FAIL"] == 1
    assert len({EXIT_CODES[k] for k in ("PASS", "FAIL", "NOT RUN", "DRY RUN", "NOT EXERCISED", "INCOMPLETE")}) == 6


def test_the_reports_banner_is_the_verdicts_an_edited_journal_is_no_green_report(tmp_path: Path) -> None:
    """`chaosext report` shows the verdict command's judgement, record check included: the journal of a failed run
    edited to read as a pass gets a FAIL banner, and one copied away from its record an UNVERIFIED one."""
    from chaosext.report.cli import build_report

    journal = _sealed(tmp_path, _journal(no_fail_open=_forged([HOLE])))
    judge_out = journal["run"][-1]["output"]
    judge_out["checks"]["no-fail-open"] = {"phase": "outage", **_forged()}
    judge_out["ok"], judge_out["failed"] = True, []
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(journal))
    html, shown, _ = build_report(str(path))
    assert shown["summary"] == "FAIL" and 'class="verdict fail"' in html
    assert "DISAGREES WITH ITS RUN" in html
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({k: v for k, v in _sealed(tmp_path / "b", _journal(), run_id="0badc0de").items()
                                if k != "extensions"}))
    html, shown, _ = build_report(str(bare))
    assert shown["summary"] == "UNVERIFIED" and 'class="verdict pass"' not in html
