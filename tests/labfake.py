"""A lab that chaosext.core.labid recognises as running, without starting one (unit tests).

The lab's target description names the URLs below; the "authority" component is this test process (alive, with its
real start time), the network namespace is this process's: exactly what a lab started from here would record
(``tests.targetutil.write_lab``). Tests change one field to show that the lab is recognised by identity (its state
file, its namespace), never because an address is loopback.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.targetutil import description, write_lab

__all__ = ["LAB", "lab_description", "write_running_lab"]

#: the URLs of the fake lab
LAB: dict[str, Any] = {
    "jwks_url": "http://127.0.0.2:3333/.well-known/jwks.json", "authority_url": "http://127.0.0.2:3333",
    "token_url": "http://127.0.0.2:3333/token",
    "service_urls": {"policy": "http://127.0.0.1:1111", "vuln": "http://127.0.0.1:1112"},
    "prometheus_url": "http://127.0.0.1:4444", "alertmanager_url": "http://127.0.0.1:5555",
}


def lab_description(lab_dir: Path) -> dict[str, Any]:
    """The fake lab's target description (its URLs: :data:`LAB`)."""
    return description(
        identity_provider={"authority_url": LAB["authority_url"], "jwks_url": LAB["jwks_url"],
                           "jwks_cache": {"ttl_seconds": 7, "max_stale_seconds": 70}},
        services={name: {"url": url, "routes": ["GET /api/v1/items"]} for name, url in LAB["service_urls"].items()},
        prometheus={"url": LAB["prometheus_url"]}, alertmanager={"url": LAB["alertmanager_url"]},
        audit={"source": f"file:{lab_dir / 'audit.jsonl'}"})


def write_running_lab(lab_dir: Path, **override: Any) -> dict[str, Any]:
    """Write the state of a lab this process "runs" into ``lab_dir`` (0700 directory, 0600 files), ``override``
    replacing fields of state.json; returns the state."""
    write_lab(lab_dir, lab_description(lab_dir), token_url=LAB["token_url"], audit_file=str(lab_dir / "audit.jsonl"),
              client_id="chaosext-lab", client_secret="lab-secret", **override)
    return json.loads((lab_dir / "state.json").read_text())
