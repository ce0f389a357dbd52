"""Fixtures of the experiment tests (helpers in experiment_util.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from experiment_util import ExperimentRunner, needs_root_iptables


@pytest.fixture
def experiment(tmp_path: Path) -> Iterator[ExperimentRunner]:
    """An ExperimentRunner whose faults are always removed (and checked gone) after the test."""
    needs_root_iptables()
    runner = ExperimentRunner(tmp_path)
    try:
        yield runner
    finally:
        left = runner.cleanup()
        assert not left, f"chaosext rules left behind: {left}"


