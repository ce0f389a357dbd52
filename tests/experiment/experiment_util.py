"""Helpers for the experiment tests: run `chaos run experiments/jwks-outage.json` as a subprocess against a lab.

Every test gets its own network namespace (loopback up): its labs, its `chaos run`s, their k6, and so their iptables
faults (real iptables, ``FAULT_TARGET=local`` inside that namespace, against the lab's Authority address
127.0.0.2:<port>) all live there, so a test can neither touch nor see another test's rules. Teardown removes every
fault by its run id, asserts that no chaosext rule is left in the namespace, kills anything still running in it and
deletes it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO / "experiments" / "jwks-outage.json"
DRILL = REPO / "experiments" / "jwks-expiry-drill.json"

#: short timings: a lab whose cache goes stale 3 s into the outage, k6 at a low rate over 3 tenants (so every
#: tenant/service pair clears the auth-failure alert's >= 1 request/s guard)
FAST_ENV = {"OUTAGE_SECONDS": "12", "WATCH_INTERVAL": "2", "K6_RATE": "100", "TENANTS": "t01,t02,t03",
            "ALERT_WAIT_SECONDS": "40", "BASELINE_SECONDS": "10", "BASELINE_MIN_REQUESTS": "30",
            "RECOVERY_SECONDS": "30"}


def needs_root_iptables() -> None:
    if os.geteuid() != 0 or not shutil.which("iptables"):
        pytest.skip("needs root and iptables (the fault is real iptables)")
    if not shutil.which("k6") and not os.environ.get("K6_BIN"):
        pytest.skip("needs k6 (bash scripts/setup installs it)")


def iptables_rules(netns: str = "") -> str:
    """iptables-save + ip6tables-save of the namespace (this host's when ``netns`` is empty)."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    out = subprocess.run(prefix + ["iptables-save"], capture_output=True, text=True, check=False).stdout
    out6 = subprocess.run(prefix + ["ip6tables-save"], capture_output=True, text=True, check=False).stdout
    return out + out6


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=20)


def ns_pids(netns: str) -> list[int]:
    """Pids of every process running in the namespace."""
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


