"""The run file: what one experiment run recorded, shared by the watch step, the probes and the safety control.

Every run has its own directory ``<run base>/<run id>/`` (mode 0700; run base = ``$CHAOSEXT_RUN_DIR``, else
``<lab state dir>/run``, else ``.chaosext-run``) holding ``run.json`` (mode 0600)::

    {"run_id": "ab12cd34", "created_at": 1764450000.0, "pid": 1234,
     "k6": {"run_id": "...", ...},                          # the run's own k6 (started by the safety control)
     "baseline": {"start": ..., "end": ...},                 # the live baseline window before the fault
     "fault": {"run_id": "ab12cd34", "applied": true, ...},  # what block_jwks_egress did
     "outage": {"start": ..., "end": ..., "aborted": false, "reason": "", "restored_by": ""},
     "observations": [{"t": ..., "elapsed": ..., "error_rate": ..., "jwks_reachable": false, "services": {...}}],
     "alerts_seen": {"prometheus": {"name": first_seen_unix}, "alertmanager": {...}},
     "judgments": {"server_error_rate": {...}, ...}}       # judge_outage: every outage check, run once

Tokens are never written here (they stay in the memory of the ``chaos`` process). No ``outage`` key = no fault yet.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["run_path", "load_run", "save_run", "new_run", "update_run", "outage_window", "judged", "phase",
           "run_directory", "new_run_id",
           "recovery_deadline", "retry_until", "not_judged"]


def run_path(run_dir: str) -> Path:
    """Path of the run file in ``run_dir``."""
    return Path(run_dir) / "run.json"


def run_directory(run_base: str, run_id: str) -> Path:
    """``<run base>/<run id>``."""
    return Path(run_base) / run_id


def load_run(run_dir: str) -> dict[str, Any]:
    """The run file's content ({} when there is none or it is unreadable)."""
    try:
        return json.loads(run_path(run_dir).read_text())
    except (OSError, ValueError):
        return {}


def save_run(run_dir: str, data: dict[str, Any]) -> None:
    """Write the run file atomically (temp file + rename), readable by its owner only."""
    path = run_path(run_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def new_run_id() -> str:
    """A fresh run id (8 hex digits)."""
    return secrets.token_hex(4)


def new_run(run_base: str, run_id: str = "") -> dict[str, Any]:
    """Start a new run: its own 0700 directory and run file; returns the run file's content."""
    run_id = run_id or new_run_id()
    directory = run_directory(run_base, run_id)
    Path(run_base).mkdir(parents=True, exist_ok=True)
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    data = {"run_id": run_id, "created_at": time.time(), "pid": os.getpid(), "run_dir": str(directory.resolve())}
    save_run(str(directory), data)
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


def phase(run: dict[str, Any]) -> str:
    """``baseline`` (no outage yet), ``outage`` (running) or ``recovery`` (the outage ended)."""
    outage = run.get("outage") or {}
    if not outage.get("start"):
        return "baseline"
    return "recovery" if outage.get("end") else "outage"


def not_judged(what: str) -> dict[str, Any]:
    """What an outage check returns when this run recorded no outage: never a vacuous pass."""
    return {"phase": "no-outage", "ok": False,
            "error": f"{what} is judged over the outage window, and this run recorded no outage"}


def recovery_deadline(run: dict[str, Any], recovery_seconds: float) -> float:
    """Until when a recovery check may retry: ``recovery_seconds`` after the restore (the outage's end); 0.0 outside
    the recovery phase, so baseline checks run once."""
    if phase(run) != "recovery":
        return 0.0
    return float(run["outage"]["end"]) + recovery_seconds


def retry_until(check: Callable[[], T], done: Callable[[T], bool], deadline: float, interval: float) -> T:
    """Run ``check`` until ``done(result)`` or ``deadline`` (unix seconds) has passed; the last result. Runs once
    when the deadline is already over."""
    while True:
        result = check()
        if done(result) or time.time() >= deadline:
            return result
        time.sleep(interval)


def judged(run: dict[str, Any], func: str) -> dict[str, Any] | None:
    """The result ``judge_outage`` recorded for probe function ``func`` after the outage (None if not judged)."""
    outage = run.get("outage") or {}
    if not outage.get("end"):
        return None
    return (run.get("judgments") or {}).get(func)
