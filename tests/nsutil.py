"""Run a command inside a network namespace the test created, as a user would (the doctor and report tests), and
a pair of namespaces joined by a veth (two "hosts" that reach each other only over it)."""
from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["in_ns", "NsPair", "netns_pair", "fresh_netns"]


def in_ns(netns: str, argv: list[str], env: dict[str, str] | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run argv inside the namespace (as a user would, through the console scripts of this Python)."""
    bindir = Path(sys.executable).parent
    full_env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}", **(env or {})}
    return subprocess.run(["ip", "netns", "exec", netns, *argv], env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@dataclass(frozen=True)
class NsPair:
    """Two network namespaces: ``near`` (address ``near_ip``) and ``far`` (``far_ip``), one veth between them."""

    near: str
    far: str
    near_ip: str
    far_ip: str


def _ip(*argv: str, check: bool = True) -> None:
    subprocess.run(["ip", *argv], check=check, capture_output=True, timeout=20)


@contextlib.contextmanager
def fresh_netns(prefix: str, loopback: bool = False) -> Iterator[str]:
    """A network namespace named ``<prefix><6 hex>`` made for the test (its loopback up with ``loopback``), deleted
    after."""
    name = f"{prefix}{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        if loopback:
            _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _ip("netns", "del", name, check=False)


@contextlib.contextmanager
def netns_pair() -> Iterator[NsPair]:
    """Two fresh namespaces joined by a veth on 10.214.<n>.0/30 (routed nowhere else); every process still running
    in them is killed and both are deleted afterwards."""
    suffix = secrets.token_hex(3)
    n = int(suffix[:2], 16)
    pair = NsPair(f"cxn{suffix}", f"cxf{suffix}", f"10.214.{n}.1", f"10.214.{n}.2")
    try:
        for ns in (pair.near, pair.far):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", f"cxv{suffix}a", "netns", pair.near, "type", "veth", "peer", "name", f"cxv{suffix}b",
            "netns", pair.far)
        for ns, dev, addr in ((pair.near, f"cxv{suffix}a", pair.near_ip), (pair.far, f"cxv{suffix}b", pair.far_ip)):
            _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        yield pair
    finally:
        for ns in (pair.near, pair.far):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=20,
                                  check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            _ip("netns", "del", ns, check=False)
