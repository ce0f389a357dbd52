"""The errors root (chaosext.core.errors): every error chaosext raises on purpose is a ChaosextError whose message
says what to do. An entry point raises the domain error itself: a Python caller catches that class, and Chaos Toolkit
(chaoslib's Python provider) turns it into ActivityFailed carrying the message, so the journal shows the fix."""
import ast
import importlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from chaoslib.provider.python import run_python_activity

import chaosext
from chaosext.core.errors import ChaosextError, ConfigError


class DomainError(ChaosextError, RuntimeError):
    """Like FaultError or TokenError: a domain error under the root."""


def probe(outage_seconds: int = 300, mode: str = "drop", configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Probe docstring: what it checks."""
    if mode == "boom":
        raise DomainError(f"OUTAGE_SECONDS={outage_seconds} is too long: use 60")
    return {"ok": True, "outage_seconds": outage_seconds}


@pytest.fixture
def extension_module() -> Iterator[str]:
    """A throwaway extension module exporting the probe."""
    mod = types.ModuleType("chaosext_test_errors")
    mod.probe = probe  # type: ignore[attr-defined]
    mod.__all__ = ["probe"]  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod
    try:
        yield mod.__name__
    finally:
        del sys.modules[mod.__name__]


def _activity(module: str, func: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "probe", "name": func, "provider": {"type": "python", "module": module, "func": func,
                                                       "arguments": arguments}}


def test_chaos_toolkit_shows_a_domain_error_as_its_message(extension_module: str) -> None:
    with pytest.raises(ActivityFailed) as caught:
        run_python_activity(_activity(extension_module, "probe", outage_seconds=120, mode="boom"), {}, {})
    assert str(caught.value).endswith("DomainError: OUTAGE_SECONDS=120 is too long: use 60")
    assert run_python_activity(_activity(extension_module, "probe", outage_seconds=5), {}, {}) == {
        "ok": True, "outage_seconds": 5}


def test_a_python_caller_catches_the_domain_error_itself() -> None:
    with pytest.raises(DomainError, match="too long") as caught:
        probe(120, "boom")
    assert not isinstance(caught.value, ActivityFailed)  # no bridge class: the error is what was raised


def test_a_real_entry_point_raises_config_error_and_the_journal_says_which_setting(tmp_path: Path) -> None:
    from chaosext.outage.hypothesis import error_rate_within_max

    bad = {"chaosext_lab_dir": str(tmp_path / "nolab"), "k6_rate": "lots"}
    with pytest.raises(ConfigError, match=r"^K6_RATE='lots' is not a whole number; set it to e\.g\. 1$"):
        error_rate_within_max(configuration=bad)
    with pytest.raises(ActivityFailed, match=r"ConfigError: K6_RATE='lots' is not a whole number"):
        run_python_activity(_activity("chaosext.outage.hypothesis", "error_rate_within_max"), bad, {})


def test_config_error_is_under_the_root_and_still_a_value_error() -> None:
    assert issubclass(ConfigError, ChaosextError) and issubclass(ConfigError, ValueError)


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
    """Issue 16: one root, so that every error a user meets says what to do."""
    strays = [f"{mod.__name__}.{name}" for mod in _modules_defining_subclasses()
              for name, cls in vars(mod).items()
              if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == mod.__name__
              and not issubclass(cls, ChaosextError)]
    assert not strays, f"error classes outside the ChaosextError root: {strays}"
