"""Shared fixtures: a real lab on free ports (see chaosext.lab.testing.running_lab)."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaosext.lab.testing import running_lab


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One lab for the whole session (default settings, free ports): its state dict. Do not stop or break it."""
    with running_lab(tmp_path_factory.mktemp("lab")) as state:
        yield state


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[Callable[..., dict[str, Any]]]:
    """``make(**overrides) -> state``: a lab of your own with special flags (e.g. ``jwks_ttl=2``), stopped after."""
    with contextlib.ExitStack() as stack:
        count = 0

        def make(**overrides: Any) -> dict[str, Any]:
            nonlocal count
            count += 1
            return stack.enter_context(running_lab(tmp_path / f"lab{count}", **overrides))

        yield make
