"""Run a command inside a network namespace the test created, as a user would (the doctor and report tests)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["in_ns"]


def in_ns(netns: str, argv: list[str], env: dict[str, str] | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run argv inside the namespace (as a user would, through the console scripts of this Python)."""
    bindir = Path(sys.executable).parent
    full_env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}", **(env or {})}
    return subprocess.run(["ip", "netns", "exec", netns, *argv], env=full_env, capture_output=True, text=True,
                          timeout=timeout, check=False)
