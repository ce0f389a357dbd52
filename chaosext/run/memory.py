"""What a run keeps in the memory of its ``chaos`` process only: its secrets and the handles of what it holds.

Tokens, the IdP-signed test tokens of the forgery catalogue and the fetched JWKS must never reach a file, a journal or
a log, yet every activity of the run needs them; the safety control's heartbeat and target lock are handles of this
process. So they live here, keyed by the run id, for as long as the process lives: the one module-level registry of
the extension (a test lists them). Outside a run (the ``chaosext`` CLI, a direct call) the run id is ``""``.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["RunMemory", "Releasable", "memory", "forget"]


class Releasable(Protocol):
    """A handle the run holds until it ends (the target lock)."""

    def release(self) -> object: ...


class Stoppable(Protocol):
    """A thread the run keeps going until it ends (the heartbeat)."""

    def stop(self, remove: bool = False) -> None: ...


class Closable(Protocol):
    """A listener the run keeps open until it ends (the jku/x5u key server)."""

    def close(self) -> None: ...


@dataclass
class RunMemory:
    """One run's in-memory state (never written anywhere)."""

    #: (authority URL, tenant) -> (access token, expiry as unix seconds)
    tokens: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    #: the forgery catalogue's material prepared before the fault: {"jwks": ..., "minted": {tenant: {class: token}}}
    forgery: dict[str, Any] = field(default_factory=dict)
    #: rotation-during-outage: tenant -> a token signed with the IdP's new key (got during the outage)
    rotated_tokens: dict[str, str] = field(default_factory=dict)
    #: the safety control's target lock and heartbeat
    lock: Releasable | None = None
    heartbeat: Stoppable | None = None
    #: the one key listener the jku/x5u forgeries point at, for the whole run (``chaosext.auth.keyserver``)
    key_server: Closable | None = None
    lock_guard: threading.Lock = field(default_factory=threading.Lock, repr=False)


_MEMORY: dict[str, RunMemory] = {}
_LOCK = threading.Lock()


def memory(run_id: str) -> RunMemory:
    """The memory of run ``run_id`` in this process (created empty on first use)."""
    with _LOCK:
        return _MEMORY.setdefault(run_id, RunMemory())


def forget(run_id: str) -> None:
    """Drop what this process kept for ``run_id`` (the run ended; tests)."""
    with _LOCK:
        _MEMORY.pop(run_id, None)
