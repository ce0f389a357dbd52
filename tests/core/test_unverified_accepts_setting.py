"""METRIC_UNVERIFIED_ACCEPTS is the one setting for "tokens accepted without a verified key": it is parsed once into
the run's metric contract (``cfg.metrics.unverified_accepts``), which the forgery backstop, the per-service reading
and the pre-flight metric check all read; ``off`` switches the backstop off everywhere."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaosext.auth.measure import unverified_accepts
from chaosext.core.config import load_config
from chaosext.core.target import DEFAULT_UNVERIFIED_ACCEPTS
from chaosext.metrics import prom
from chaosext.metrics.checks import check_metrics
from chaosext.run.context import RunContext
from tests.jsonstub import Handler, JsonStub

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


def test_off_switches_the_backstop_off_everywhere(stub: Callable[[Handler], JsonStub]) -> None:
    asked: list[str] = []

    def scraped(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        """A Prometheus that has scraped its targets (``up``) but holds no other series."""
        asked.append(q["query"])
        result = [{"metric": {}, "value": [0, "3"]}] if q["query"] == "count(up)" else []
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    off = ctx({"metric_unverified_accepts": "off"})
    assert unverified_accepts(off, 1.0, 2.0) == {"ok": True, "exported": False,
                                                 "note": "METRIC_UNVERIFIED_ACCEPTS=off: backstop switched off"}
    assert prom.unverified_accepts_between(prom.prom_of(off), 1.0, 2.0) == {}
    url = stub(scraped).url
    line = next(f for f in check_metrics(ctx({"prometheus_url": url, "metric_unverified_accepts": "off"}))
                if f.name == "metric: unverified accepts")
    assert line.ok and not line.required and "not checked" in line.detail
    assert not any("jwt_validations_total" in q for q in asked)  # switched off, it does not even ask
    on = next(f for f in check_metrics(ctx({"prometheus_url": url})) if f.name == "metric: unverified accepts")
    assert not on.ok and DEFAULT_UNVERIFIED_ACCEPTS in on.detail  # switched on, it asks (here: no such series)
    assert f"count({DEFAULT_UNVERIFIED_ACCEPTS})" in asked
