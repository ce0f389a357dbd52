"""Helpers for the egress tests: a pair of network namespaces joined by a veth, with a JWKS server on the far side.

"client" netns: where the fault is applied (target ``netns:<client>``). "server" netns: runs jwks_server.py.
Addresses live only on that veth pair (10.213.<n>.0/30 and fd00:213:<n>::/64), routed nowhere else.
Everything (servers, watchdogs, namespaces, records) is removed after each test, whatever happened.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=20)


def kill_watchdogs(marker: str) -> None:
    """SIGKILL every chaosext watchdog whose command line mentions ``marker`` (a namespace or run id)."""
    from chaosext.egress import watchdog

    for pid in watchdog.find():
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def chaosext_rules(netns: str) -> list[str]:
    """Every chaosext chain/rule in ``netns`` (both families)."""
    out = []
    for binary in ("iptables", "ip6tables"):
        lines = _sh("ip", "netns", "exec", netns, binary, "-w", "5", "-S").stdout.splitlines()
        out += [f"{binary} {line}" for line in lines if "CHAOSEXT" in line or "chaosext" in line]
    return out


@dataclass
class NetPair:
    client: str
    server: str
    v4: str
    v6: str
    port: int
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"netns:{self.client}"

    def url(self, host: str = "") -> str:
        host = host or self.v4
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/.well-known/jwks.json"

    def rules(self) -> list[str]:
        return chaosext_rules(self.client)

    def start_in_client(self, *argv: str) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.client, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc




def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until true or ``timeout`` passes (not a timing assert: only an upper bound)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
