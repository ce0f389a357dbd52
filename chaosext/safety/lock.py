"""One run per target at a time: an exclusive lock per (fault target, JWKS endpoint) on the machine that runs `chaos`.

A lock is a JSON file ``<state dir>/locks/<key>.lock`` (state dir = ``$CHAOSEXT_STATE_DIR``, default
``~/.chaosext/faults``; directory 0700, file 0600) holding the owner's run id, pid, pid start time (so a reused pid
is not mistaken for the owner), ``started`` and ``ends_at`` (UTC epoch seconds). Every read-check-write happens under
``flock`` on ``locks/.guard``, and the file itself is written to a temp name and renamed into place, so of two
processes racing for one key exactly one wins, and a reader never sees half a file.

- A second :func:`acquire` of a held key raises :class:`LockHeld`, whose message names the running run (run id, pid,
  started, ends at) and says what to do; it changes nothing.
- A *stale* lock -- its owner process is gone (dead, or the pid now belongs to another process) AND no fault of its
  run is still recorded in the state dir or watched by a watchdog -- is taken over; :attr:`TargetLock.took_over`
  holds the old holder and :attr:`TargetLock.message` says so (log it). An owner that is gone while its fault is
  still in place is NOT stale: the message says to restore that run first.
- :meth:`TargetLock.release` removes the file only while it still names this run (and this pid).
- Root-safe (:mod:`chaosext.core.safefs`): the locks directory must be ours and writable by nobody else, files are
  opened without following symlinks, temp files get random names, and a lock record is trusted only when it is a file
  of ours whose fields are what :func:`acquire` writes (a run id, integer pid ...); one that is not counts as
  unreadable. A watchdog counts as holding a run's fault only when it runs as the user chaosext runs as, with exactly
  a watchdog's command line (``chaosext.egress.watchdog.find``): another user's look-alike cannot block a takeover.

On Kubernetes the cluster-side form of this lock would be a Lease (or an annotation on the created NetworkPolicy /
EnvoyFilter) naming the run; that is not built yet: the lock guards runs started from the same machine.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosext.core import ids, safefs
from chaosext.core.errors import ChaosextError, ConfigError
from chaosext.core.procs import proc_start_time, process_alive
from chaosext.egress import watchdog
from chaosext.egress.base import load_records, parse_jwks_url, state_dir

__all__ = ["lock_key", "acquire", "read", "locks_dir", "TargetLock", "LockHeld"]

logger = logging.getLogger("chaostoolkit")


class LockHeld(ChaosextError, RuntimeError):
    """Another run holds the target's lock; ``holder`` is its lock record."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


def locks_dir() -> Path:
    """``<state dir>/locks`` (``$CHAOSEXT_STATE_DIR/locks``, default ``~/.chaosext/faults/locks``)."""
    return state_dir() / "locks"


def lock_key(via: str, target: str, jwks_url: str) -> str:
    """The lock's key: ``<via>|<target>|<JWKS host>:<port>`` (host lower-cased, default ports filled in, IPv6 in
    brackets), so ``http://Auth:80/a`` and ``http://auth/b`` on the same target share one lock."""
    host, port = parse_jwks_url(jwks_url)
    host = host.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    return f"{via.strip()}|{target.strip()}|{host}:{port}"


def _path(key: str) -> Path:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80]
    return locks_dir() / f"{readable}.{hashlib.sha256(key.encode()).hexdigest()[:12]}.lock"


