"""METRIC_UNVERIFIED_ACCEPTS is the one setting for "tokens accepted without a verified key": the metric contract and
the forgery backstop read the same value; the old name UNVERIFIED_ACCEPTS_SELECTOR still works, with a deprecation
warning; ``off`` switches the backstop off everywhere."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from chaosext.core import config
from chaosext.core.config import DEFAULT_UNVERIFIED_ACCEPTS, load_config
from chaosext.metrics import contract

SPRING = 'auth_tokens_accepted_total{verified="false"}'


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("METRIC_UNVERIFIED_ACCEPTS", "UNVERIFIED_ACCEPTS_SELECTOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CHAOSEXT_LAB_DIR", str(tmp_path / "no-lab"))
    monkeypatch.setattr(config, "_WARNED", set())


def both(configuration: dict[str, str] | None) -> tuple[str, str]:
    return load_config(configuration).unverified_accepts_selector, contract.resolve(configuration).unverified_accepts


def test_one_value_for_the_backstop_and_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    assert both(None) == (DEFAULT_UNVERIFIED_ACCEPTS, DEFAULT_UNVERIFIED_ACCEPTS)
    assert both({"metric_unverified_accepts": SPRING}) == (SPRING, SPRING)
    monkeypatch.setenv("METRIC_UNVERIFIED_ACCEPTS", "off")
    assert both(None) == ("", "")


def test_the_old_name_still_works_and_says_it_is_deprecated(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("UNVERIFIED_ACCEPTS_SELECTOR", SPRING)
    with caplog.at_level(logging.WARNING, logger="chaostoolkit"):
        assert both(None) == (SPRING, SPRING)
    warnings = [r.getMessage() for r in caplog.records if "UNVERIFIED_ACCEPTS_SELECTOR" in r.getMessage()]
    assert len(warnings) == 1 and "rename it METRIC_UNVERIFIED_ACCEPTS" in warnings[0]  # once, not per read
    assert both({"metric_unverified_accepts": "jwt_accepted_unverified_total"})[0] == "jwt_accepted_unverified_total"


def test_a_run_that_never_set_the_old_name_gets_no_deprecation_warning(caplog: pytest.LogCaptureFixture,
                                                                       tmp_path: Path) -> None:
    """The safety control calls restore/stop_k6 with the run's resolved configuration at the end of every run: the
    resolved selector must travel under its current name, not the old one (a default scripts/lab-experiment printed
    the warning for a setting nobody set)."""
    from chaosext.safety.cleanup import run_configuration

    cfg = load_config({"chaosext_run_dir": str(tmp_path), "chaosext_run_id": "ab12cd34"})
    with caplog.at_level(logging.WARNING, logger="chaostoolkit"):
        again = load_config(run_configuration(cfg))
    assert again.unverified_accepts_selector == cfg.unverified_accepts_selector == DEFAULT_UNVERIFIED_ACCEPTS
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]
    off = load_config({"chaosext_run_dir": str(tmp_path), "metric_unverified_accepts": "off"})
    assert load_config(run_configuration(off)).unverified_accepts_selector == ""
