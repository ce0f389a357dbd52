"""The lab's processes: start them detached, wait until they answer their health URL, tell whether a recorded pid is
still ours, find them by command line, and stop them.

A lab process is recognised by its command line, which always names the lab's state directory (and is one of the
Authority, a service, Prometheus/Alertmanager or Envoy); a pid recorded in state.json counts only while it also has
the recorded start time (chaosext.core.procs). Nothing else is ever signalled.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosext.core import procs, safefs
from chaosext.core.labstate import resolve_state_dir
from chaosext.lab.plan import Component, LabError

__all__ = ["Started", "Health", "start", "wait_ready", "record", "is_lab_cmdline", "is_ours", "find_lab_processes",
           "terminate", "stop_started", "http_ok", "recorded_alive", "health"]

#: the repository root on the children's PYTHONPATH, so ``python -m chaosext.lab.*`` runs this very code
_PKG_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass
class Started:
    """A component this `up` started: its plan, its process and its log file."""

    comp: Component
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Health:
    """A recorded component as found now."""

    pid: int
    #: the recorded process still runs (same start time, a lab command line)
    alive: bool
    #: alive and its health URL answers 200
    healthy: bool
    detail: str


def start(comp: Component, state_dir: Path) -> Started:
    """Start ``comp`` in a session of its own (output to ``<state>/logs/<name>.log``, 0600, opened root-safe; the
    previous run's log is kept as ``<name>.log.1``), with a minimal environment (chaosext.core.procs.minimal_env)."""
    name = f"{comp.name}.log"
    with safefs.open_dir(state_dir, create=True) as sd, sd.subdir("logs") as logs:
        if logs.exists(name):
            logs.replace(name, f"{name}.1")  # keep the previous run's log for post-mortems
        out = logs.append_fd(name)
    env = procs.minimal_env({"PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PKG_ROOT, env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.Popen(comp.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=state_dir, env=env, start_new_session=True, close_fds=True, umask=0o077)
    except OSError as exc:
        raise LabError(f"cannot start {comp.name} ({comp.argv[0]}): {exc}") from exc
    finally:
        os.close(out)
    return Started(comp, proc, state_dir / "logs" / name)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join("    | " + line for line in text) or "    | (empty log)"


def http_ok(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """(healthy, detail) of a health URL: healthy only on HTTP 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"unreachable ({reason})"


def wait_ready(batch: list[Started], deadline: float) -> None:
    """Wait until every started component answers 200 on its health URL; LabError (with the log's last lines) when
    one exits or ``deadline`` (``time.monotonic()``) passes first."""
    pending = {s.comp.name: s for s in batch}
    while pending:
        for name, item in list(pending.items()):
            code = item.proc.poll()
            if code is not None:
                raise LabError(f"{name} exited with code {code} while starting; last lines of {item.log}:\n"
                               f"{_log_tail(item.log)}")
            if http_ok(item.comp.health, timeout=1.0)[0]:
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            name, item = next(iter(pending.items()))
            raise LabError(f"{name} not ready: {item.comp.health} did not answer 200 in time (--ready-timeout); "
                           f"last lines of {item.log}:\n{_log_tail(item.log)}")
        time.sleep(0.2)


def record(item: Started) -> dict[str, Any]:
    """The component's entry in state.json (pid with its start time, URLs, log, command line)."""
    comp = item.comp
    stat = procs.proc_stat(item.proc.pid)
    return {"pid": item.proc.pid, "start_ticks": stat.start_ticks if stat else None, "url": comp.url,
            "health": comp.health, "log": str(item.log), "port": comp.port, "argv": comp.argv, **comp.extra}


def _marker(state_dir: str) -> str:
    return state_dir.rstrip("/") + "/"


def is_lab_cmdline(argv: list[str], state_dir: str) -> bool:
    """True for a lab component whose arguments name this state directory."""
    if not any(_marker(state_dir) in a for a in argv):
        return False
    joined = " ".join(argv)
    return ("chaosext.lab.authority" in joined or "chaosext.lab.service" in joined
            or any("--config.file=" in a for a in argv) or "--config-path" in argv)


def is_ours(pid: int, state_dir: str, start_ticks: int | str | None = None) -> bool:
    """The pid is alive and is still the lab process that was recorded (pids get reused): same start time, when one
    is given, and a command line of this lab (chaosext.core.procs.is_process, the one identity check)."""
    return bool(pid) and procs.is_process(pid, start_ticks, lambda argv: is_lab_cmdline(argv, state_dir))


def find_lab_processes(state_dir: str | os.PathLike[str]) -> list[int]:
    """Pids of every live process whose command line makes it a component of the lab in state_dir."""
    sd = str(resolve_state_dir(state_dir))
    return procs.find_processes(lambda argv: is_lab_cmdline(argv, sd))


def _signal_all(sig: int, pids: list[int], state_dir: str) -> None:
    """``sig`` to each pid that is still ours: to its process group when it leads one (they all do)."""
    for pid in pids:
        procs.signal_verified(pid, None, lambda argv: is_lab_cmdline(argv, state_dir), sig)


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    end = time.monotonic() + seconds
    while True:
        left = [p for p in pids if procs.process_alive(p)]
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


def terminate(pids: list[int], state_dir: str, grace: float) -> list[int]:
    """SIGTERM (process group), then SIGKILL after ``grace`` s; only our pids. Returns the pids still alive."""
    targets = [p for p in pids if is_ours(p, state_dir)]
    _signal_all(signal.SIGTERM, targets, state_dir)
    left = _wait_gone(targets, grace)
    if left:
        _signal_all(signal.SIGKILL, left, state_dir)
        left = _wait_gone(left, 5.0)
    return left


def stop_started(started: list[Started], state_dir: Path) -> list[int]:
    """Stop (and reap) what this `up` started after a failure; returns the pids that would not stop."""
    left = terminate([s.proc.pid for s in started], str(state_dir), grace=5.0)
    for item in started:
        with contextlib.suppress(Exception):
            item.proc.wait(timeout=1)
    return left


def recorded_alive(comp: dict[str, Any], state_dir: Path) -> bool:
    """The process of a component entry of state.json still runs: same pid and start time, this lab's command
    line."""
    return is_ours(int(comp.get("pid") or 0), str(state_dir), comp.get("start_ticks"))


def health(comp: dict[str, Any], state_dir: Path) -> Health:
    """How the component of a state.json entry is now: its process running and its health URL answering 200."""
    pid = int(comp.get("pid") or 0)
    if not recorded_alive(comp, state_dir):
        return Health(pid, False, False, "process not running")
    if not comp.get("health"):
        return Health(pid, True, False, "no health URL in state.json")
    healthy, detail = http_ok(comp["health"])
    return Health(pid, True, healthy, detail)
