"""Test helpers for the shop target (tests/targets/nodeapi/target.py): talk to it from inside its namespace, cut its
services off the JWKS for a moment, read its Prometheus and its audit file.

The test process stays in the host's network namespace; :class:`InNetns` runs calls on one thread of its own that
entered the target's namespace (``setns`` switches only the calling thread), so every socket those calls open is in
there: the services, Prometheus and the IdP answer on the target's own addresses, and nothing is reachable on the
host.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.targets.nodeapi.target import IDP_ADDR, IDP_PORT, Target, enter_netns

__all__ = ["InNetns", "jwks_blocked", "audit_events", "TEST_RULE_COMMENT", "SHOP_ENV"]

T = TypeVar("T")
#: short timings for CI: the services' TTL is 5 s, so a 20 s outage has them serving stale keys for 15 s (max-stale
#: 120 s: within the lifetime); k6 at 60 requests/s over both services and the three tenants
SHOP_ENV = {"OUTAGE_SECONDS": "20", "WATCH_INTERVAL": "2", "K6_RATE": "60", "BASELINE_SECONDS": "10",
            "BASELINE_MIN_REQUESTS": "30", "RECOVERY_SECONDS": "30", "ALERT_WAIT_SECONDS": "20"}
#: the comment on the test's own iptables rule (never chaosext's)
TEST_RULE_COMMENT = "shop-target-test"


class InNetns:
    """Calls made from inside a network namespace, on one thread that entered it."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"in-{netns}", initializer=self._enter)
        self._session: requests.Session | None = None

    def _enter(self) -> None:
        enter_netns(self.netns)
        self._session = requests.Session()

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 60, **kwargs: Any) -> T:
        return self._pool.submit(fn, *args, **kwargs).result(timeout=timeout)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)

        def send() -> requests.Response:
            assert self._session is not None
            return self._session.request(method, url, **kwargs)

        return self.call(send)

    def prom(self, base: str, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        resp = self.request("GET", f"{base}/api/v1/query", params={"query": expr})
        resp.raise_for_status()
        result: list[dict[str, Any]] = resp.json()["data"]["result"]
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _iptables(target: Target, op: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*target.prefix, "iptables", "-w", op, "OUTPUT", *(["1"] if op == "-I" else []),
                           "-d", IDP_ADDR, "-p", "tcp", "--dport", str(IDP_PORT), "-m", "comment", "--comment",
                           TEST_RULE_COMMENT, "-j", "DROP"], capture_output=True, text=True, timeout=20, check=False)


@contextlib.contextmanager
def jwks_blocked(target: Target) -> Iterator[float]:
    """The IdP's public port dropped in the apps' namespace (as chaosext's fault does) while inside; yields the
    moment it started (time.time()). The rule is removed on the way out, whatever happened."""
    assert _iptables(target, "-I").returncode == 0
    try:
        yield time.time()
    finally:
        while _iptables(target, "-D").returncode == 0:  # every copy, should one have been added twice
            pass


def audit_events(path: Path, since_ms: float = 0) -> list[dict[str, Any]]:
    """The audit file's JSON lines (pino: ``time`` in ms) from ``since_ms`` on."""
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            ev = json.loads(line)
            if ev.get("time", 0) >= since_ms:
                events.append(ev)
    return events
