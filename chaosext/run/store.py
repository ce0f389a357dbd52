"""Files of one run's directory: ``<run base>/<run id>/`` (0700), each file JSON, 0600, replaced atomically.

The only code that creates a run directory or writes one of its files; the run record (``run.json``,
:mod:`chaosext.run.record`) and the outage notebook (``outage.json``, ``chaosext.outage.notebook``) are written through
it. A file that is missing or unreadable reads as ``{}`` (an older or half-written run is judged as "nothing
recorded", never as a pass).
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

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
    directory = run_directory(run_base, run_id)
    Path(run_base).mkdir(parents=True, exist_ok=True)
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    return directory.resolve()


def read_json(run_dir: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """The JSON object in ``<run_dir>/<name>``; ``{}`` when missing or unreadable."""
    try:
        doc = json.loads((Path(run_dir) / name).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def write_json(run_dir: str | os.PathLike[str], name: str, doc: dict[str, Any]) -> None:
    """Write ``<run_dir>/<name>`` atomically (temp file + rename), 0600, in a 0700 directory."""
    path = Path(run_dir) / name
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)
