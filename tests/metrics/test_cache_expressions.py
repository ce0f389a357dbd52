"""The cache-state expressions docs/target.md shows read the right state on a real Prometheus.

A state holds while its expression is >= 1. A PromQL comparison used as a filter (``x == 0``) returns the filtered
series with its own value, 0 here, so it never holds; the documented example must use ``x == bool 0``. This test
takes the expressions from the page itself, serves the example's gauges from an exporter in each state and reads them
through chaosext's own reader (chaosext.metrics.cache) against a real Prometheus scraping that exporter.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from chaosext.core.config import load_config
from chaosext.metrics.cache import read_caches
from chaosext.run.context import RunContext
from tests.core.test_target import docs_example
from tests.promutil import exporter, scraping, wait_scraped
from tests.targetutil import description, target_config

pytestmark = [pytest.mark.e2e, pytest.mark.lab]


class Gauges:
    """The example service's two gauges (``jwks_keys_cached``, ``jwks_fetch_failing``), labelled ``app``."""

    def __init__(self) -> None:
        self.keys, self.failing = 3, 0
        self.lock = threading.Lock()

    def set(self, keys: int, failing: int) -> None:
        with self.lock:
            self.keys, self.failing = keys, failing

    def text(self) -> str:
        with self.lock:
            return (f'# TYPE jwks_keys_cached gauge\njwks_keys_cached{{app="orders"}} {self.keys}\n'
                    f'# TYPE jwks_fetch_failing gauge\njwks_fetch_failing{{app="orders"}} {self.failing}\n')


def test_the_documented_cache_expressions_read_each_state(tmp_path: Path) -> None:
    documented = yaml.safe_load(docs_example(tmp_path).read_text())["services"]["orders"]["cache"]
    gauges = Gauges()
    with exporter(gauges.text) as target, scraping(tmp_path, {"orders": (target, "/metrics")}) as url:
        doc = description(prometheus={"url": url})
        doc["services"] = {"orders": {**doc["services"]["orders"], "cache": documented}}
        cfg = load_config(target_config(tmp_path / "t", doc))
        ctx = RunContext(cfg)
        seen = {}
        for state, keys, failing in (("fresh", 3, 0), ("stale", 3, 1), ("expired", 0, 1)):
            gauges.set(keys, failing)
            wait_scraped(url, "jwks_keys_cached")
            seen[state] = read_caches(ctx)["orders"].state
    assert seen == {"fresh": "fresh", "stale": "stale", "expired": "expired"}
