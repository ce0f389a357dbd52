"""Fixtures for the egress tests: a pair of network namespaces joined by a veth, with a JWKS server on the far side
(see egress_util.py). Everything (servers, watchdogs, namespaces, records) is removed after each test."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.egress.egress_util import HERE, NetPair, _sh, kill_watchdogs


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "faults"
    monkeypatch.setenv("CHAOSEXT_STATE_DIR", str(d))
    return d


@pytest.fixture
def netpair(state_dir: Path) -> Iterator[NetPair]:
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    suffix = secrets.token_hex(3)
    n = int(suffix[:2], 16)
    client, server = f"cxc{suffix}", f"cxs{suffix}"
    va, vb = f"cxv{suffix}a", f"cxv{suffix}b"
    v4c, v4s = f"10.213.{n}.1", f"10.213.{n}.2"
    v6c, v6s = f"fd00:213:{n:x}::1", f"fd00:213:{n:x}::2"
    procs: list[subprocess.Popen] = []
    pair = None
    try:
        _sh("ip", "netns", "add", client)
        _sh("ip", "netns", "add", server)
        _sh("ip", "link", "add", va, "netns", client, "type", "veth", "peer", "name", vb, "netns", server)
        for ns, dev, a4, a6 in ((client, va, v4c, v6c), (server, vb, v4s, v6s)):
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{a4}/30", "dev", dev)
            _sh("ip", "-n", ns, "-6", "addr", "add", f"{a6}/64", "dev", dev, "nodad")
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        srv = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, str(HERE / "jwks_server.py")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(srv)
        port = int(srv.stdout.readline())
        pair = NetPair(client, server, v4s, v6s, port, procs)
        yield pair
    finally:
        kill_watchdogs(client)
        for p in procs + (pair.procs if pair else []):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for ns in (client, server):
            _sh("ip", "netns", "del", ns, check=False)
        for ns in (client, server):
            assert not Path(f"/run/netns/{ns}").exists()

