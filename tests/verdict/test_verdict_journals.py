"""`chaosext verdict` on real journals: a real `chaos run` of small experiments (no lab), then the verdict's exit code
and words, which say more than Chaos Toolkit's own exit code."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _chaos(tmp: Path, experiment: dict) -> tuple[int, Path]:
    path = tmp / "exp.json"
    path.write_text(json.dumps(experiment))
    journal = tmp / "journal.json"
    p = subprocess.run(["chaos", "--no-log-file", "run", "--journal-path", str(journal), str(path)], cwd=tmp,
                       capture_output=True, text=True, timeout=120, check=False)
    return p.returncode, journal


def _exists_probe(name: str, path: str) -> dict:
    return {"type": "probe", "name": name, "tolerance": True,
            "provider": {"type": "python", "module": "os.path", "func": "exists", "arguments": {"path": path}}}


def _verdict(journal: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chaosext.cli", "verdict", str(journal), *extra],
                          capture_output=True, text=True, timeout=60, check=False)


def test_verdict_fails_when_before_hypothesis_fails_although_chaos_exits_0(tmp_path: Path) -> None:
    """A real Chaos Toolkit run whose steady state does not hold before the method: chaos exits 0, the verdict says
    "not run: baseline unhealthy" (exit 3), distinct from a failed experiment."""
    rc, journal = _chaos(tmp_path, {
        "title": "before fails", "description": "d",
        "steady-state-hypothesis": {"title": "h", "probes": [_exists_probe("marker-exists", str(tmp_path / "no"))]},
        "method": [_exists_probe("noop", "/")]})
    assert rc == 0  # Chaos Toolkit's own exit code says nothing is wrong
    v = _verdict(journal)
    assert v.returncode == 3
    assert "VERDICT: NOT RUN" in v.stdout and "baseline unhealthy" in v.stdout and "marker-exists" in v.stdout


def test_verdict_fails_on_a_failed_method_action_and_passes_a_clean_run(tmp_path: Path) -> None:
    ok_probe = _exists_probe("root-exists", "/")
    failing = {"type": "action", "name": "remove-missing-file",
               "provider": {"type": "python", "module": "os", "func": "remove",
                            "arguments": {"path": str(tmp_path / "missing")}}}
    (tmp_path / "a").mkdir()
    rc, journal = _chaos(tmp_path / "a", {"title": "action fails", "description": "d",
                                          "steady-state-hypothesis": {"title": "h", "probes": [ok_probe]},
                                          "method": [failing]})
    assert rc == 0
    v = _verdict(journal)
    assert v.returncode == 1 and "'remove-missing-file' failed" in v.stdout

    # a clean run that never applied the JWKS fault (e.g. the method removed) is not a pass
    (tmp_path / "b").mkdir()
    rc, journal = _chaos(tmp_path / "b", {"title": "clean", "description": "d",
                                          "steady-state-hypothesis": {"title": "h", "probes": [ok_probe]},
                                          "method": [_exists_probe("noop", "/")]})
    v = _verdict(journal, "--json")
    assert rc == 0 and v.returncode == 1
    assert json.loads(v.stdout)["verdict"] == "FAIL" and "the fault was never applied" in v.stdout


def test_verdict_of_a_dry_run_is_never_a_pass(tmp_path: Path) -> None:
    """`chaos run --dry actions` skips every action: its journal is judged "dry run" (exit 4), never PASS."""
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"title": "dry", "description": "d",
                                "steady-state-hypothesis": {"title": "h", "probes": [_exists_probe("root", "/")]},
                                "method": [{"type": "action", "name": "block-jwks-egress",
                                            "provider": {"type": "python", "module": "os.path", "func": "exists",
                                                         "arguments": {"path": "/"}}}]}))
    journal = tmp_path / "journal.json"
    subprocess.run(["chaos", "--no-log-file", "run", "--dry", "actions", "--journal-path", str(journal), str(path)],
                   cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    v = _verdict(journal)
    assert v.returncode == 4 and "VERDICT: DRY RUN" in v.stdout


def test_verdict_rejects_a_file_that_is_not_a_journal(tmp_path: Path) -> None:
    bad = tmp_path / "journal.json"
    bad.write_text("[]")
    v = _verdict(bad)
    assert v.returncode == 2 and "not a Chaos Toolkit journal" in v.stderr
