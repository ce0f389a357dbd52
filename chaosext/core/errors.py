"""The root of chaosext's errors, and the one place where they become Chaos Toolkit's ``ActivityFailed``.

Every error chaosext raises on purpose is a :class:`ChaosextError` whose message says what to do. Domain errors
subclass it (``ConfigError``, ``FaultError``, ``TokenError``, ``BackendError``, ``AuditError``, ``K6NotFoundError``,
``LockHeld`` ...). Chaos Toolkit entry points are wrapped by :func:`activity`, which turns a ``ChaosextError`` into
``ActivityFailed`` with the same message, so a journal shows the fix instead of a traceback. The raised error is also
still an instance of the domain error's class (``except FaultError`` in a Python caller such as the ``chaosext``
CLI keeps working): its class derives from both ``ActivityFailed`` and the original class.

``ActivityResult`` and ``ActivityMapping`` type an entry point's mapping result and optional mapping argument:
``chaos discover`` names a type from the annotation itself and knows only plain ``dict`` ("mapping"; ``dict[str, Any]``
or ``X | None`` would be "object"), so they are plain ``dict`` at run time and the precise type for mypy.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar

from chaoslib.exceptions import ActivityFailed

__all__ = ["ChaosextError", "ConfigError", "activity", "as_activity_failed", "ActivityResult", "ActivityMapping"]

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


_AS_ACTIVITY_FAILED: dict[type[ChaosextError], type[ActivityFailed]] = {}


def as_activity_failed(exc: ChaosextError) -> ActivityFailed:
    """``exc`` as an ``ActivityFailed`` with the same message that is still an instance of ``exc``'s class."""
    cls = type(exc)
    bridged = _AS_ACTIVITY_FAILED.get(cls)
    if bridged is None:
        bridged = type(cls.__name__, (ActivityFailed, cls), {"__module__": cls.__module__, "__doc__": cls.__doc__})
        _AS_ACTIVITY_FAILED[cls] = bridged
    return bridged(str(exc))


def activity(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator for Chaos Toolkit probes and actions: a ``ChaosextError`` becomes ``ActivityFailed`` (same message,
    see :func:`as_activity_failed`); the signature and docstring stay the function's (``chaos discover``)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ChaosextError as exc:
            raise as_activity_failed(exc) from None

    return wrapper
