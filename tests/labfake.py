"""A lab state file that chaosext.core.labid recognises as a running lab, without starting one (unit tests).

The "authority" component is this test process (alive, with its real start time), the network namespace is this
process's: exactly what a lab started from here would record. Tests change one field to show that the lab is
recognised by identity (its state file, its namespace), never because an address is loopback.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from chaosext.core import procs

__all__ = ["LAB", "write_running_lab"]

#: the URLs of the fake lab
LAB: dict[str, Any] = {
    "jwks_url": "http://127.0.0.2:3333/.well-known/jwks.json", "authority_url": "http://127.0.0.2:3333",
    "token_url": "http://127.0.0.2:3333/token",
    "service_urls": {"policy": "http://127.0.0.1:1111", "vuln": "http://127.0.0.1:1112"},
    "prometheus_url": "http://127.0.0.1:4444", "alertmanager_url": "http://127.0.0.1:5555",
}


def _netns() -> str:
    """This process's network namespace as the lab records it (``chaosext.core.procs.netns_id``)."""
    st = os.stat("/proc/self/ns/net")
    return f"{st.st_dev}:{st.st_ino}"


def write_running_lab(lab_dir: Path, **override: Any) -> dict[str, Any]:
    """Write ``<lab_dir>/state.json`` (0700 directory, 0600 file) of a lab this process "runs"; returns the state."""
    lab_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    me = os.getpid()
    stat = procs.proc_stat(me)
    state: dict[str, Any] = {
        "version": 1, "config": {"jwks_ttl": 7, "jwks_max_stale": 70}, "state_dir": str(lab_dir),
        "components": {
            "authority": {"pid": me, "start_ticks": stat.start_ticks if stat else None, "url": LAB["authority_url"]},
            **{name: {"pid": me, "url": url} for name, url in LAB["service_urls"].items()},
            "prometheus": {"pid": me, "url": LAB["prometheus_url"]}},
        **LAB, "audit_file": str(lab_dir / "audit.jsonl"), "netns": _netns(),
        "client_id": "chaosext-lab", "client_secret": "lab-secret",
    }
    state.update(override)
    path = lab_dir / "state.json"
    path.write_text(json.dumps(state))
    path.chmod(0o600)
    return state
