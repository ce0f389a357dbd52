"""Small CLI debts: `chaosext verdict --wide` shows every value whole; `doctor --via` offers no empty choice."""
from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from chaosext.core.faulttarget import VIA_FORMS
from chaosext.doctor import doctor
from chaosext.verdict import verdict

LONG_NAME = "server-side-error-rate-of-every-tenant-during-the-outage"
LONG_VALUE = "requests=" + "x" * 300 + "-end"


def journal(tmp_path: Path) -> Path:
    probe = {"activity": {"name": LONG_NAME, "tolerance": {"type": "jsonpath", "path": "$.error_rate_of_all_tenants",
                                                            "expect": True}},
             "status": "succeeded", "tolerance_met": True,
             "output": {"ok": True, "why": LONG_VALUE, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f_last": 6}}
    state = {"steady_state_met": True, "probes": [probe]}
    path = tmp_path / "journal.json"
    path.write_text(json.dumps({"status": "completed", "deviated": False, "duration": 12.0,
                                "experiment": {"title": "t"}, "steady_states": {"before": state, "after": state},
                                "run": [], "rollbacks": []}))
    return path


def test_verdict_cuts_by_default_and_wide_shows_every_value_whole(tmp_path: Path) -> None:
    path = journal(tmp_path)
    narrow = CliRunner().invoke(verdict, [str(path)])  # a journal with no fault: FAIL (1), but every value shown
    assert narrow.exit_code == 1, narrow.output
    assert "…" in narrow.output and LONG_VALUE not in narrow.output  # the default still fits one screen
    wide = CliRunner().invoke(verdict, ["--wide", str(path)])
    assert wide.exit_code == 1, wide.output
    assert "…" not in wide.output
    for whole in (LONG_NAME, LONG_VALUE, "$.error_rate_of_all_tenants == true", "f_last=6"):
        assert whole in wide.output, whole


def test_doctor_via_offers_only_real_methods(monkeypatch) -> None:
    monkeypatch.delenv("FAULT_VIA", raising=False)
    help_text = CliRunner().invoke(doctor, ["--help"]).output
    choices = re.search(r"--via \[([^\]]*)\]", help_text).group(1).split("|")
    assert choices == list(VIA_FORMS) and "" not in choices
    empty = CliRunner().invoke(doctor, ["--via", ""])
    assert empty.exit_code == 2 and "Invalid value for '--via'" in empty.output


def test_bench_uses_the_checkouts_venv_by_itself(tmp_path: Path) -> None:
    """The README: the scripts use .venv by themselves. scripts/bench started by the distribution's python3 with a
    PATH that has no .venv finds chaosext's packages and k6 in .venv (it ran nothing here: --parts "")."""
    import os
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".venv" / "bin" / "k6").exists():
        import pytest

        pytest.skip("no .venv with k6 (bash scripts/setup)")
    out = tmp_path / "bench.json"
    p = subprocess.run([str(repo / "scripts" / "bench"), "--parts", "", "--out", str(out)], capture_output=True,
                       text=True, timeout=120, check=False, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(out.read_text())["machine"]["k6"].startswith("k6 v1."), out.read_text()
