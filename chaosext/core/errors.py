"""The root of chaosext's errors, and the one place where they become Chaos Toolkit's ``ActivityFailed``.

Every error chaosext raises on purpose is a :class:`ChaosextError` whose message says what to do. Domain errors
subclass it (``FaultError``, ``TokenError``, ``BackendError``, ``K6NotFoundError`` ...). Chaos Toolkit entry points are
wrapped by :func:`activity`, which turns a ``ChaosextError`` into ``ActivityFailed`` with the same message, so a journal
shows the fix instead of a traceback.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from chaoslib.exceptions import ActivityFailed

__all__ = ["ChaosextError", "ConfigError", "activity"]

P = ParamSpec("P")
R = TypeVar("R")


class ChaosextError(Exception):
    """Root of every error chaosext raises on purpose; the message says what to fix."""


class ConfigError(ChaosextError, ValueError):
    """A setting cannot be used (not a number, unknown name, malformed list ...)."""


def activity(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator for Chaos Toolkit probes and actions: a ``ChaosextError`` becomes ``ActivityFailed`` (same message)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ChaosextError as exc:
            raise ActivityFailed(str(exc)) from None

    return wrapper
