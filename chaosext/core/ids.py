"""The exact names that mark what one run made, built from its run id and read back only by their whole pattern.

A run id (``chaosext.core.names.RUN_ID_RE``, checked by ``check_run_id`` wherever one comes in) names the run's
iptables chain ``CHAOSEXT-<run id>`` and comment ``chaosext:<run id>``, its Kubernetes objects
``chaosext-jwks-<run id>`` (label ``chaosext.io/run-id=<run id>``) and its Envoy runtime tag. A name or tag found on a
target is chaosext's only when it matches its whole pattern: ``chaosext:ssh`` in someone's rule comment or a user
chain ``CHAOSEXT-corpfw`` is not ours, and ``../x`` never reaches a path or an ``iptables-restore`` script.
"""
from __future__ import annotations

import re

from chaosext.core.names import RUN_ID_RE, check_run_id

__all__ = ["is_run_id", "chain_name", "tag", "object_name", "run_id_of_chain", "run_id_of_tag", "run_id_of_object"]

_CHAIN_RE = re.compile(rf"CHAOSEXT-({RUN_ID_RE.pattern})")
_TAG_RE = re.compile(rf"chaosext:({RUN_ID_RE.pattern})")
_OBJECT_RE = re.compile(rf"chaosext-jwks-({RUN_ID_RE.pattern})")


def is_run_id(value: object) -> bool:
    """True when ``value`` is a string that is exactly a run id."""
    return isinstance(value, str) and RUN_ID_RE.fullmatch(value) is not None


def chain_name(run_id: str) -> str:
    """The run's iptables chain."""
    return f"CHAOSEXT-{check_run_id(run_id, 'run id')}"


def tag(run_id: str) -> str:
    """The run's rule comment / tag."""
    return f"chaosext:{check_run_id(run_id, 'run id')}"


def object_name(run_id: str) -> str:
    """The run's Kubernetes object name."""
    return f"chaosext-jwks-{check_run_id(run_id, 'run id')}"


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
