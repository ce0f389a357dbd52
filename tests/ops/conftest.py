"""Fixtures for the ops tests: a lab inside a network namespace the test creates, and a real journal of the
JWKS-outage experiment run against it (short outage). Everything is removed afterwards, even on failure."""
from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ops_util import in_ns

from chaosext.lab.testing import running_lab

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO / "experiments" / "jwks-outage.json"


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A fresh network namespace with loopback up; deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    name = f"cxops{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _ip("netns", "del", name, check=False)
        assert not Path(f"/run/netns/{name}").exists()


@pytest.fixture(scope="module")
def ns_lab(netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A lab (short JWKS TTL, long max-stale: the services serve stale keys through the outage) in ``netns``."""
    with running_lab(tmp_path_factory.mktemp("opslab"), exec_prefix=["ip", "netns", "exec", netns],
                     jwks_ttl=2, jwks_max_stale=120) as state:
        yield state


@pytest.fixture(scope="module")
def lab_journal(netns: str, ns_lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """journal.json of a real `chaos run experiments/jwks-outage.json` against the namespaced lab (15 s outage)."""
    out = tmp_path_factory.mktemp("run")
    journal = out / "journal.json"
    env = {"CHAOSEXT_LAB_DIR": ns_lab["state_dir"], "OUTAGE_SECONDS": "15", "K6_RATE": "50", "BASELINE_SECONDS": "10",
           "BASELINE_MIN_REQUESTS": "30", "RECOVERY_SECONDS": "30",
           "CHAOSEXT_STATE_DIR": str(out / "faults")}
    proc = in_ns(netns, ["chaos", "--log-file", str(out / "chaos.log"), "run", "--journal-path", str(journal),
                         str(EXPERIMENT)], env=env, timeout=240)
    assert journal.exists(), f"chaos run wrote no journal (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return journal


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound to port 0, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
