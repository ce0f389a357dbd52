"""A run for unit tests, started the way the safety control starts one (``chaosext.run.context``):

    conf = start_run(tmp_path, service_urls="policy=http://127.0.0.1:9")   # settings resolved once, kept in run.json
    ctx = run_context(conf)                                                 # what every activity of the run looks up
    run_dir(conf)                                                           # <run base>/<run id>

The configuration returned is what Chaos Toolkit hands the later activities: the lab directory, the run base and the
run id only; a setting given after the run started changes nothing (the record keeps the settings).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from chaosext.core.config import load_config
from chaosext.run.context import RUN_BASE_KEY, RUN_ID_KEY, create_run, new_run_context

__all__ = ["RUN_ID", "settings", "start_run", "run_dir"]

RUN_ID = "ab12cd34"


def settings(tmp: Path, **values: Any) -> dict[str, Any]:
    """A configuration with no lab (a lab directory that does not exist) and a run base under ``tmp``."""
    return {"chaosext_lab_dir": str(tmp / "nolab"), RUN_BASE_KEY: str(tmp / "runs"), **values}


def start_run(tmp: Path, run_id: str = RUN_ID, **values: Any) -> dict[str, Any]:
    """Create run ``run_id`` with these settings (``load_config`` once, the record keeps them); the configuration
    that names it."""
    conf = settings(tmp, **values)
    create_run(new_run_context(load_config(conf), run_id))
    return {"chaosext_lab_dir": conf["chaosext_lab_dir"], RUN_BASE_KEY: conf[RUN_BASE_KEY], RUN_ID_KEY: run_id}


def run_dir(conf: dict[str, Any]) -> Path:
    """The run directory the configuration names."""
    return Path(conf[RUN_BASE_KEY]) / conf[RUN_ID_KEY]
