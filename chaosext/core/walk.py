"""Walking JSON documents (Envoy config dumps, Chaos Toolkit journals) without a recursive helper in every module."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["iter_dicts"]


def iter_dicts(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``node`` (itself included), depth first, in document order."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            yield current
            stack.extend(reversed(list(current.values())))
        elif isinstance(current, list):
            stack.extend(reversed(current))
