"""End to end, what a release gate reads from `chaosext verdict` after a real `chaos run` against a lab (issue 22):

- a JWT hole planted for ONE tenant (lab ``--hole-tenants``) is caught: the forgeries attack every tenant the run
  drives; accepted in the baseline it is a security failure (exit 1, on top), not "not run";
- a service that fails open for one tenant only during the outage is caught by the watch's rotation, and an edited
  journal of that run that reads as a pass is refused because it disagrees with the run's own record;
- a service SIGKILLed mid-outage fails the server-side error-rate check by name (its traffic vanished);
- an outage shorter than the services' JWKS TTL never made a cache stale: NOT EXERCISED (exit 5), never a pass;
- an expiry alert the target's Prometheus has no rule for cannot be judged: INCOMPLETE (exit 6), the gap named with
  its check, never a pass;
- a restore that cannot lift the fault (its rules cannot be deleted) FAILS the run, named on top: the safety
  control's close, sealed with the run's record, says the fault was not lifted.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.experiment.experiment_util import ExperimentRunner, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.slow]


def _verdict_json(journal: dict, tmp: Path) -> tuple[int, dict]:
    path = tmp / "edited-journal.json"
    path.write_text(json.dumps(journal))
    v = subprocess.run([sys.executable, "-m", "chaosext.cli", "verdict", "--json", str(path)], capture_output=True,
                       text=True, timeout=60, check=False)
    return v.returncode, json.loads(v.stdout)


def test_a_hole_for_one_tenant_is_a_security_failure_in_the_baseline(experiment: ExperimentRunner,
                                                                     lab_factory) -> None:
    """alg none accepted for t03 only (the third of the three tenants the run drives): the baseline's forgery round
    catches it; no fault is injected, and the verdict is FAIL (exit 1) with the finding first, not NOT RUN."""
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120, holes=("accept-alg-none",), hole_tenants=("t03",))
    out = experiment.run(lab, OUTAGE_SECONDS="10")
    assert out.verdict_rc == 1, out.verdict_out + out.output[-3000:]
    assert not out.journal.get("run"), "a fault was injected although the baseline failed"
    forged = next(p["output"] for p in out.journal["steady_states"]["before"]["probes"]
                  if p["activity"]["name"] == "forged-tokens-refused")
    assert {a["tenant"] for a in forged["accepted"]} == {"t03"} and forged["classes"]["alg-none"]["accepted"] > 0
    assert forged["coverage"]["attacked"] == forged["coverage"]["tenants"] == 3
    lines = out.verdict_out.splitlines()
    assert lines[3].startswith("SECURITY FINDINGS") and "in the baseline, before the fault" in lines[4]
    verdict_at = next(i for i, line in enumerate(lines) if line.startswith("VERDICT:"))
    assert lines[verdict_at] == "VERDICT: FAIL (exit 1)" and lines[verdict_at + 1].startswith("  - SECURITY:")
    assert "tenant t03" in lines[verdict_at + 1]


def test_failing_open_for_one_tenant_in_the_outage_is_caught_and_an_edited_journal_is_refused(
        experiment: ExperimentRunner, lab_factory, tmp_path: Path) -> None:
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120, fail_open=True, hole_tenants=("t02",))
    out = experiment.run(lab, OUTAGE_SECONDS="12")
    assert out.verdict_rc == 1, out.verdict_out + out.output[-3000:]
    result = out.check("no-fail-open")
    assert result["accepted_count"] > 0 and {a["tenant"] for a in result["accepted"]} == {"t02"}, result
    assert result["coverage"]["missing"] == [] and result["coverage"]["bound_ticks"] == 3
    assert "SECURITY:" in out.verdict_out.split("VERDICT:", 1)[1].splitlines()[1]
    assert "during the outage" in out.verdict_out and "this outage had" in out.verdict_out

    # the journal edited to read as a pass (every outage check ok): the journal alone would pass; its run's own
    # record (run.json, sealed by the safety control) says otherwise
    edited = copy.deepcopy(out.journal)
    judge = next(r for r in edited["run"] if r["activity"]["name"] == "judge-outage")["output"]
    for res in judge["checks"].values():
        res.update(ok=True, accepted_count=0, accepted=[], why="", metric_backstop={"ok": True})
    judge.update(ok=True, failed=[])
    rc, verdict = _verdict_json(edited, tmp_path)
    assert rc == 1 and verdict["verdict"] == "FAIL" and verdict["record"]["status"] == "mismatch", verdict
    assert verdict["reasons"][0].startswith("THE JOURNAL DISAGREES WITH ITS RUN'S RECORD")
    assert any("no-fail-open" in r for r in verdict["reasons"]), verdict["reasons"]
    # and the untouched journal is verified against the same record
    rc, verdict = _verdict_json(out.journal, tmp_path)
    assert rc == 1 and verdict["record"]["status"] == "verified"


def test_a_service_killed_mid_outage_fails_the_server_side_check_by_name(experiment: ExperimentRunner,
                                                                         lab_factory) -> None:
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120)
    proc, env = experiment.start(lab, OUTAGE_SECONDS="16")

    def ticks() -> int:
        """Watch ticks recorded so far (the outage notebook, outage.json, once the outage started)."""
        try:
            notebook = json.loads(next(Path(env["CHAOSEXT_RUN_DIR"]).glob("*/outage.json")).read_text())
        except (OSError, ValueError, StopIteration):
            return 0
        return len(notebook.get("observations") or [])

    try:
        assert wait_for(lambda: ticks() >= 2, timeout=90), "the outage never started"
        os.kill(lab["components"]["policy"]["pid"], signal.SIGKILL)
        out = experiment.finish(proc, env, lab)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    server = out.check("server-error-rate-below-max")
    assert server["ok"] is False, server
    assert "policy: its request counter was last scraped" in server["note"], server
    assert server["services"]["vuln"] > 0 and server["services"]["notify"] > 0
    assert out.verdict_rc == 1 and "server-error-rate-below-max" in out.verdict_out


def test_an_outage_shorter_than_the_ttl_is_not_exercised(experiment: ExperimentRunner, lab_factory) -> None:
    """The lab's default TTL (300 s) and a 10 s outage: no cache goes stale, nothing fails — and nothing about
    stale keys was proven. Exit 5, named; no deprecation warning for settings nobody set either."""
    lab = lab_factory()
    out = experiment.run(lab, OUTAGE_SECONDS="10")
    assert out.verdict_rc == 5, out.verdict_out + out.output[-3000:]
    assert "VERDICT: NOT EXERCISED (exit 5)" in out.verdict_out and "no service served stale keys" in out.verdict_out
    assert out.check("auth-degraded-audited")["affected"] == []
    assert "deprecated" not in out.output.lower(), [line for line in out.output.splitlines() if "deprecat" in line]


def _undeletable_chains(bindir: Path) -> str:
    """``iptables-restore`` / ``ip6tables-restore`` in ``bindir`` that refuse every transaction deleting a chaosext
    chain (as the kernel refuses to delete a chain something still references) and hand the rest to the real ones;
    returns a PATH with them first."""
    bindir.mkdir()
    for binary in ("iptables-restore", "ip6tables-restore"):
        real = shutil.which(binary)
        assert real, binary
        wrapper = bindir / binary
        wrapper.write_text(f"""#!/bin/sh
