"""Test helper: a real lab on free ports, always torn down.

    from chaosext.lab.testing import running_lab
    with running_lab(tmp_path / "lab", jwks_ttl=2, jwks_max_stale=6) as state:
        requests.get(state["service_urls"]["policy"] + "/healthz", timeout=2)

Overrides are `chaosext lab up` flags by their LabConfig field name (``jwks_ttl=2``, ``no_prometheus=True``,
``services="policy"``). The lab is started by running ``python -m chaosext.lab.cli up`` exactly as a user would.
``exec_prefix`` runs that command (and so every lab process) inside something else, e.g.
``["ip", "netns", "exec", "myns"]`` for a network namespace the test created (bring ``lo`` up in it first).
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chaosext.core.procs import free_ports
from chaosext.lab import supervisor
from chaosext.lab.plan import LabConfig

#: free_ports (chaosext.core.procs) stays importable from here: tests pick the ports of their own servers with it
__all__ = ["free_ports", "lab_up_argv", "running_lab"]

_PORT_FIELDS = {"authority_port": "authority_host", "ops_port": "ops_host", "policy_port": "host",
                "vuln_port": "host", "notify_port": "host", "prometheus_port": "host", "alertmanager_port": "host",
                "envoy_port": "host", "envoy_admin_port": "host", "envoy_jwt_port": "host"}


def lab_up_argv(state_dir: str | os.PathLike[str], **overrides: Any) -> list[str]:
    """The `lab up` command line for these overrides (free ports for every port not given)."""
    defaults = LabConfig(state_dir=str(state_dir))
    missing = [f for f in _PORT_FIELDS if f not in overrides]
    hosts = [str(overrides.get(_PORT_FIELDS[f], getattr(defaults, _PORT_FIELDS[f]))) for f in missing]
    overrides = {**dict(zip(missing, free_ports(hosts), strict=True)), **overrides}
    argv = [sys.executable, "-m", "chaosext.lab.cli", "up", "--state-dir", str(state_dir), "--json"]
    for key, value in overrides.items():
        if not hasattr(defaults, key) or key == "state_dir":
            raise TypeError(f"running_lab: unknown lab setting {key!r}")
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif isinstance(value, (list, tuple)):
            argv += [flag, ",".join(value)]
        else:
            argv += [flag, str(value)]
    return argv


@contextlib.contextmanager
def running_lab(state_dir: str | os.PathLike[str], exec_prefix: list[str] | None = None,
                timeout: float = 90.0, **overrides: Any) -> Iterator[dict[str, Any]]:
    """Start a lab in state_dir on free ports, yield its state dict, and always stop it afterwards."""
    state_dir = Path(state_dir).absolute()
    argv = list(exec_prefix or []) + lab_up_argv(state_dir, **overrides)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"lab up failed (exit {proc.returncode}): {proc.stderr.strip()}")
        state = json.loads(proc.stdout)
        yield state
    finally:
        result = supervisor.down(state_dir, grace=5.0)
        if result["left"]:
            raise RuntimeError(f"lab processes {result['left']} in {state_dir} would not stop")
