"""The root of chaosext's errors, and the one place where they become Chaos Toolkit's ``ActivityFailed``.

Every error chaosext raises on purpose is a :class:`ChaosextError` whose message says what to do. Domain errors
subclass it (``ConfigError``, ``FaultError``, ``TokenError``, ``BackendError``, ``AuditError``, ``K6NotFoundError``,
``LockHeld`` ...). Chaos Toolkit entry points are wrapped by :func:`activity`, which turns a ``ChaosextError`` into
``ActivityFailed`` with the same message, so a journal shows the fix instead of a traceback.

``ActivityResult`` and ``ActivityMapping`` type an entry point's mapping result and optional mapping argument:
``chaos discover`` names a type from the annotation itself and knows only plain ``dict`` ("mapping"; ``dict[str, Any]``
or ``X | None`` would be "object"), so they are plain ``dict`` at run time and the precise type for mypy.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar

from chaoslib.exceptions import ActivityFailed

__all__ = ["ChaosextError", "ConfigError", "activity", "ActivityResult", "ActivityMapping"]

P = ParamSpec("P")
R = TypeVar("R")

if TYPE_CHECKING:
    ActivityResult: TypeAlias = dict[str, Any]
    ActivityMapping: TypeAlias = dict[str, Any] | None
else:
    ActivityResult = dict
    ActivityMapping = dict


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
