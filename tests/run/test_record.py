"""The run record (run.json) through its model: what is written is read back, older or broken files still load,
writes are atomic and private, the settings the run was started with are kept, and the phase / window answers the
probes rely on."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from chaosext.run.record import (
    RUN_FILE,
    Baseline,
    FaultInfo,
    K6Info,
    K6Snapshot,
    Run,
    edit_run,
    load_run,
    new_run,
    save_run,
)

CONFIG = {"outage_seconds": 120, "services": {"policy": "http://127.0.0.1:8451"}, "tenants": ["t01", "t02"]}


def _a_whole_run(run: Run) -> Run:
    run.k6 = K6Info(run_id="k6run001", owner_run_id="ab12cd34", pid=4242, address="127.0.0.1:6565", rate=200)
    run.baseline = Baseline(judged_at=90.0, window_seconds=60, requests=500.0)
    run.begin_outage(100.0, "ab12cd34", K6Snapshot(t=100.0, http_reqs=1000.0, http_req_failed_rate=0.0))
    run.end_outage(110.0, "", K6Snapshot(t=110.0, http_reqs=2000.0, http_req_failed_rate=0.001))
    run.recovered_at = 112.0
    return run


def test_what_is_written_reads_back_the_same(tmp_path: Path) -> None:
    run = new_run(str(tmp_path), "ab12cd34", CONFIG)
    directory = tmp_path / "ab12cd34"
    with edit_run(str(directory)) as r:
        _a_whole_run(r)
    back = load_run(str(directory))
    assert back == _a_whole_run(Run(run_id="ab12cd34", created_at=run.created_at, pid=os.getpid(),
                                    run_dir=str(directory.resolve()), config=CONFIG))
    assert Run.from_json(back.to_json()) == back
    assert back.phase == "recovery" and back.outage_window() == (100.0, 110.0)
    assert back.config == CONFIG  # the settings the run was started with, for every later activity
    assert back.outage is not None and back.outage.k6_end is not None and back.outage.k6_end.http_reqs == 2000.0
    assert back.k6 is not None and back.k6.address == "127.0.0.1:6565"


def test_the_json_keeps_the_documented_keys(tmp_path: Path) -> None:
    """report, verdict and people read run.json: the keys and their shape stay what its docstring says."""
    save_run(str(tmp_path), _a_whole_run(Run(run_id="ab12cd34", config=CONFIG)))
    doc = json.loads((tmp_path / RUN_FILE).read_text())
    assert doc["outage"]["start"] == 100.0 and doc["outage"]["end"] == 110.0 and doc["outage"]["aborted"] is False
    assert doc["outage"]["k6"]["start"]["http_reqs"] == 1000.0 and doc["outage"]["fault_run_id"] == "ab12cd34"
    assert doc["baseline"] == {"judged_at": 90.0, "window_seconds": 60, "requests": 500.0}
    assert doc["k6"]["address"] == "127.0.0.1:6565" and doc["fault"] is None and doc["recovered_at"] == 112.0
    assert doc["config"] == CONFIG
    assert "observations" not in doc and "judgments" not in doc  # the outage's notebook is outage.json


def test_files_written_by_an_older_chaosext_or_broken_ones_still_load(tmp_path: Path) -> None:
    old = {"run_id": "ab12cd34", "outage": {"start": 100.0, "end": None, "aborted": False, "reason": ""},
           "observations": [{"t": 101.0, "elapsed": 1.0, "jwks_blocked": True}],
           "fault": {"run_id": "ab12cd34", "applied": True}}
    (tmp_path / RUN_FILE).write_text(json.dumps(old))
    run = load_run(str(tmp_path))
    assert run.phase == "outage" and run.outage_window(now=150.0) == (100.0, 150.0)
    assert run.fault == FaultInfo(applied=True) and run.config == {} and run.k6 is None
    (tmp_path / RUN_FILE).write_text('{"config": "nonsense", "outage": 7, "baseline": []}')
    assert load_run(str(tmp_path)) == Run()
    (tmp_path / RUN_FILE).write_text("{torn")
    assert load_run(str(tmp_path)) == Run()
    assert load_run(str(tmp_path / "missing")) == Run()


def test_phase_window_and_recovery_follow_the_outage() -> None:
    run = Run()
    assert run.phase == "baseline" and run.outage_window() is None and run.recovery_deadline(60) == 0.0
    run.begin_outage(100.0, "ab12cd34", None)
    assert run.phase == "outage" and run.recovery_deadline(60) == 0.0  # no retrying before the restore
    assert run.recovery_start(now=123.0) == 123.0
    run.end_outage(130.0, "abort guard: error rate above 50% for 30s", None)
    assert run.outage is not None and run.outage.aborted and run.recovery_deadline(60) == 190.0
    assert run.recovery_start() == 130.0
    run.recovered_at = 133.0
    assert run.recovery_start() == 133.0


def test_a_new_outage_forgets_the_previous_one() -> None:
    run = _a_whole_run(Run())
    run.begin_outage(200.0, "ab12cd34", None)
    assert run.phase == "outage" and run.recovered_at is None and run.outage is not None
    assert run.outage.end is None and not run.outage.aborted and run.outage.k6_start is None


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
    assert stat.S_IMODE((directory / RUN_FILE).stat().st_mode) == 0o600
    with pytest.raises(RuntimeError), edit_run(str(directory)) as r:
        r.recovered_at = 1.0
        raise RuntimeError("the change failed half-way")
    assert load_run(str(directory)).recovered_at is None
    with edit_run(str(directory)) as r:
        r.recovered_at = 2.0
    assert load_run(str(directory)).recovered_at == 2.0
    assert sorted(p.name for p in directory.iterdir()) == [RUN_FILE]  # no temp file left behind
    assert stat.S_IMODE((directory / RUN_FILE).stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):  # a run id is never reused
        new_run(str(tmp_path / "runs"), "ab12cd34")


def test_a_run_id_never_climbs_out_of_the_run_base(tmp_path: Path) -> None:
    from chaosext.core.errors import ConfigError

    for bad in ("../x", "AB12CD34", "ab12cd3", "ab12cd34/..", ""):
        with pytest.raises(ConfigError, match="not a chaosext run id"):
            new_run(str(tmp_path / "runs"), bad)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()
