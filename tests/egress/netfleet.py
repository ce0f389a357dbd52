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
        """``{client: rules}`` for the clients that hold any chaosext rule: ``iptables-save`` / ``ip6tables-save``
        in every client at once (started in each namespace from this process, like the driver's own commands)."""
        from chaosext.egress.netns import Job, run_all

        there = [c for c in self.clients if os.path.exists(f"/run/netns/{c}")]
        asked = [(c, b) for c in there for b in ("iptables", "ip6tables")]
        saved = run_all([Job([f"{b}-save", "-t", "filter"], nspath=f"/run/netns/{c}") for c, b in asked])
        found: dict[str, list[str]] = {}
        for (client, binary), ran in zip(asked, saved, strict=True):
            if ran.error is not None or ran.returncode != 0:
                if os.path.exists(f"/run/netns/{client}"):
                    raise RuntimeError(f"{binary}-save in {client} failed: {ran.error or ran.stderr}")
                continue
            found.setdefault(client, []).extend(f"{binary} {line}" for line in ran.stdout.splitlines()
                                                if "CHAOSEXT" in line or "chaosext" in line)
        return {c: r for c, r in found.items() if r}

    def remove_client(self, client: str) -> None:
        _ip("netns", "del", client)


def _mac(i: int) -> str:
    """A fixed locally administered MAC: 02:d7:00:00:<i>; -1 is the bridge's."""
    n = 0xFFFF if i < 0 else i
    return f"02:d7:00:00:{n >> 8:02x}:{n & 0xFF:02x}"


def _client_address(i: int) -> str:
    return f"10.215.{1 + i // 250}.{1 + i % 250}"


def _create(prefix: str, n: int, procs: list[subprocess.Popen]) -> Fleet:
    """The namespaces, links and addresses in a few ``ip -batch`` runs plus one small batch inside each client (run
    at once from this process, entered with setns: chaosext's own :func:`run_all`). Neighbours are static: 1,000
    clients would overflow the kernel's neighbour table (``gc_thresh3``, 1,024 entries host-wide) with ARP; no IPv6
    link-local addresses (``addrgenmode none``): their multicast would be flooded to every port of the bridge."""
    from chaosext.egress.netns import Job, run_all

    server = f"{prefix}srv"
    clients = [f"{prefix}c{i}" for i in range(n)]
    _ip("-batch", "-", stdin="".join(f"netns add {name}\n" for name in [server, *clients]))
    _ip("-n", server, "-batch", "-", stdin=f"link set lo up\nlink add br0 address {_mac(-1)} type bridge\n"
        f"link set br0 addrgenmode none\naddr add {SERVER_ADDRESS}/16 dev br0\nlink set br0 up\n")
    _ip("-batch", "-", stdin="".join(
        f"link add {prefix}v{i} address {_mac(i)} netns {client} type veth peer name {prefix}p{i} netns {server}\n"
        for i, client in enumerate(clients)))
    done = run_all([Job(["ip", "-batch", "-"], nspath=f"/run/netns/{client}", stdin=(
        f"link set lo up\nlink set {prefix}v{i} addrgenmode none\naddr add {_client_address(i)}/16 dev {prefix}v{i}\n"
        f"link set {prefix}v{i} up\n"
        f"neigh replace {SERVER_ADDRESS} lladdr {_mac(-1)} dev {prefix}v{i} nud permanent\n"))
        for i, client in enumerate(clients)])
    failed = [f"{c}: {r.error or r.stderr.strip()}" for c, r in zip(clients, done, strict=True)
              if r.error or r.returncode]
    if failed:
        raise RuntimeError(f"setting up the fleet failed: {failed[:3]}")
    if clients:
        _ip("-n", server, "-batch", "-", stdin="".join(
            f"link set {prefix}p{i} addrgenmode none\nlink set {prefix}p{i} master br0 up\n"
            f"neigh replace {_client_address(i)} lladdr {_mac(i)} dev br0 nud permanent\n"
            for i in range(n)))
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
        names = _names(prefix)
        if names:  # one process for all of them
            subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names),
                           capture_output=True, text=True, timeout=120)
        left = _names(prefix)
        if left:
            raise RuntimeError(f"network namespaces left behind: {left}")
