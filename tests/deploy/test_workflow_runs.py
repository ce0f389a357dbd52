"""The gated workflow's `gameday` job, executed step by step the way a GitHub-hosted runner executes it
(tests/deploy/ghrunner.py): as a throwaway non-root user with passwordless sudo (GitHub's `runner` account), with the
real sudo (Debian's env_reset and secure_path), the runner's PATH (no .venv on it), the job's and steps' env, `if:`
conditions and GITHUB_ENV; every step inside a private network namespace, so the lab, its ports and the iptables fault
live there. `actions/checkout` and `actions/upload-artifact` are emulated minimally (copy the checkout's tracked files;
tar the upload paths as the runner user) -- no GitHub service exists here.

The install step is the real `scripts/setup --locked`: pip, offline inside the namespace, gets exactly the files of
requirements-lock.txt and requirements-tools.txt (a wheelhouse downloaded, hash-checked, before the job starts: the
stand-in for the package index the real runner reaches); what the lock lacks cannot be installed.

Before this test, the workflow called `chaosext` without sudo after `sudo bash scripts/setup` made .venv private to
root: verdict, report and the whole kind job failed with "command not found" / "Permission denied".
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.ghrunner import JobResult, Runner
from tests.experiment.experiment_util import Netns, iptables_rules, ns_pids

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.lab, pytest.mark.netns]

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "jwks-outage.yml"
OUTAGE = 15
#: what a person types into "Run workflow": the lab on the runner, a real (not dry) run
INPUTS = {"target": "local", "outage_seconds": OUTAGE, "fault_method": "iptables", "dry_run": False,
          "environment": "lab"}
#: short experiment timings, as the experiment tests use them: the runner's own environment (the job passes it on)
FAST = {"WATCH_INTERVAL": "2", "K6_RATE": "100", "ALERT_WAIT_SECONDS": "40", "BASELINE_SECONDS": "10",
        "BASELINE_MIN_REQUESTS": "30", "RECOVERY_SECONDS": "30"}


def workflow() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


@pytest.fixture
def runner_account() -> Iterator[tuple[str, Path]]:
    """A throwaway non-root user with passwordless sudo (like GitHub's `runner`) and its private root directory."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a user and a network namespace")
    for tool in ("sudo", "setpriv", "useradd", "iptables"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed: run `bash scripts/setup` (it installs sudo)")
    name = f"cxgh{secrets.token_hex(3)}"
    root = Path(tempfile.mkdtemp(prefix="chaosext-runner-", dir="/tmp"))
    sudoers = Path(f"/etc/sudoers.d/{name}")
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", str(root / "home"), "--shell",
                    "/bin/bash", "--user-group", name], check=True, capture_output=True, timeout=30)
    try:
        fd = os.open(sudoers, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{name} ALL=(ALL) NOPASSWD:ALL\n")
        subprocess.run(["visudo", "-cf", str(sudoers)], check=True, capture_output=True, timeout=30)
        os.chown(root, *_ids(name))
        yield name, root
    finally:
        sudoers.unlink(missing_ok=True)
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=30)
        subprocess.run(["groupdel", name], check=False, capture_output=True, timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _ids(name: str) -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


@pytest.fixture
def netns() -> Iterator[Netns]:
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


def wheelhouse(dest: Path) -> Path:
    """Every file the locked install may use, downloaded (hash-checked) outside the namespace."""
    dest.mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes",
                           "--disable-pip-version-check", "-r", str(REPO / "requirements-lock.txt"),
                           "-r", str(REPO / "requirements-tools.txt"), "-d", str(dest)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return dest


class ArgvWatch:
    """Samples every process's command line while the job runs; remembers any that holds one of ``needles``."""

    def __init__(self, needles: list[str]) -> None:
        self.needles = [n.encode() for n in needles]
        self.found: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples += 1
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if any(n in argv for n in self.needles):
                    self.found.append(argv.replace(b"\0", b" ").decode(errors="replace"))

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def show(job: JobResult) -> str:
    return "\n".join(f"--- {s.name}: {s.outcome} ({s.returncode})\n{s.output[-2500:]}" for s in job.steps
                     if s.outcome != "skipped")


def test_gameday_job_runs_end_to_end_as_the_runner_user(runner_account: tuple[str, Path], netns: Netns) -> None:
    user, root = runner_account
    canaries = [f"canary-{secrets.token_hex(8)}", f"canary-{secrets.token_hex(8)}"]
    # secrets the lab ignores (extra headers to its Prometheus, a bearer token to its Alertmanager): where they go is
    # watched; TOKEN_CLIENT_* stay unset, so the lab's own client is used
    job_secrets = {"PROMETHEUS_HEADERS": json.dumps({"X-Chaosext-Canary": canaries[0]}),
                   "ALERTMANAGER_BEARER_TOKEN": canaries[1]}
    # this test's own fault records, locks and lab (other tests run as root on this machine too): directories of
    # root's, as chaosext run as root requires (not the runner user's root/, whose owner could swap them)
    private = Path(tempfile.mkdtemp(prefix="chaosext-gameday-"))
    runner_env = {**FAST, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse(root / "wheelhouse")),
                  "CHAOSEXT_STATE_DIR": str(private / "faults")}
    runner = Runner(workflow(), REPO, root, user, netns=netns.name, runner_env=runner_env, step_timeout=600)

    try:
        with ArgvWatch(canaries) as watch:
            job = runner.run_job("gameday", INPUTS, vars_={"TENANTS": "t01,t02,t03",
                                                           "CHAOSEXT_LAB_DIR": str(private / "lab")},
                                 secrets=job_secrets)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    print(show(job))

    assert job.ok, "the gameday job failed:\n" + show(job)
    # every step that does something ran; the panic button came first after the run, the verdict judged it
    order = job.order()
    for name in ("Install", "Start the embedded lab", "Pre-flight", "Run the experiment", "Restore (always)",
                 "Verdict", "Report", "Collect", "Upload", "Stop the lab"):
        assert any(name in n for n in order), f"step {name!r} did not run: {order}"
    position = {key: next(i for i, n in enumerate(order) if key in n) for key in
                ("Run the experiment", "Restore", "Verdict", "Report", "Upload")}
    assert position["Run the experiment"] + 1 == position["Restore"] < position["Verdict"] < position["Report"] \
        < position["Upload"]
    assert "PASS" in job.step("Verdict").output, job.step("Verdict").output

    # the runner user can read what it uploads: journal, report, and the lab's audit trail with the stale-key switch
    with tarfile.open(root / "artifacts" / "jwks-outage-artefacts.tar") as tar:
        names = set(tar.getnames())
        assert {"artefacts/journal.json", "artefacts/report.html", "artefacts/audit.jsonl"} <= names, names
        audit = tar.extractfile("artefacts/audit.jsonl").read().decode()  # type: ignore[union-attr]
    degraded = {e["service"] for e in map(json.loads, audit.splitlines()) if e["action"] == "auth.degraded"}
    assert degraded == {"policy", "vuln", "notify"}, "every service served stale keys and audited auth.degraded"

    # secrets: never in an argv, never in the install step's environment
    assert watch.samples > 100
    assert not watch.found, f"a secret appeared in a command line: {watch.found[:3]}"
    install = job.step("Install")
    assert not {k for k, v in install.env.items() if any(c in v for c in canaries)}
    assert any(canaries[0] in v for v in job.step("Pre-flight").env.values())

    # nothing left: the lab is down, k6 and the watchdog are gone, no chaosext rule in the namespace
    assert not ns_pids(netns.name), subprocess.run(["ps", "-o", "pid,args", "-p", ",".join(
        map(str, ns_pids(netns.name)))], capture_output=True, text=True, check=False).stdout
    assert "chaosext" not in iptables_rules(netns.name).lower()

    # the kind job runs only when the kind environment is chosen
    assert not runner.run_job("kind", INPUTS).ran
