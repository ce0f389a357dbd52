"""A fleet of target network namespaces for the scale tests and ``scripts/bench-egress``: N "client" namespaces
``<prefix>c<i>``, each joined by a veth to one bridge in a "server" namespace ``<prefix>srv`` that runs the JWKS
stand-in (jwks_server.py) on 10.215.0.1. Addresses live only on that bridge (10.215.0.0/16), routed nowhere else.

``with fleet(10) as f: ...`` removes every process and namespace it made when the block ends, also on failure.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
SERVER_ADDRESS = "10.215.0.1"


def _ip(*argv: str, stdin: str = "") -> None:
    cp = subprocess.run(["ip", *argv], input=stdin, capture_output=True, text=True, timeout=60)
    if cp.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)} failed: {cp.stderr.strip()}")


@dataclass
class Fleet:
    prefix: str
    server: str
    clients: list[str]
    port: int
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{SERVER_ADDRESS}:{self.port}/.well-known/jwks.json"

    @property
    def target_list(self) -> str:
        """``netns:<c0>,netns:<c1>,...``"""
        return ",".join(f"netns:{c}" for c in self.clients)

    @property
    def glob(self) -> str:
        """``netns:<prefix>c*``: every client, none of the server."""
        return f"netns:{self.prefix}c*"

    def save(self, client: str, binary: str = "iptables") -> str:
        """``iptables-save`` of the filter table inside ``client``."""
        return subprocess.run(["ip", "netns", "exec", client, f"{binary}-save", "-t", "filter"], capture_output=True,
                              text=True, timeout=30, check=True).stdout

    def rules(self, client: str) -> list[str]:
        """Every chaosext line (chain, rule, jump) in ``client``, both families."""
        out = []
        for binary in ("iptables", "ip6tables"):
            out += [f"{binary} {line}" for line in self.save(client, binary).splitlines()
                    if "CHAOSEXT" in line or "chaosext" in line]
        return out

    def all_rules(self) -> dict[str, list[str]]:
        """``{client: rules}`` for the clients that hold any chaosext rule."""
        return {c: r for c in self.clients if os.path.exists(f"/run/netns/{c}") and (r := self.rules(c))}

    def remove_client(self, client: str) -> None:
        _ip("netns", "del", client)


def _create(prefix: str, n: int, procs: list[subprocess.Popen]) -> Fleet:
    server = f"{prefix}srv"
    clients = [f"{prefix}c{i}" for i in range(n)]
    _ip("netns", "add", server)
    _ip("-n", server, "-batch", "-", stdin="link set lo up\nlink add br0 type bridge\n"
        f"addr add {SERVER_ADDRESS}/16 dev br0\nlink set br0 up\n")
    peers = []
    for i, client in enumerate(clients):
        _ip("netns", "add", client)
        veth, peer = f"{prefix}v{i}", f"{prefix}p{i}"
        _ip("link", "add", veth, "netns", client, "type", "veth", "peer", "name", peer, "netns", server)
        _ip("-n", client, "-batch", "-", stdin=f"link set lo up\naddr add 10.215.{1 + i // 250}.{1 + i % 250}/16 "
            f"dev {veth}\nlink set {veth} up\n")
        peers.append(f"link set {peer} master br0 up\n")
    if peers:
        _ip("-n", server, "-batch", "-", stdin="".join(peers))
    srv = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, str(HERE / "jwks_server.py"),
                            SERVER_ADDRESS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(srv)
    port = int(srv.stdout.readline())
    return Fleet(prefix, server, clients, port, procs)


def _names(prefix: str) -> list[str]:
    return [n for n in os.listdir("/run/netns") if n.startswith(prefix)] if os.path.isdir("/run/netns") else []


@contextlib.contextmanager
def fleet(n: int, prefix: str = "") -> Iterator[Fleet]:
    """N client namespaces and a JWKS server namespace; everything removed afterwards, whatever happened."""
    prefix = prefix or f"cxf{secrets.token_hex(2)}"
    procs: list[subprocess.Popen] = []
    try:
        yield _create(prefix, n, procs)
    finally:
        from tests.egress.egress_util import kill_watchdogs

        kill_watchdogs(prefix)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for name in _names(prefix):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        left = _names(prefix)
        if left:
            raise RuntimeError(f"network namespaces left behind: {left}")
