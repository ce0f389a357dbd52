"""The run file: what one experiment run recorded, shared by the watch step, the probes and the safety control.

``<run_dir>/run.json`` (run_dir = ``$CHAOSEXT_RUN_DIR``, else ``<lab state dir>/run``, else ``.chaosext-run``)::

    {"run_id": "ab12cd34", "created_at": 1764450000.0,
     "outage": {"start": 1764450010.2, "end": 1764450030.4, "aborted": false, "reason": ""},
     "observations": [{"t": ..., "elapsed": ..., "error_rate": ..., "services": {"policy": {...}}}],
     "alerts_seen": {"prometheus": {"name": first_seen_unix}, "alertmanager": {...}},
     "judgments": {"server_error_rate": {...}, ...}}       # judge_outage: every outage check, run once

No ``outage`` key = no fault yet: the outage-behaviour probes are then vacuously true. The safety control starts a
fresh file before the steady-state hypothesis of every run.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

__all__ = ["run_path", "load_run", "save_run", "new_run", "update_run", "outage_window", "judged"]


def run_path(run_dir: str) -> Path:
    """Path of the run file in ``run_dir``."""
    return Path(run_dir) / "run.json"


def load_run(run_dir: str) -> dict[str, Any]:
    """The run file's content ({} when there is none or it is unreadable)."""
    try:
        return json.loads(run_path(run_dir).read_text())
    except (OSError, ValueError):
        return {}


def save_run(run_dir: str, data: dict[str, Any]) -> None:
    """Write the run file atomically (temp file + rename)."""
    path = run_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def new_run(run_dir: str) -> dict[str, Any]:
    """Start a fresh run file (forgets any previous run's outage window) and return it."""
    data = {"run_id": secrets.token_hex(4), "created_at": time.time()}
    save_run(run_dir, data)
    return data


def update_run(run_dir: str, **changes: Any) -> dict[str, Any]:
    """Merge top-level keys into the run file and return the new content."""
    data = load_run(run_dir)
    data.update(changes)
    save_run(run_dir, data)
    return data


def outage_window(run: dict[str, Any]) -> tuple[float, float] | None:
    """(start, end) unix seconds of the recorded outage; end is now while it is still running; None before it."""
    outage = run.get("outage") or {}
    if not outage.get("start"):
        return None
    return float(outage["start"]), float(outage.get("end") or time.time())


def judged(run: dict[str, Any], func: str) -> dict[str, Any] | None:
    """The result ``judge_outage`` recorded for probe function ``func`` after the outage (None if not judged)."""
    outage = run.get("outage") or {}
    if not outage.get("end"):
        return None
    return (run.get("judgments") or {}).get(func)
