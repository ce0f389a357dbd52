"""The outage notebook (outage.json) through its model: the watch's ticks, the alerts first seen, the forgery judge's
rounds and the judgments read back as written; older or broken files load empty; writes are private and skipped when
the edit fails."""
from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from chaosext.outage.notebook import (
    NOTEBOOK_FILE,
    Judgments,
    Notebook,
    Observation,
    ServiceObservation,
    edit_notebook,
    load_notebook,
    save_notebook,
)


def _a_watched_outage() -> Notebook:
    nb = Notebook()
    nb.add_tick(Observation(t=100.5, elapsed=0.5, recent_error_rate=0.0, requests=10, recent_requests=10,
                            fault_holds=True, services={"policy": ServiceObservation(
                                state="stale", age=4.0, valid={"t01": 200},
                                forged={"tried": 2, "refused": 2, "accepted": 0, "inconclusive": 0})}),
                forgery={"ok": True, "tried": 2}, alerts_prometheus={"jwks_cache_miss_spike"})
    nb.add_tick(Observation(t=105.5, elapsed=5.5, fault_holds=True, services={
        "policy": ServiceObservation(state="expired", valid={"t01": 401})}),
        alerts_prometheus={"jwks_cache_miss_spike"}, alerts_alertmanager={"jwks_cache_miss_spike"})
    nb.judgments = Judgments({"outage_held": {"ok": True}})
    return nb


def test_what_is_written_reads_back_the_same(tmp_path: Path) -> None:
    save_notebook(tmp_path, _a_watched_outage())
    back = load_notebook(tmp_path)
    assert back == _a_watched_outage() and Notebook.from_json(back.to_json()) == back
    assert back.alerts_seen.prometheus == {"jwks_cache_miss_spike": 100.5}  # first seen, not last
    assert back.alerts_seen.alertmanager == {"jwks_cache_miss_spike": 105.5}
    assert back.observations[0].services["policy"].valid == {"t01": 200} and len(back.forgery_ticks) == 1
    assert back.judgments.of("outage_held") == {"ok": True} and back.judgments.of("no_fail_open") is None


def test_the_json_keeps_the_documented_keys(tmp_path: Path) -> None:
    save_notebook(tmp_path, _a_watched_outage())
    doc = json.loads((tmp_path / NOTEBOOK_FILE).read_text())
    assert doc["observations"][0]["fault_holds"] is True
    assert doc["observations"][0]["services"]["policy"]["state"] == "stale"
    assert doc["observations"][0]["services"]["policy"]["forged"]["refused"] == 2
    assert doc["alerts_seen"]["prometheus"] == {"jwks_cache_miss_spike": 100.5}
    assert doc["forgery_ticks"] == [{"ok": True, "tried": 2}] and doc["judgments"] == {"outage_held": {"ok": True}}
    assert stat.S_IMODE((tmp_path / NOTEBOOK_FILE).stat().st_mode) == 0o600


def test_the_states_each_service_was_seen_in() -> None:
    nb = _a_watched_outage()
    assert nb.services_seen("stale") == {"policy"} and nb.services_seen("expired") == {"policy"}
    assert nb.first_seen("expired") == {"policy": 105.5} and nb.first_seen("fresh") == {}


def test_files_written_by_an_older_chaosext_or_broken_ones_still_load(tmp_path: Path) -> None:
    (tmp_path / NOTEBOOK_FILE).write_text(json.dumps({"observations": [
        {"t": 101.0, "elapsed": 1.0, "jwks_blocked": True, "services": {"vuln": {"state": "expired",
                                                                               "valid": {"t01": 401}}}}]}))
    nb = load_notebook(tmp_path)
    assert nb.observations[0].fault_holds is None and nb.observations[0].services["vuln"].age is None
    (tmp_path / NOTEBOOK_FILE).write_text('{"observations": "nonsense", "alerts_seen": [], "judgments": 3}')
    assert load_notebook(tmp_path) == Notebook()
    (tmp_path / NOTEBOOK_FILE).write_text("{torn")
    assert load_notebook(tmp_path) == Notebook()
    assert load_notebook(tmp_path / "missing") == Notebook() and load_notebook(None) == Notebook()


def test_an_edit_that_fails_writes_nothing_and_outside_a_run_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), edit_notebook(tmp_path) as nb:
        nb.forgery_ticks.append({"ok": False})
        raise RuntimeError("half-way")
    assert not (tmp_path / NOTEBOOK_FILE).exists()
    with edit_notebook(tmp_path) as nb:
        nb.forgery_ticks.append({"ok": False})
    assert load_notebook(tmp_path).forgery_ticks == [{"ok": False}]
    with edit_notebook(None) as nb:
        nb.forgery_ticks.append({"ok": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == [NOTEBOOK_FILE]