@contextmanager
def _guarded() -> Iterator[None]:
    with safefs.open_dir(locks_dir(), create=True) as d:
        fd = d.open(".guard", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _valid(record: Any) -> bool:
    """A lock record as :func:`acquire` writes it."""
    return (isinstance(record, dict) and ids.is_run_id(record.get("run_id"))
            and isinstance(record.get("pid"), int) and not isinstance(record.get("pid"), bool)
            and isinstance(record.get("pid_start_time"), (str, type(None)))
            and isinstance(record.get("host", ""), str)
            and all(isinstance(record.get(k, 0.0), (int, float)) for k in ("started", "ends_at")))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(safefs.read_text(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # UnsafePath too: a symlink or another user's file is never trusted
        return {"run_id": "?", "pid": 0, "unreadable": str(path)}
    if not _valid(record):
        return {"run_id": "?", "pid": 0, "unreadable": str(path)}
    return dict(record)


def _write(path: Path, record: dict[str, Any]) -> None:
    safefs.write_file(path, json.dumps(record, indent=1, sort_keys=True))


def read(key: str) -> dict[str, Any] | None:
    """The lock record of ``key``, or None when nobody holds it."""
    return _read(_path(key))


def _utc(ts: Any) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(ts))) if ts else "unknown"
    except (TypeError, ValueError):
        return "unknown"


def _owner_alive(rec: dict[str, Any]) -> bool:
    if rec.get("host") and rec["host"] != socket.gethostname():
        return True  # another machine's process: cannot be checked from here, so never assumed dead
    pid = int(rec.get("pid") or 0)
    return pid > 0 and process_alive(pid, rec.get("pid_start_time"))


def _faults_of(run_id: str) -> list[str]:
    """Why the run still has a fault in place ([] when none): a record in the state dir or a live watchdog."""
    if not ids.is_run_id(run_id):
        return []
    found = [f"fault record {r.get('path')}" for r in load_records() if r["spec"].get("run_id") == run_id]
    found += [f"watchdog pid {pid}" for pid in watchdog.find(run_id)]
    return found


def _describe(rec: dict[str, Any]) -> str:
    return (f"run {rec.get('run_id')} (pid {rec.get('pid')}, started {_utc(rec.get('started'))}, "
            f"ends at {_utc(rec.get('ends_at'))})")


@dataclass
class TargetLock:
    """A held target lock. ``took_over`` is the stale record it replaced (None if the key was free)."""

    key: str
    run_id: str
    path: Path
    record: dict[str, Any]
    took_over: dict[str, Any] | None = None
    message: str = ""
    _released: bool = field(default=False, repr=False)

    def _mine(self, rec: dict[str, Any] | None) -> bool:
        return rec is not None and rec.get("run_id") == self.run_id and rec.get("pid") == self.record["pid"]

    def release(self) -> bool:
        """Remove the lock if it still names this run; True when it was removed (idempotent)."""
        with _guarded():
            if not self._mine(_read(self.path)):
                return False
            safefs.remove(self.path)
            self._released = True
            return True

    def extend(self, ends_at: float) -> None:
        """Record a new ``ends_at``; raises LockHeld if the lock is no longer this run's."""
        with _guarded():
            rec = _read(self.path)
            if not self._mine(rec):
                raise LockHeld(f"the lock on {self.key} is no longer held by run {self.run_id}"
                               + (f" but by {_describe(rec)}" if rec else ""), rec or {})
            self.record["ends_at"] = float(ends_at)
            _write(self.path, self.record)

    def __enter__(self) -> TargetLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def acquire(key: str, run_id: str, info: dict[str, Any] | None = None) -> TargetLock:
    """Take the lock of ``key`` for ``run_id`` (the calling process is recorded as its owner).

    ``info`` is stored with the lock (``started`` and ``ends_at`` are read from it when present: UTC epoch seconds).
    Raises :class:`LockHeld` (changing nothing) when another live run holds it, or when its owner is gone but its
    fault is still in place. Re-acquiring a lock this process already holds for ``run_id`` returns it again.
    """
    if not run_id:
        raise ConfigError("acquire needs the run id that will own the lock: pass the experiment run's id")
    ids.check_run_id(run_id, "lock owner run id")
    info = dict(info or {})
    pid = os.getpid()
    record = {**info, "key": key, "run_id": run_id, "pid": pid, "pid_start_time": proc_start_time(pid),
              "host": socket.gethostname(), "started": float(info.get("started") or time.time()),
              "ends_at": float(info.get("ends_at") or 0.0)}
    path = _path(key)
    with _guarded():
        held = _read(path)
        took_over = None
        if held and not (held.get("run_id") == run_id and held.get("pid") == pid):
            if _owner_alive(held):
                raise LockHeld(
                    f"target {key} is in use by {_describe(held)}; one run per target at a time: wait for it to "
                    f"end, or stop it (Ctrl-C in its terminal, or `chaosext restore --run-id {held.get('run_id')}` "
                    f"plus SIGTERM to pid {held.get('pid')}). Nothing was changed.", held)
            faults = _faults_of(str(held.get("run_id", "")))
            if faults:
                raise LockHeld(
                    f"target {key} is locked by {_describe(held)}, whose process is gone but whose fault is still "
                    f"in place ({'; '.join(faults)}); remove it first with `chaosext restore --run-id "
                    f"{held.get('run_id')}` (or `chaosext restore --all`), then start again. Nothing was changed.",
                    held)
            took_over = held
        _write(path, record)
    message = (f"took over the stale lock on {key} from {_describe(took_over)}: its process is gone and no fault of "
               f"it is left" if took_over else f"locked {key} for run {run_id}")
    if took_over:
        logger.warning("chaosext lock: %s", message)
    return TargetLock(key=key, run_id=run_id, path=path, record=record, took_over=took_over, message=message)
