"""METRIC_UNVERIFIED_ACCEPTS is the one setting for "tokens accepted without a verified key": it is parsed once into
the run's metric contract (``cfg.metrics.unverified_accepts``), which the forgery backstop, the per-service reading
and the pre-flight metric check all read; ``off`` switches the backstop off everywhere."""
from __future__ import annotations

from pathlib import Path

import pytest

from chaosext.auth.measure import unverified_accepts
from chaosext.core.config import load_config
from chaosext.core.target import DEFAULT_UNVERIFIED_ACCEPTS
from chaosext.metrics import prom
from chaosext.metrics.checks import check_metrics
from chaosext.run.context import RunContext

SPRING = 'auth_tokens_accepted_total{verified="false"}'
DEAD = "http://127.0.0.1:9"  # nothing listens: a switched-off backstop must not even ask


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("METRIC_UNVERIFIED_ACCEPTS", raising=False)
    monkeypatch.setenv("CHAOSEXT_LAB_DIR", str(tmp_path / "no-lab"))


def ctx(configuration: dict[str, str] | None = None) -> RunContext:
    return RunContext(load_config({"prometheus_url": DEAD, **(configuration or {})}))


def test_one_value_from_the_configuration_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ctx().cfg.metrics.unverified_accepts == DEFAULT_UNVERIFIED_ACCEPTS
    assert ctx({"metric_unverified_accepts": SPRING}).cfg.metrics.unverified_accepts == SPRING
    monkeypatch.setenv("METRIC_UNVERIFIED_ACCEPTS", "off")
    assert ctx().cfg.metrics.unverified_accepts == ""


def test_off_switches_the_backstop_off_everywhere() -> None:
    off = ctx({"metric_unverified_accepts": "off"})
    assert unverified_accepts(off, 1.0, 2.0) == {"ok": True, "exported": False,
                                                 "note": "METRIC_UNVERIFIED_ACCEPTS=off: backstop switched off"}
    assert prom.unverified_accepts_between(prom.prom_of(off), 1.0, 2.0) == {}
    line = next(f for f in check_metrics(off) if f.name == "metric: unverified accepts")
    assert line.ok and not line.required and "not checked" in line.detail
    on = next(f for f in check_metrics(ctx()) if f.name == "metric: unverified accepts")
    assert not on.ok and DEFAULT_UNVERIFIED_ACCEPTS in on.detail  # switched on, it asks (here: nobody answers)
