"""Run ids and the exact names that mark what one run made: the one definition every part of chaosext checks against.

A run id is 8 lower-case hex digits (``secrets.token_hex(4)``). It names a run's directory, its fault record, its k6
runs, its lock, its iptables chain ``CHAOSEXT-<run id>`` and comment ``chaosext:<run id>``, its Kubernetes objects
``chaosext-jwks-<run id>`` (label ``chaosext.io/run-id=<run id>``) and its Envoy runtime tag. Everywhere an id comes
in from outside (an argument, a record read back, a rule listing, a label), it is accepted only when it matches
:data:`RUN_ID_RE` in full, and a name or tag is chaosext's only when it matches its whole pattern: ``chaosext:ssh``
in someone's rule comment or a user chain ``CHAOSEXT-corpfw`` is not ours, and ``../x`` never reaches a path or an
``iptables-restore`` script.
"""
from __future__ import annotations

import re
import secrets

from chaosext.core.errors import ConfigError

__all__ = ["RUN_ID_RE", "RUN_ID_PATTERN", "new_run_id", "is_run_id", "check_run_id", "chain_name", "tag",
           "object_name", "run_id_of_chain", "run_id_of_tag", "run_id_of_object"]

#: the pattern of a run id, without anchors (for building other patterns)
RUN_ID_PATTERN = r"[0-9a-f]{8}"
#: a run id, matched with ``fullmatch``
RUN_ID_RE = re.compile(RUN_ID_PATTERN)

_CHAIN_RE = re.compile(rf"CHAOSEXT-({RUN_ID_PATTERN})")
_TAG_RE = re.compile(rf"chaosext:({RUN_ID_PATTERN})")
_OBJECT_RE = re.compile(rf"chaosext-jwks-({RUN_ID_PATTERN})")


def new_run_id() -> str:
    """A fresh run id."""
    return secrets.token_hex(4)


def is_run_id(value: object) -> bool:
    """True when ``value`` is a string that is exactly a run id."""
    return isinstance(value, str) and RUN_ID_RE.fullmatch(value) is not None


def check_run_id(value: object, what: str = "run id") -> str:
    """``value`` when it is a run id, else ConfigError saying what a run id looks like."""
    if not is_run_id(value):
        raise ConfigError(f"{what} {value!r} is not a chaosext run id (8 lower-case hex digits, e.g. 1a2b3c4d)")
    return str(value)


def chain_name(run_id: str) -> str:
    """The run's iptables chain."""
    return f"CHAOSEXT-{check_run_id(run_id)}"


def tag(run_id: str) -> str:
    """The run's rule comment / tag."""
    return f"chaosext:{check_run_id(run_id)}"


def object_name(run_id: str) -> str:
    """The run's Kubernetes object name."""
    return f"chaosext-jwks-{check_run_id(run_id)}"


def _whole(pattern: re.Pattern[str], value: str) -> str:
    m = pattern.fullmatch(value.strip().strip('"'))
    return m.group(1) if m else ""


def run_id_of_chain(name: str) -> str:
    """The run id of a chain named exactly ``CHAOSEXT-<run id>`` ('' for any other name)."""
    return _whole(_CHAIN_RE, name)


def run_id_of_tag(comment: str) -> str:
    """The run id of a comment that is exactly ``chaosext:<run id>`` (quotes as ``iptables -S`` prints them are
    allowed; '' for any other comment)."""
    return _whole(_TAG_RE, comment)


def run_id_of_object(name: str) -> str:
    """The run id of a Kubernetes object named exactly ``chaosext-jwks-<run id>`` ('' otherwise)."""
    return _whole(_OBJECT_RE, name)
