"""What the load needs, checked before anything changes (``chaosext doctor`` and the run's pre-flight): k6."""
from __future__ import annotations

import re
import subprocess

from chaosext.core.findings import Finding
from chaosext.load.k6 import K6NotFoundError, find_k6, k6_version

__all__ = ["check_k6"]


def check_k6() -> Finding:
    """k6 is installed and reports a version (the load generator of the experiment)."""
    try:
        path = find_k6()
        version = k6_version(path)
    except (K6NotFoundError, OSError, subprocess.TimeoutExpired) as exc:
        return Finding("k6", False, str(exc),
                       "install k6 from Grafana's packages (or `bash scripts/setup` for the lab/test copy), "
                       "or set K6_BIN=/path/to/k6")
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", version)
    if not match or int(match.group(1)) < 1:
        return Finding("k6", False, f"{path}: {version}", "install k6 v1.0 or newer")
    return Finding("k6", True, f"{path}: {version}")
