"""What `chaosext report` (and every other chaosext command) leaves in HOME: nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_report_leaves_no_matplotlib_cache_or_config_behind(tmp_path: Path, unused_port: int) -> None:
    """matplotlib keeps its font cache and config under HOME (~/.cache/matplotlib, ~/.config/matplotlib: root's, in
    the gated job): `chaosext report` gives it a temporary directory and removes it, and every other command does
    not load matplotlib at all. Before, any `chaosext` command (even --version) left both directories behind."""
    home = tmp_path / "home"
    home.mkdir()
    journal = tmp_path / "journal.json"
    journal.write_text(json.dumps({"experiment": {"title": "t"}, "run": [], "status": "completed",
                                   "start": "2026-12-01T10:00:00", "end": "2026-12-01T10:05:00"}))
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env["HOME"] = str(home)
    for argv in (["--version"], ["report", str(journal), "-o", str(tmp_path / "report.html"), "--prometheus-url",
                                 f"http://127.0.0.1:{unused_port}"]):
        proc = subprocess.run([sys.executable, "-m", "chaosext.cli", *argv], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "report.html").stat().st_size > 1000
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
