"""Files of one run's directory: ``<run base>/<run id>/`` (0700), each file JSON, 0600, replaced atomically.

The only code that creates a run directory or writes one of its files; the run record (``run.json``,
:mod:`chaosext.run.record`) and the outage notebook (``outage.json``, ``chaosext.outage.notebook``) are written through
it. A file that is missing or unreadable reads as ``{}`` (an older or half-written run is judged as "nothing
recorded", never as a pass).

Root-safe (:mod:`chaosext.core.safefs`): the run base and the run directory must belong to the user chaosext runs as
and be writable by nobody else, all the way up (else ``UnsafePath``); files are written through a temp file with a
random name and read without following a symlink (a file that is a symlink or another user's raises ``UnsafePath``:
never trusted, never read as "nothing recorded"); the run id is checked before it becomes a path.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from chaosext.core import safefs
from chaosext.core.names import RUN_ID_RE, check_run_id

__all__ = ["RUN_ID_RE", "check_run_id", "new_run_id", "run_directory", "make_run_directory", "read_json",
           "write_json"]

def new_run_id() -> str:
    """A fresh run id (8 hex digits)."""
    return secrets.token_hex(4)


def run_directory(run_base: str | os.PathLike[str], run_id: str) -> Path:
    """``<run base>/<run id>`` (the id is checked: it never climbs out of the base)."""
    return Path(run_base) / check_run_id(run_id)


def make_run_directory(run_base: str | os.PathLike[str], run_id: str) -> Path:
    """Create ``<run base>/<run id>`` (mode 0700; it must not exist yet) and return its absolute path."""
    run_id = check_run_id(run_id)
    with safefs.open_dir(run_base, create=True) as base:
        os.mkdir(run_id, 0o700, dir_fd=base.fd)  # FileExistsError: never reuse another run's directory
        base.subdir(run_id).close()  # mode 0700 whatever the umask, and checked
        return Path(base.shown(run_id))


def read_json(run_dir: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """The JSON object in ``<run_dir>/<name>``; ``{}`` when missing or unreadable (UnsafePath when it is not a file of
    ours in a safe directory)."""
    try:
        doc = json.loads(safefs.read_text(Path(run_dir) / name))
    except safefs.UnsafePath:
        raise
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def write_json(run_dir: str | os.PathLike[str], name: str, doc: dict[str, Any]) -> None:
    """Write ``<run_dir>/<name>`` atomically (a temp file with a random name + rename), 0600, in a 0700 directory."""
    safefs.write_file(Path(run_dir) / name, json.dumps(doc, indent=1, sort_keys=True))
