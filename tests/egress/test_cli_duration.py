"""`chaosext egress block --duration` (and jwks-chaos.sh, which runs it) in dry-run mode: nothing is applied, the
planned fault's lifetime is shown. An option not given is "unset" (the deadline of OUTAGE_SECONDS); an explicit
lifetime that cannot be one is refused, never replaced by the default."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from chaosext.egress.cli import egress


@pytest.fixture(autouse=True)
def _nothing_of_this_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("OUTAGE_SECONDS", "MAX_OUTAGE_SECONDS", "FAULT_VIA", "FAULT_TARGET", "JWKS_URL", "TARGET_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CHAOSEXT_LAB_DIR", str(tmp_path / "no-lab"))
    monkeypatch.setenv("JWKS_URL", "http://127.0.0.1:9/jwks")  # the target's: no lab, no description needed
    monkeypatch.setenv("CHAOSEXT_STATE_DIR", str(tmp_path / "faults"))


def dry_block(*args: str) -> Result:
    return CliRunner().invoke(egress, ["block", "--mode", "reject", "--dry-run", *args])


def test_the_duration_given_is_the_faults_lifetime_and_nothing_is_applied(tmp_path: Path) -> None:
    given = dry_block("--duration", "45")
    assert given.exit_code == 0, given.output
    assert json.loads(given.output)["deadline_seconds"] == 45 and json.loads(given.output)["dry_run"] is True
    default = json.loads(dry_block().output)
    assert default["deadline_seconds"] == 315  # OUTAGE_SECONDS 300 + its margin
    assert not (tmp_path / "faults").exists() or not list((tmp_path / "faults").iterdir())


def test_a_negative_duration_is_refused() -> None:
    result = dry_block("--duration", "-5")
    assert result.exit_code != 0 and "must be > 0" in result.output


def test_a_zero_duration_is_refused_not_turned_into_the_default() -> None:
    result = dry_block("--duration", "0")
    assert result.exit_code != 0 and "must be > 0" in result.output
