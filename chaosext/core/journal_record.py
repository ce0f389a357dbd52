"""The run's own record of its journal: what ``chaosext verdict`` cross-checks a journal against.

A journal is a file anyone who can write it can edit (flip a judgment to ``ok``). So at the end of every run the
safety control (its after-experiment hook, with the journal Chaos Toolkit is about to write) keeps the journal's
*judged view* in the run file (``run.json``: :func:`judged_view` — status, deviated, every steady-state probe's name,
status, tolerance result and output, every method and rollback activity's name, status and output) with an
HMAC-SHA256 over it, keyed by a secret of that run alone in ``<run dir>/record.key`` (mode 0600 in the 0700 run
directory, both owned by the user who ran chaos: root-private). Before sealing it names the run in the journal, with
how the run was closed (one entry of ``journal["extensions"]``: ``{"name": "chaosext", "run_id", "run_dir",
"closed": {"at", "fault_restored", "error", "k6_stopped"}}``: the control's always-restore at the very end, the truth
when the method's own restore never ran), so the verdict can find the record; ``closed`` is part of the judged view,
so it is sealed too.

The verdict recomputes the view of the journal it is given and compares: equal (and the record's own HMAC right)
= verified; different = the journal disagrees with its run's record, and :func:`differences` says where. Paths the
journal names are hostile: a run directory or key that is a symlink, not owned by this user (or root), or open to
others is not trusted (:func:`private_problem`).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from chaosext.core import safefs

__all__ = ["KEY_FILE", "EXTENSION", "entry_of", "closed_of", "judged_view", "canonical", "new_key", "read_key",
           "seal", "hmac_ok", "differences", "private_problem", "read_private"]

#: the per-run key's file name in the run directory
KEY_FILE = "record.key"
#: the journal extension naming the run (Chaos Toolkit journals carry ``extensions``: [{"name": ...}])
EXTENSION = "chaosext"


def _activity(entry: Any, probe: bool) -> dict[str, Any]:
    entry = entry if isinstance(entry, dict) else {}
    view = {"name": (entry.get("activity") or {}).get("name"), "status": entry.get("status"),
            "output": entry.get("output")}
    if probe:
        view["tolerance_met"] = entry.get("tolerance_met")
    return view


def entry_of(journal: dict[str, Any]) -> dict[str, Any]:
    """The journal's ``chaosext`` extension entry (the last one; {} when it names no chaosext run)."""
    found: dict[str, Any] = {}
    for entry in journal.get("extensions") or []:
        if isinstance(entry, dict) and entry.get("name") == EXTENSION:
            found = entry
    return found


def closed_of(journal: dict[str, Any]) -> dict[str, Any] | None:
    """How the safety control closed the run, as the journal says (``{"at", "fault_restored", "error",
    "k6_stopped"}``); None when the journal does not say."""
    closed = entry_of(journal).get("closed")
    return closed if isinstance(closed, dict) else None


def judged_view(journal: dict[str, Any]) -> dict[str, Any]:
    """What the verdict judges in a journal, and nothing that may differ between the copy in memory and the file
    (timings, tracebacks): normalised through JSON like the written file."""
    states = journal.get("steady_states") or {}
    view = {"status": journal.get("status"), "deviated": journal.get("deviated"), "closed": closed_of(journal),
            "steady_states": {when: None if not isinstance(states.get(when), dict) else {
                "steady_state_met": states[when].get("steady_state_met"),
                "probes": [_activity(p, True) for p in states[when].get("probes") or []]}
                for when in ("before", "after")},
            "run": [_activity(r, False) for r in journal.get("run") or []],
            "rollbacks": [_activity(r, False) for r in journal.get("rollbacks") or []]}
    normalised: dict[str, Any] = json.loads(canonical(view))
    return normalised


def canonical(obj: Any) -> bytes:
    """One byte string per JSON value (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def seal(key: bytes, run_id: str, view: dict[str, Any]) -> str:
    """HMAC-SHA256 (hex) of the run id and the judged view."""
    return hmac.new(key, run_id.encode() + b"\n" + canonical(view), hashlib.sha256).hexdigest()


def hmac_ok(key: bytes, run_id: str, record: dict[str, Any]) -> bool:
    """Whether ``record`` ({"view", "hmac"}) was sealed with ``key`` for ``run_id``."""
    return hmac.compare_digest(seal(key, run_id, record.get("view") or {}), str(record.get("hmac") or ""))


def new_key(run_dir: str | os.PathLike[str]) -> bytes:
    """Create this run's key (32 random bytes) in ``run_dir``, mode 0600, never over an existing file."""
    key = secrets.token_bytes(32)
    with safefs.open_dir(run_dir) as d:  # root-safe: relative to the checked run directory, no link followed
        fd = d.open(KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def private_problem(st: os.stat_result, what: str) -> str:
    """'' when ``st`` (a run directory or file, not followed through a link) is owned by this user or root and
    neither group nor others may read or write it; else why it cannot be trusted."""
    if stat.S_ISLNK(st.st_mode):
        return f"{what} is a symbolic link"
    if st.st_uid not in (0, os.geteuid()):
        return f"{what} belongs to uid {st.st_uid}, not to the user who ran chaos"
    if st.st_mode & 0o077:
        return f"{what} is open to others (mode {stat.S_IMODE(st.st_mode):04o}; the run's files are 0700/0600)"
    return ""


def read_private(path: Path, what: str) -> bytes:
    """The bytes of ``path`` if it and its directory are private (:func:`private_problem`); else PermissionError
    saying why (OSError when it cannot be read at all)."""
    problem = private_problem(os.lstat(path.parent), f"the run directory {path.parent}")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        problem = problem or private_problem(os.fstat(fh.fileno()), str(path))
        if problem:
            raise PermissionError(problem)
        return fh.read()


def read_key(run_dir: str | os.PathLike[str]) -> bytes:
    """This run's key (see :func:`read_private`)."""
    return read_private(Path(run_dir) / KEY_FILE, "the run's key")


def differences(journal_view: Any, recorded: Any, path: str = "", limit: int = 5) -> list[str]:
    """Where the journal's view differs from the recorded one: ``path: journal X, run record Y`` (at most
    ``limit``); activities are named by their name."""
    out: list[str] = []

    def short(value: Any) -> str:
        text = json.dumps(value, sort_keys=True, default=str)
        return text if len(text) <= 60 else text[:59] + "…"

    def walk(a: Any, b: Any, where: str) -> None:
        if len(out) >= limit or a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                name = x.get("name") if isinstance(x, dict) and x.get("name") else i
                walk(x, y, f"{where}[{name}]")
        else:
            out.append(f"{where or '(journal)'}: journal {short(a)}, run record {short(b)}")

    walk(journal_view, recorded, path)
    return out
