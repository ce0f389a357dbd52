"""The errors root (chaosext.core.errors): every error chaosext raises on purpose is a ChaosextError, and ``activity``
turns one into Chaos Toolkit's ActivityFailed with the same message while keeping what `chaos discover` reads.

No ``from __future__ import annotations`` here: `chaos discover` reads argument types from real annotations, as in the
activity modules themselves."""
import ast
import importlib
import inspect
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaoslib.discovery.discover import discover_activities
from chaoslib.exceptions import ActivityFailed

import chaosext
from chaosext.core.errors import ChaosextError, ConfigError, activity


class DomainError(ChaosextError, RuntimeError):
    """Like FaultError or TokenError: a domain error under the root."""


def probe(outage_seconds: int = 300, mode: str = "drop", configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Probe docstring: what it checks."""
    if mode == "boom":
        raise DomainError(f"OUTAGE_SECONDS={outage_seconds} is too long: use 60")
    if mode == "bug":
        raise KeyError("not ours")
    return {"ok": True, "outage_seconds": outage_seconds}


wrapped = activity(probe)


def test_a_chaosext_error_becomes_activity_failed_with_the_same_message() -> None:
    with pytest.raises(ActivityFailed) as caught:
        wrapped(120, "boom")
    assert str(caught.value) == "OUTAGE_SECONDS=120 is too long: use 60"
    # the journal shows the fix, not a chained traceback
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_results_and_other_exceptions_pass_through_unchanged() -> None:
    assert wrapped(5) == {"ok": True, "outage_seconds": 5}
    with pytest.raises(KeyError, match="not ours"):  # a bug stays a bug (Chaos Toolkit shows its traceback)
        wrapped(mode="bug")


def test_config_error_is_under_the_root_and_still_a_value_error() -> None:
    assert issubclass(ConfigError, ChaosextError) and issubclass(ConfigError, ValueError)
    with pytest.raises(ActivityFailed, match="K6_RATE"):
        activity(lambda: (_ for _ in ()).throw(ConfigError("K6_RATE='lots' is not a number")))()


def test_the_decorated_function_keeps_name_docstring_and_signature() -> None:
    assert wrapped.__name__ == "probe" and wrapped.__doc__ == probe.__doc__
    assert wrapped.__module__ == probe.__module__
    assert inspect.signature(wrapped) == inspect.signature(probe)


@pytest.fixture
def extension_module() -> Iterator[str]:
    """A throwaway extension module exporting the same probe, undecorated and decorated."""
    mod = types.ModuleType("chaosext_test_discovery")
    mod.plain = probe  # type: ignore[attr-defined]
    mod.decorated = wrapped  # type: ignore[attr-defined]
    mod.__all__ = ["plain", "decorated"]  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod
    try:
        yield mod.__name__
    finally:
        del sys.modules[mod.__name__]


def test_chaos_discover_sees_a_decorated_activity_exactly_like_the_function(extension_module: str) -> None:
    found = {a["name"]: a for a in discover_activities(extension_module, "probe")}
    assert found["decorated"]["arguments"] == found["plain"]["arguments"] == [
        {"name": "outage_seconds", "default": 300, "type": "integer"},
        {"name": "mode", "default": "drop", "type": "string"},
        {"name": "configuration", "default": None, "type": "object"},
    ]
    assert found["decorated"]["doc"] == "Probe docstring: what it checks."


def _modules_defining_subclasses() -> Iterator[types.ModuleType]:
    """Every chaosext module (outside the lab, which runs apart) with a top-level class that has a base class; found
    by reading the source, so that modules without any (the report's plotting, ...) are not imported for nothing."""
    root = Path(chaosext.__file__).parent
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        if rel.parts[1] == "lab" or rel.name == "__main__":
            continue
        if any(isinstance(node, ast.ClassDef) and node.bases for node in ast.parse(path.read_text()).body):
            yield importlib.import_module(".".join(rel.parts).removesuffix(".__init__"))


def test_every_error_class_chaosext_defines_is_a_chaosext_error() -> None:
    """Issue 16: one root, so that `activity` can turn any of them into a message that says what to do."""
    strays = [f"{mod.__name__}.{name}" for mod in _modules_defining_subclasses()
              for name, cls in vars(mod).items()
              if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == mod.__name__
              and not issubclass(cls, ChaosextError)]
    assert not strays, f"error classes outside the ChaosextError root: {strays}"
