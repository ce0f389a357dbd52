"""The lab's state directory and its ``state.json`` (schema in docs/architecture.md): the documented contract
between the lab (which writes it) and the extension (which reads it to find a running lab).

``load_state`` is the Python API the experiment defaults use to find a running lab.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from chaosext.core.errors import ConfigError

__all__ = [
    "DEFAULT_STATE_DIR",
    "STATE_DIR_ENV",
    "STATE_FILE",
    "STATE_VERSION",
    "StateError",
    "resolve_state_dir",
    "load_state",
    "save_state",
    "clear_state",
]

DEFAULT_STATE_DIR = ".chaosext-lab"
STATE_DIR_ENV = "CHAOSEXT_LAB_DIR"
STATE_FILE = "state.json"
STATE_VERSION = 1


class StateError(ConfigError):
    """state.json exists but cannot be used; the message says what to do."""


def resolve_state_dir(state_dir: str | os.PathLike[str] | None = None) -> Path:
    """Absolute state directory: the argument, else ``$CHAOSEXT_LAB_DIR``, else ``./.chaosext-lab``."""
    chosen = state_dir or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR
    return Path(chosen).expanduser().absolute()


def load_state(state_dir: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """Read ``<state_dir>/state.json``.

    Returns None when there is no lab state there; raises StateError when the file is unreadable, not JSON, or of
    another schema version (the message names the file and tells the user how to clear it).
    """
    path = resolve_state_dir(state_dir) / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc
    fix = (f"run `chaosext lab down --state-dir {path.parent}` to stop anything left from that lab and clear the "
           f"state, then `chaosext lab up` again")
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(f"{path} is corrupt ({exc}); {fix}") from exc
    if not isinstance(state, dict) or not isinstance(state.get("components"), dict):
        raise StateError(f"{path} is not a chaosext lab state file (no 'components' object); {fix}")
    for name, comp in state["components"].items():
        if not isinstance(comp, dict) or not isinstance(comp.get("pid"), int):
            raise StateError(f"{path}: component {name!r} has no integer 'pid'; {fix}")
    if state.get("version") != STATE_VERSION:
        raise StateError(f"{path} has schema version {state.get('version')!r}, this chaosext writes "
                         f"{STATE_VERSION}; {fix}")
    return state


def save_state(state_dir: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write state.json atomically (temp file + rename), so a reader never sees half a file."""
    directory = resolve_state_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".state.", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state, fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.replace(tmp, directory / STATE_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return directory / STATE_FILE


def clear_state(state_dir: str | os.PathLike[str]) -> None:
    """Remove state.json (logs, audit file and TSDB stay for inspection)."""
    (resolve_state_dir(state_dir) / STATE_FILE).unlink(missing_ok=True)
