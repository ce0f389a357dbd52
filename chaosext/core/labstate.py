"""The lab's state directory and its ``state.json`` (schema in docs/architecture.md): the documented contract
between the lab (which writes it) and the extension (which reads it to find a running lab).

``load_state`` is the Python API the experiment defaults use to find a running lab. The directory and the file are
handled root-safe (:mod:`chaosext.core.safefs`): a state file another user could have written is refused, never
trusted (it decides what counts as the lab, :mod:`chaosext.core.labid`). Default directory: ``./.chaosext-lab`` for a
user, ``/var/lib/chaosext/lab`` for root.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from chaosext.core import safefs
from chaosext.core.errors import ConfigError

__all__ = [
    "DEFAULT_STATE_DIR",
    "STATE_DIR_ENV",
    "STATE_FILE",
    "STATE_VERSION",
    "StateError",
    "default_state_dir",
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


def default_state_dir() -> str:
    """``./.chaosext-lab`` for a user, ``/var/lib/chaosext/lab`` for root (:func:`chaosext.core.safefs.default_dir`)."""
    return safefs.default_dir(DEFAULT_STATE_DIR, "lab")


def resolve_state_dir(state_dir: str | os.PathLike[str] | None = None) -> Path:
    """Absolute state directory: the argument, else ``$CHAOSEXT_LAB_DIR``, else :func:`default_state_dir`."""
    chosen = state_dir or os.environ.get(STATE_DIR_ENV) or default_state_dir()
    return Path(chosen).expanduser().absolute()


def load_state(state_dir: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """Read ``<state_dir>/state.json``.

    Returns None when there is no lab state there; raises StateError when the file is unreadable, not JSON, or of
    another schema version (the message names the file and tells the user how to clear it).
    """
    path = resolve_state_dir(state_dir) / STATE_FILE
    try:
        text = safefs.read_text(path)
    except FileNotFoundError:
        return None
    except safefs.UnsafePath as exc:
        raise StateError(f"refusing the lab state {path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
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
    """Write state.json (0600) atomically (temp file + rename), so a reader never sees half a file."""
    path = resolve_state_dir(state_dir) / STATE_FILE
    safefs.write_file(path, json.dumps(state, indent=2, sort_keys=False) + "\n")
    return path


def clear_state(state_dir: str | os.PathLike[str]) -> None:
    """Remove state.json (logs, audit file and TSDB stay for inspection)."""
    safefs.remove(resolve_state_dir(state_dir) / STATE_FILE)
