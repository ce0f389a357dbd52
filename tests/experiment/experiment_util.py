"""Helpers for the experiment tests: run `chaos run experiments/jwks-outage.json` as a subprocess against a lab.

The fault is real iptables in this host's namespace against the lab's Authority address (127.0.0.2:<this lab's free
port>, loopback). Every fault a test makes is removed on teardown by its run id (``chaosext restore --run-id``; not
``--all``, which would also remove the faults of other test runs sharing this machine), and the teardown asserts no
rule tagged with those run ids, and none for this lab's Authority port, is left.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO / "experiments" / "jwks-outage.json"
DRILL = REPO / "experiments" / "jwks-expiry-drill.json"

#: short timings: a lab whose cache goes stale 3 s into the outage, k6 at a low rate over 3 tenants (so every
#: tenant/service pair clears the auth-failure alert's >= 1 request/s guard)
FAST_ENV = {"OUTAGE_SECONDS": "12", "WATCH_INTERVAL": "2", "K6_RATE": "100", "TENANTS": "t01,t02,t03",
            "ALERT_WAIT_SECONDS": "40"}


def needs_root_iptables() -> None:
    if os.geteuid() != 0 or not shutil.which("iptables"):
        pytest.skip("needs root and iptables (the fault is real iptables)")
    if not shutil.which("k6") and not os.environ.get("K6_BIN"):
        pytest.skip("needs k6 (bash scripts/setup installs it)")


def iptables_rules() -> str:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    out6 = subprocess.run(["ip6tables-save"], capture_output=True, text=True, check=False).stdout
    return out + out6


#: every variable the experiment reads: a developer's own settings must not leak into the tests
EXPERIMENT_VARS = {k.upper() for k in json.loads(EXPERIMENT.read_text())["configuration"]} | {
    "CHAOSEXT_STATE_DIR", "CHAOSEXT_K6_DIR"}


@dataclass
class Outcome:
    """What one `chaos run` left behind."""

    returncode: int
    output: str
    journal: dict[str, Any]
    verdict_rc: int
    verdict_out: str
    run: dict[str, Any]
    lab: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    def check(self, name: str) -> dict[str, Any]:
        """The judge-outage result of the named outage check."""
        for r in self.journal.get("run") or []:
            out = r.get("output")
            if isinstance(out, dict) and isinstance(out.get("checks"), dict):
                return out["checks"][name]
        raise AssertionError(f"no judge-outage step in the journal: {self.output[-2000:]}")


class ExperimentRunner:
    """Runs the experiment against labs and cleans up every fault it made."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.count = 0
        self.fault_dir = tmp / "faults"
        self.ports: set[int] = set()
        self.journals: list[Path] = []
        #: the experiment file `chaos run` runs (the expiry drill's tests point it at jwks-expiry-drill.json)
        self.experiment = EXPERIMENT

    def env_for(self, lab: dict[str, Any] | None, **extra: str) -> dict[str, str]:
        self.count += 1
        work = self.tmp / f"run{self.count}"
        work.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in EXPERIMENT_VARS}
        env.update(FAST_ENV)
        env.update({"CHAOSEXT_STATE_DIR": str(self.fault_dir), "CHAOSEXT_RUN_DIR": str(work / "run"),
                    "CHAOSEXT_K6_DIR": str(work / "k6"), "PYTHONUNBUFFERED": "1"})
        if lab is not None:
            env["CHAOSEXT_LAB_DIR"] = str(lab["state_dir"])
            from urllib.parse import urlparse

            self.ports.add(urlparse(lab["jwks_url"]).port or 80)
        env.update(extra)
        env["_WORK"] = str(work)
        return env

    def start(self, lab: dict[str, Any] | None, **extra: str) -> tuple[subprocess.Popen, dict[str, str]]:
        env = self.env_for(lab, **extra)
        journal = Path(env["_WORK"]) / "journal.json"
        self.journals.append(journal)
        proc = subprocess.Popen(["chaos", "--no-log-file", "run", "--journal-path", str(journal), str(self.experiment)],
                                env=env, cwd=env["_WORK"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        return proc, env

    def finish(self, proc: subprocess.Popen, env: dict[str, str], lab: dict[str, Any] | None,
               timeout: float = 240) -> Outcome:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            raise AssertionError(f"chaos run did not finish in {timeout}s:\n{output[-3000:]}")
        journal_path = Path(env["_WORK"]) / "journal.json"
        journal = json.loads(journal_path.read_text()) if journal_path.exists() else {}
        v = subprocess.run([sys.executable, "-m", "chaosext.cli", "verdict", str(journal_path)], capture_output=True,
                           text=True, timeout=60, check=False)
        run_file = Path(env["CHAOSEXT_RUN_DIR"]) / "run.json"
        run = json.loads(run_file.read_text()) if run_file.exists() else {}
        return Outcome(proc.returncode, output, journal, v.returncode, v.stdout + v.stderr, run, lab or {}, env)

    def run(self, lab: dict[str, Any] | None, **extra: str) -> Outcome:
        proc, env = self.start(lab, **extra)
        return self.finish(proc, env, lab)

    def run_ids(self) -> set[str]:
        ids: set[str] = set()
        for path in self.journals:
            try:
                journal = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for r in journal.get("run") or []:
                out = r.get("output")
                if isinstance(out, dict) and r.get("activity", {}).get("name") == "block-jwks-egress":
                    ids.add(str(out.get("run_id")))
        if self.fault_dir.is_dir():
            ids |= {p.stem for p in self.fault_dir.glob("*.json")}
        return ids

    def cleanup(self) -> list[str]:
        """Remove every fault these runs made; return the chaosext rules still left for them (should be [])."""
        env = {**os.environ, "CHAOSEXT_STATE_DIR": str(self.fault_dir)}
        ids = self.run_ids()
        for rid in ids:
            subprocess.run([sys.executable, "-m", "chaosext.cli", "restore", "--run-id", rid], env=env,
                           capture_output=True, timeout=60, check=False)
        rules = iptables_rules().splitlines()
        return [line for line in rules if any(f"chaosext:{rid}" in line for rid in ids)
                or ("chaosext" in line and any(f"--dport {p} " in line + " " for p in self.ports))]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.3) -> Any:
    """Poll ``predicate`` until it is truthy (returned) or ``timeout`` s pass (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


__all__ = ["DRILL", "EXPERIMENT", "ExperimentRunner", "Outcome", "wait_for", "iptables_rules", "FAST_ENV", "needs_root_iptables"]