input=$(cat)
case "$input" in *"-X CHAOSEXT-"*) echo "{binary}: chain in use (this test keeps it)" >&2; exit 1 ;; esac
printf '%s\\n' "$input" | exec {real} "$@"
""")
        wrapper.chmod(0o755)
    return f"{bindir}:{os.environ.get('PATH', '')}"


def test_a_fault_the_restore_cannot_lift_fails_the_run_naming_it(experiment: ExperimentRunner, lab_factory,
                                                                 tmp_path: Path) -> None:
    """Every restore of the run fails (the method's, the rollback's, the safety control's always-restore): the
    verdict is FAIL (exit 1) with the fault named on top and first among the reasons, read from the run's close that
    the control sealed with the record (verified); the rules really are still there until `chaosext restore --all`."""
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120)
    out = experiment.run(lab, OUTAGE_SECONDS="8", PATH=_undeletable_chains(tmp_path / "sabotage"))
    left = experiment.cleanup()  # what was still there, then `chaosext restore --all` without the wrappers
    assert experiment.cleanup() == []
    assert out.verdict_rc == 1, out.verdict_out + out.output[-3000:]
    entry = next(e for e in out.journal["extensions"] if e.get("name") == "chaosext")
    assert entry["closed"]["fault_restored"] is False and entry["run_id"] in entry["closed"]["error"], entry
    assert out.run["closed"] == entry["closed"] and out.run["journal_record"]["view"]["closed"] == entry["closed"]
    lines = out.verdict_out.splitlines()
    assert "LEFT BEHIND (the safety control could not undo this run's changes: the run FAILS):" in lines
    assert any(line.startswith("run record: verified") for line in lines), out.verdict_out
    verdict_at = next(i for i, line in enumerate(lines) if line.startswith("VERDICT:"))
    assert lines[verdict_at] == "VERDICT: FAIL (exit 1)"
    assert lines[verdict_at + 1].startswith(f"  - THE FAULT WAS NOT LIFTED: the safety control's restore at the end "
                                            f"of run {entry['run_id']} failed")
    assert any(f"CHAOSEXT-{entry['run_id']}" in line for line in left), left


def test_an_expiry_alert_prometheus_has_no_rule_for_is_incomplete_not_pass(experiment: ExperimentRunner,
                                                                            lab_factory) -> None:
    """A healthy lab whose run names an expiry alert its Prometheus never loaded: every other check passes, the
    alerts check is a gap ("it did not fire" would prove nothing), and the verdict is INCOMPLETE (exit 6)."""
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120)
    out = experiment.run(lab, OUTAGE_SECONDS="10", EXPIRY_ALERTS="JwksKeysExpiredNowhere")
    assert out.verdict_rc == 6, out.verdict_out + out.output[-3000:]
    alerts = out.check("alerts-fire-iff-cache-expired")
    assert alerts["not_judged"] is True and "no alerting rule named JwksKeysExpiredNowhere" in alerts["gap"], alerts
    lines = out.verdict_out.splitlines()
    verdict_at = next(i for i, line in enumerate(lines) if line.startswith("VERDICT:"))
    assert lines[verdict_at] == "VERDICT: INCOMPLETE (exit 6)" and "VERDICT: PASS" not in out.verdict_out
    assert lines[verdict_at + 1].startswith("  - not judged: alerts-fire-iff-cache-expired (outage): Prometheus at ")
    assert any(line.split()[:2] == ["alerts-fire-iff-cache-expired", "GAP"] for line in lines), out.verdict_out
