"""The run context (chaosext.run.context): the one lookup every activity makes. Inside a run it reads the settings
the safety control resolved once and kept in the run record — a setting handed to a later activity changes nothing —
so ``load_config`` runs once per run; outside a run it resolves them from the configuration each time. The run id
names a directory: a malformed one is refused before any file is read or written."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaosext.core import config
from chaosext.core.config import ExperimentConfig
from chaosext.core.errors import ConfigError
from chaosext.run import context
from chaosext.run.context import create_run, new_run_context, run_context
from chaosext.run.memory import forget
from chaosext.run.record import load_run
from tests.runutil import settings

RUN_ID = "0a1b2c3d"


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every setting comes from the test's configuration, whatever the shell running the tests exports."""
    for key in config.SETTINGS:
        monkeypatch.delenv(key.upper(), raising=False)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every call of ``load_config`` the run context makes (the configuration it was given)."""
    calls: list[Any] = []
    real = config.load_config

    def counting(configuration: Any = None) -> ExperimentConfig:
        calls.append(configuration)
        return real(configuration)

    monkeypatch.setattr(context, "load_config", counting)
    return calls


def start(tmp_path: Path, **values: str) -> dict[str, Any]:
    """What the safety control does: resolve the settings once, create the run keeping them, name the run in the
    configuration Chaos Toolkit hands (as a copy) to every later activity."""
    conf = settings(tmp_path, **values)
    create_run(new_run_context(context.load_config(conf), RUN_ID))
    return {**conf, context.RUN_ID_KEY: RUN_ID}


def test_an_activity_reads_the_settings_the_run_kept(tmp_path: Path) -> None:
    conf = start(tmp_path, outage_seconds="90", service_urls="orders=http://127.0.0.1:9", tenants="a01..a02")
    later = {**conf, "outage_seconds": "5", "service_urls": "other=http://127.0.0.1:1", "tenants": "z99"}
    for given in (conf, later, {k: conf[k] for k in (context.RUN_ID_KEY, context.RUN_BASE_KEY)}):
        ctx = run_context(given)
        assert ctx.cfg.outage_seconds == 90 and ctx.cfg.service_urls == {"orders": "http://127.0.0.1:9"}
        assert ctx.cfg.tenants == ("a01", "a02") and ctx.run_id == RUN_ID and ctx.in_run
    kept = load_run(tmp_path / "runs" / RUN_ID).config
    assert kept["outage_seconds"] == 90 and kept["run_id"] == RUN_ID  # the record holds them, as JSON
    assert run_context(later).cfg == ExperimentConfig.from_json(kept)


def test_an_environment_variable_set_after_the_run_started_changes_nothing(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    conf = start(tmp_path)
    monkeypatch.setenv("OUTAGE_SECONDS", "7")
    assert run_context(conf).cfg.outage_seconds == 300
    assert run_context(settings(tmp_path)).cfg.outage_seconds == 7  # outside a run: resolved now


def test_load_config_runs_once_per_run_and_for_each_call_outside_one(tmp_path: Path, counted: list[Any]) -> None:
    conf = start(tmp_path, outage_seconds="90")
    assert len(counted) == 1  # the control's one resolution
    for _ in range(5):
        run_context(conf)
        run_context({**conf, "outage_seconds": "5"}, {"chaosext": {"token_client_id": "x"}})
    assert len(counted) == 1
    outside = settings(tmp_path, outage_seconds="30")
    assert run_context(outside).cfg.outage_seconds == 30 and not run_context(outside).in_run
    assert len(counted) == 3 and counted[1:] == [outside, outside]
    without_base = {context.RUN_ID_KEY: RUN_ID, "chaosext_lab_dir": str(tmp_path / "nolab")}  # no run base named
    run_context(without_base)
    assert len(counted) == 4


@pytest.mark.parametrize("bad", ["../x", "../../etc", "0A1B2C3D", "0a1b2c3", "0a1b2c3d/..", "x" * 8])
def test_a_malformed_run_id_is_refused_before_any_file_is_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  bad: str) -> None:
    base = tmp_path / "runs"
    hostile = tmp_path / "x"  # where "../x" would lead from the run base
    hostile.mkdir()
    (hostile / "run.json").write_text(json.dumps({"config": {"outage_seconds": 1}}))
    touched: list[Any] = []
    monkeypatch.setattr(context, "load_run", lambda *a: touched.append(a))
    monkeypatch.setattr(context, "new_run", lambda *a: touched.append(a))
    for conf in ({context.RUN_ID_KEY: bad, context.RUN_BASE_KEY: str(base)},
                 {context.RUN_ID_KEY: bad, "chaosext_lab_dir": str(tmp_path / "nolab")}):
        with pytest.raises(ConfigError, match="not a chaosext run id"):
            run_context(conf)
    with pytest.raises(ConfigError, match="not a chaosext run id"):
        new_run_context(ExperimentConfig(run_base=str(base)), bad)
    assert touched == [] and not base.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_the_context_of_a_run_names_its_directory_heartbeat_and_memory(tmp_path: Path) -> None:
    conf = start(tmp_path)
    ctx = run_context(conf, {"chaosext": {"prometheus_bearer_token": "t"}})
    assert ctx.run_dir == tmp_path / "runs" / RUN_ID and ctx.heartbeat_file == str(ctx.run_dir / "heartbeat")
    assert ctx.secrets == {"chaosext": {"prometheus_bearer_token": "t"}}  # carried, never kept in the record
    assert "prometheus_bearer_token" not in (ctx.run_dir / "run.json").read_text()
    assert run_context(ctx.configuration()).cfg == ctx.cfg  # another entry point called directly: the same run
    assert run_context(conf).memory is ctx.memory  # one run, one memory in this process
    assert run_context({**conf, "chaosext_dry_run": "actions"}).dry_run == "actions"
    with ctx.edit() as run:
        run.recovered_at = 12.0
    assert ctx.record().recovered_at == 12.0
    forget(RUN_ID)
    with pytest.raises(FileExistsError):  # a run is created once
        create_run(ctx)


def test_outside_a_run_there_is_no_record_and_nothing_is_written(tmp_path: Path) -> None:
    ctx = run_context(settings(tmp_path))
    assert (ctx.run_id, ctx.run_dir, ctx.heartbeat_file, ctx.in_run) == ("", None, "", False)
    with ctx.edit() as run:
        run.recovered_at = 1.0
    assert ctx.record().recovered_at is None and not (tmp_path / "runs").exists()