class Netns:
    """A network namespace with loopback up (so 127.0.0.0/8, including the lab's 127.0.0.2, works inside)."""

    def __init__(self) -> None:
        import secrets

        self.name = f"cxe{secrets.token_hex(4)}"
        _ip("netns", "add", self.name)
        _ip("-n", self.name, "link", "set", "lo", "up")

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def get(self, url: str, timeout: float = 5.0) -> int:
        """HTTP GET from inside the namespace: the status, or 0 when nothing answered."""
        code = ("import sys, requests\ntry:\n    print(requests.get(sys.argv[1], timeout=float(sys.argv[2]))"
                ".status_code)\nexcept requests.RequestException:\n    print(0)")
        out = subprocess.run(self.prefix + [sys.executable, "-c", code, url, str(timeout)], capture_output=True,
                             text=True, timeout=timeout + 30, check=False)
        return int(out.stdout.strip() or 0)

    def close(self) -> None:
        """Kill whatever still runs inside (a test that failed midway), then delete the namespace."""
        import signal as _signal

        for pid in ns_pids(self.name):
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
        _ip("netns", "del", self.name, check=False)


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
    #: the run's record and its outage notebook, merged (run.json + outage.json)
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
    """Runs the experiment inside its namespace against labs there, and cleans up every fault it made."""

    def __init__(self, tmp: Path, netns: Netns | Any, base_env: dict[str, str] | None = None) -> None:
        """``netns``: anything with the namespace's ``name`` and ``prefix``; ``base_env``: the run's timings and
        settings (default FAST_ENV, for the lab)."""
        self.tmp = tmp
        self.netns = netns
        self.base_env = FAST_ENV if base_env is None else base_env
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
        env.update(self.base_env)
        env.update({"CHAOSEXT_STATE_DIR": str(self.fault_dir), "CHAOSEXT_RUN_DIR": str(work / "run"),
                    "PYTHONUNBUFFERED": "1"})
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
        log = Path(env["_WORK"]) / "chaostoolkit.log"  # Chaos Toolkit's debug log of the run
        return self.popen(["chaos", "--log-file", str(log), "run", "--journal-path", str(journal),
                           str(self.experiment)], env), env

    def popen(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start ``argv`` (chaos, chaosext ...) inside the namespace, in a process group of its own."""
        bindir = str(Path(sys.executable).parent)
        env = {**env, "PATH": f"{bindir}:{env.get('PATH', '')}"}
        return subprocess.Popen(self.netns.prefix + argv, env=env, cwd=env["_WORK"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def finish(self, proc: subprocess.Popen, env: dict[str, str], lab: dict[str, Any] | None,
               timeout: float = 240) -> Outcome:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            raise AssertionError(f"chaos run did not finish in {timeout}s:\n{output[-3000:]}") from None
        journal_path = Path(env["_WORK"]) / "journal.json"
        journal = json.loads(journal_path.read_text()) if journal_path.exists() else {}
        v = subprocess.run([sys.executable, "-m", "chaosext.cli", "verdict", "--wide", str(journal_path)]
                           if _has_wide() else [sys.executable, "-m", "chaosext.cli", "verdict", str(journal_path)],
                           capture_output=True, text=True, timeout=60, check=False)
        run: dict[str, Any] = {}
        for run_file in sorted(Path(env["CHAOSEXT_RUN_DIR"]).glob("*/run.json")):
            # this test's runs dir holds this one run: its record (run.json) and its outage notebook (outage.json)
            notebook = run_file.with_name("outage.json")
            run = {**json.loads(run_file.read_text()),
                   **(json.loads(notebook.read_text()) if notebook.exists() else {})}
        return Outcome(proc.returncode, output, journal, v.returncode, v.stdout + v.stderr, run, lab or {}, env)

    def doctor(self, lab: dict[str, Any] | None, **extra: str) -> tuple[int, str]:
        """``chaosext doctor`` inside the namespace with the environment a run would get: (exit code, output)."""
        env = self.env_for(lab, **extra)
        proc = self.popen(["chaosext", "doctor"], env)
        output, _ = proc.communicate(timeout=180)
        return proc.returncode, output

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
        """Remove every fault these runs made; return the chaosext rules still left in the namespace (should be
        [])."""
        env = {**os.environ, "CHAOSEXT_STATE_DIR": str(self.fault_dir)}
        left = [line for line in iptables_rules(self.netns.name).splitlines() if "chaosext" in line.lower()]
        subprocess.run(self.netns.prefix + [sys.executable, "-m", "chaosext.cli", "restore", "--all"], env=env,
                       capture_output=True, timeout=60, check=False)
        return left


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.3) -> Any:
    """Poll ``predicate`` until it is truthy (returned) or ``timeout`` s pass (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def in_outage(env: dict[str, str]) -> bool:
    """True once the run started with ``env`` has begun its outage (run.json) and the watch has recorded its first
    tick (the outage notebook, outage.json, beside it)."""
    try:
        run_file = next(Path(env["CHAOSEXT_RUN_DIR"]).glob("*/run.json"))
        run = json.loads(run_file.read_text())
        notebook = json.loads(run_file.with_name("outage.json").read_text())
    except (StopIteration, OSError, ValueError):
        return False
    return bool((run.get("outage") or {}).get("start")) and len(notebook.get("observations") or []) >= 1


def _has_wide() -> bool:
    """Whether this chaosext's verdict has --wide (values uncut)."""
    out = subprocess.run([sys.executable, "-m", "chaosext.cli", "verdict", "--help"], capture_output=True, text=True,
                         timeout=60, check=False).stdout
    return "--wide" in out


__all__ = ["DRILL", "EXPERIMENT", "ExperimentRunner", "Outcome", "Netns", "wait_for", "in_outage", "iptables_rules",
           "FAST_ENV", "needs_root_iptables",
           "ns_pids"]
