"""chaosext.core.errors.activity: the one place a ChaosextError becomes Chaos Toolkit's ActivityFailed."""
from __future__ import annotations

import inspect

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosext.core.errors import ChaosextError, ConfigError, activity


class _Refused(ChaosextError, RuntimeError):
    """A domain error."""


@activity
def _probe(limit: int = 3, configuration: dict | None = None) -> dict:  # type: ignore[type-arg]
    """Checks something; the docstring is what `chaos discover` shows."""
    if limit < 0:
        raise _Refused(f"limit={limit} must be >= 0; set LIMIT")
    if limit == 0:
        raise KeyError("not ours")
    return {"ok": True}


def test_a_chaosext_error_reaches_chaos_toolkit_as_activity_failed_and_python_callers_as_itself() -> None:
    with pytest.raises(ActivityFailed, match=r"^limit=-1 must be >= 0; set LIMIT$") as caught:
        _probe(-1)
    assert isinstance(caught.value, _Refused) and isinstance(caught.value, RuntimeError)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(KeyError):  # not ours: a bug shows as itself, with its traceback
        _probe(0)
    assert _probe() == {"ok": True}
    assert not isinstance(ConfigError("x"), ActivityFailed)  # only what crosses an activity changes


def test_the_wrapped_entry_point_keeps_its_signature_and_docstring_for_chaos_discover() -> None:
    params = inspect.signature(_probe).parameters
    assert list(params) == ["limit", "configuration"] and params["limit"].default == 3
    assert inspect.getdoc(_probe) == "Checks something; the docstring is what `chaos discover` shows."
    assert _probe.__name__ == "_probe" and _probe.__module__ == __name__
