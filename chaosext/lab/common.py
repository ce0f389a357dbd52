"""What the lab's modules share at the bottom (this module imports no other lab module, so the servers, the Envoy
config and the supervisor can all use it): the misbehaviour knob names, the base URL of a listener, finding a
binary."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["HOLES", "base_url", "find_binary"]

#: misbehaviour knobs, one classic JWT validation hole each (`chaosext lab up --holes`, the services' ``--hole NAME``;
#: docs/architecture.md)
HOLES = ("accept-alg-none", "alg-confusion", "ignore-exp", "trust-token-key", "ignore-tenant", "skip-signature-404")


def base_url(host: str, port: int) -> str:
    """``http://host:port`` of a listener (an IPv6 host in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def find_binary(binary: str) -> str | None:
    """The executable ``binary`` (a path, or a name looked up on PATH), or None when there is none."""
    if os.sep in binary:
        return binary if os.access(binary, os.X_OK) and Path(binary).is_file() else None
    return shutil.which(binary)
