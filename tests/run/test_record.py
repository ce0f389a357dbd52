"""The run file through its model: what is written is read back, older or broken files still load, writes are
atomic and private, and the phase / window / judged answers the probes rely on."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from chaosext.core.runfile import (
    Baseline,
    K6Snapshot,
    Observation,
    Run,
    ServiceObservation,
    edit_run,
    load_run,
    new_run,
    run_path,
    save_run,
)


def _a_whole_run(run: Run) -> Run:
    run.baseline = Baseline(judged_at=90.0, window_seconds=60, requests=500.0)
    run.begin_outage(100.0, "ab12cd34", K6Snapshot(t=100.0, http_reqs=1000.0, http_req_failed_rate=0.0))
    run.add_tick(Observation(t=100.5, elapsed=0.5, recent_error_rate=0.0, requests=10, recent_requests=10,
                             fault_holds=True, services={"policy": ServiceObservation(
                                 state="stale", age=4.0, valid={"t01": 200},
                                 forged={"tried": 2, "refused": 2, "accepted": 0, "inconclusive": 0})}),
                 forgery={"ok": True, "tried": 2}, alerts_prometheus={"jwks_cache_miss_spike"})
    run.add_tick(Observation(t=105.5, elapsed=5.5, fault_holds=True), alerts_prometheus={"jwks_cache_miss_spike"},
                 alerts_alertmanager={"jwks_cache_miss_spike"})
    run.end_outage(110.0, "", K6Snapshot(t=110.0, http_reqs=2000.0, http_req_failed_rate=0.001))
    return run


def test_what_is_written_reads_back_the_same(tmp_path: Path) -> None:
    run = new_run(str(tmp_path), "ab12cd34")
    directory = tmp_path / "ab12cd34"
    with edit_run(str(directory)) as r:
        _a_whole_run(r)
    back = load_run(str(directory))
    assert back == _a_whole_run(Run(run_id="ab12cd34", created_at=run.created_at, pid=os.getpid(),
                                    run_dir=str(directory.resolve())))
    assert Run.from_json(back.to_json()) == back
    assert back.phase == "recovery" and back.outage_window() == (100.0, 110.0)
    assert back.alerts_seen.prometheus == {"jwks_cache_miss_spike": 100.5}  # first seen, not last
    assert back.alerts_seen.alertmanager == {"jwks_cache_miss_spike": 105.5}
    assert back.observations[0].services["policy"].valid == {"t01": 200} and len(back.forgery_ticks) == 1
    assert back.outage is not None and back.outage.k6_end is not None and back.outage.k6_end.http_reqs == 2000.0


def test_the_json_keeps_the_documented_keys(tmp_path: Path) -> None:
    """report, verdict and people read run.json: the keys and their shape stay what docs/experiment.md says."""
    save_run(str(tmp_path), _a_whole_run(Run(run_id="ab12cd34")))
    doc = json.loads(run_path(str(tmp_path)).read_text())
    assert doc["outage"]["start"] == 100.0 and doc["outage"]["end"] == 110.0 and doc["outage"]["aborted"] is False
    assert doc["outage"]["k6"]["start"]["http_reqs"] == 1000.0
    assert doc["observations"][0]["fault_holds"] is True
    assert doc["observations"][0]["services"]["policy"]["state"] == "stale"
    assert doc["alerts_seen"]["prometheus"] == {"jwks_cache_miss_spike": 100.5}
    assert doc["forgery_ticks"] == [{"ok": True, "tried": 2}] and doc["judgments"] == {}


def test_files_written_by_an_older_chaosext_or_broken_ones_still_load(tmp_path: Path) -> None:
    old = {"run_id": "ab12cd34", "outage": {"start": 100.0, "end": None, "aborted": False, "reason": ""},
           "observations": [{"t": 101.0, "elapsed": 1.0, "jwks_blocked": True,
                             "services": {"vuln": {"state": "expired", "valid": {"t01": 401}}}}],
           "fault": {"run_id": "ab12cd34", "applied": True}}
    run_path(str(tmp_path)).write_text(json.dumps(old))
    run = load_run(str(tmp_path))
    assert run.phase == "outage" and run.outage_window(now=150.0) == (100.0, 150.0)
    assert run.observations[0].fault_holds is None and run.observations[0].services["vuln"].age is None
    assert run.fault is not None and run.fault.applied
    run_path(str(tmp_path)).write_text('{"observations": "nonsense", "outage": 7, "alerts_seen": []}')
    assert load_run(str(tmp_path)) == Run()
    run_path(str(tmp_path)).write_text("{torn")
    assert load_run(str(tmp_path)) == Run()
    assert load_run(str(tmp_path / "missing")) == Run()


def test_phase_window_and_judged_follow_the_outage() -> None:
    run = Run()
    assert run.phase == "baseline" and run.outage_window() is None and run.recovery_deadline(60) == 0.0
    run.begin_outage(100.0, "ab12cd34", None)
    run.judgments.results["server_error_rate"] = {"ok": True}
    assert run.phase == "outage" and run.judged("server_error_rate") is None  # not while the outage runs
    assert run.recovery_start(now=123.0) == 123.0
    run.end_outage(130.0, "abort guard: error rate above 50% for 30s", None)
    assert run.outage is not None and run.outage.aborted and run.recovery_deadline(60) == 190.0
    assert run.judged("server_error_rate") == {"ok": True} and run.judged("no_fail_open") is None
    assert run.recovery_start() == 130.0
    run.recovered_at = 133.0
    assert run.recovery_start() == 133.0


def test_a_new_outage_forgets_the_previous_one() -> None:
    run = _a_whole_run(Run())
    run.judgments.results["outage_held"] = {"ok": True}
    run.begin_outage(200.0, "ab12cd34", None)
    assert run.observations == [] and run.forgery_ticks == [] and run.judgments.results == {}
    assert run.alerts_seen.prometheus == {} and run.phase == "outage"


def test_ending_an_outage_that_never_began_is_a_bug() -> None:
    with pytest.raises(ValueError, match="before begin_outage"):
        Run().end_outage(1.0, "", None)


def test_writes_are_atomic_private_and_skipped_when_the_edit_fails(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        run = new_run(str(tmp_path / "runs"), "ab12cd34")
    finally:
        os.umask(old_umask)
    directory = Path(run.run_dir)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(run_path(str(directory)).stat().st_mode) == 0o600
    with pytest.raises(RuntimeError), edit_run(str(directory)) as r:
        r.recovered_at = 1.0
        raise RuntimeError("the change failed half-way")
    assert load_run(str(directory)).recovered_at is None
    with edit_run(str(directory)) as r:
        r.recovered_at = 2.0
    assert load_run(str(directory)).recovered_at == 2.0
    assert sorted(p.name for p in directory.iterdir()) == ["run.json"]  # no temp file left behind
    assert stat.S_IMODE(run_path(str(directory)).stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):  # a run id is never reused
        new_run(str(tmp_path / "runs"), "ab12cd34")
