"""The shop team's own alert rules (alerts.yml, in the target's metric names) with Debian's promtool: they load, and
their unit tests pass (alerts.test.yml: stale keys warn but never page, no usable key and a failing fetch pages
within seconds, a service that just started does not, 401s of real tenants count and client noise does not)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if not binary:
        pytest.fail("promtool not found: run scripts/setup (Debian package 'prometheus') to install it")
    return subprocess.run([binary, *args], cwd=HERE, capture_output=True, text=True, timeout=60, check=False)


def test_the_rules_load() -> None:
    out = promtool("check", "rules", "alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_rules_unit_tests_pass() -> None:
    out = promtool("test", "rules", "alerts.test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
