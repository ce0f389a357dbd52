"""The root of chaosext's errors, and the types of a Chaos Toolkit entry point's mapping result and argument.

Every error chaosext raises on purpose is a :class:`ChaosextError` whose message says what to do. Domain errors
subclass it (``ConfigError``, ``FaultError``, ``TokenError``, ``BackendError``, ``AuditError``, ``K6NotFoundError``,
``LockHeld`` ...); a Python caller (the ``chaosext`` CLI, a test) catches the domain error it expects. Chaos Toolkit
needs nothing more: chaoslib 1.44 turns any exception an activity raises into ``ActivityFailed`` carrying
``<class>: <message>`` (``chaoslib.provider.python``), so the journal shows the fix, not a traceback.

The tree::

    ChaosextError
    ├── ConfigError (ValueError)       a setting cannot be used
    │   ├── StateError                 the lab's state.json is broken
    │   ├── TargetError                FAULT_VIA / FAULT_TARGET cannot be read
    │   ├── ContractError              a METRIC_* setting is not a name/selector
    │   └── KubeConfigError            no (unambiguous) way to the Kubernetes API
    ├── FaultError (RuntimeError)      a fault could not be planned, applied or removed
    │   └── TargetNotFound             the target (namespace, process, pod) is gone
    ├── TokenError (RuntimeError)      no token could be had
    ├── BackendError (RequestException)  Prometheus / Alertmanager / Loki / ClickHouse refused or failed
    ├── AuditError (RuntimeError)      the audit store answered something else than audit rows
    ├── K6NotFoundError, K6RunError    k6 is missing / refused the script
    └── LockHeld                       another run holds the target

``ActivityResult`` and ``ActivityMapping`` type an entry point's mapping result and optional mapping argument:
``chaos discover`` names a type from the annotation itself and knows only plain ``dict`` ("mapping"; ``dict[str, Any]``
or ``X | None`` would be "object"), so they are plain ``dict`` at run time and the precise type for mypy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

__all__ = ["ChaosextError", "ConfigError", "ActivityResult", "ActivityMapping"]

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
