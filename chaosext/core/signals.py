"""Remember that SIGTERM arrived, so the run stops even when Chaos Toolkit swallowed it inside an activity.

chaostoolkit-lib turns SIGTERM into ``InterruptExecution`` raised wherever the main thread is; inside a Python
activity that becomes a mere activity failure and the method goes on (DESIGN.md). ``install()`` wraps the current
SIGTERM handler: it sets a flag first, then calls the original. The safety control checks the flag after every
activity and interrupts the run; the watch step checks it every tick.
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeAlias

__all__ = ["install", "uninstall", "terminating", "reset"]

#: what ``signal.getsignal`` returns: a Python handler, SIG_DFL / SIG_IGN, or None (set from outside Python)
_Handler: TypeAlias = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

_flag = {"term": False}
_previous: dict[str, _Handler] = {}


def _handler(signum: int, frame: FrameType | None) -> None:
    _flag["term"] = True
    prev = _previous.get("handler")
    if callable(prev):
        prev(signum, frame)
    else:  # default disposition / ignored: stop at the next check instead of dying without cleanup
        pass


def install() -> None:
    """Wrap the current SIGTERM handler (idempotent; main thread only)."""
    if "handler" in _previous:
        return
    try:
        _previous["handler"] = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _handler)
    except ValueError:  # not the main thread
        _previous.pop("handler", None)


def uninstall() -> None:
    """Put the wrapped handler back."""
    if "handler" in _previous:
        try:
            signal.signal(signal.SIGTERM, _previous.pop("handler"))
        except (ValueError, TypeError):
            pass


def terminating() -> bool:
    """True once SIGTERM was received in this process."""
    return _flag["term"]


def reset() -> None:
    """Forget an earlier SIGTERM (a new run starts)."""
    _flag["term"] = False
