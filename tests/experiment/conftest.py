"""Fixtures of the experiment tests (helpers in experiment_util.py): every test runs in a network namespace of its
own, with its labs (``lab_factory``) and its `chaos run`s inside it."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaosext.lab.testing import running_lab
from tests.experiment.experiment_util import ExperimentRunner, Netns, needs_root_iptables


@pytest.fixture
def netns() -> Iterator[Netns]:
    """This test's network namespace (loopback up); whatever still runs inside is killed, then it is deleted."""
    needs_root_iptables()
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()
        assert not Path(f"/run/netns/{ns.name}").exists()


@pytest.fixture
def lab_factory(tmp_path: Path, netns: Netns) -> Iterator[Callable[..., dict[str, Any]]]:
    """``make(**overrides) -> state``: a lab of this test's own inside its namespace, stopped after the test."""
    with contextlib.ExitStack() as stack:
        count = 0

        def make(**overrides: Any) -> dict[str, Any]:
            nonlocal count
            count += 1
            return stack.enter_context(running_lab(tmp_path / f"lab{count}", exec_prefix=netns.prefix, **overrides))

        yield make


@pytest.fixture
def experiment(tmp_path: Path, netns: Netns, lab_factory: Callable[..., dict[str, Any]]) -> Iterator[ExperimentRunner]:
    """An ExperimentRunner in this test's namespace; every fault it made is removed (and checked gone) afterwards."""
    runner = ExperimentRunner(tmp_path, netns)
    try:
        yield runner
    finally:
        left = runner.cleanup()
        assert not left, f"chaosext rules left behind: {left}"
