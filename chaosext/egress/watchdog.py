"""The dead-man switch: a detached process that removes a fault when its run dies, or at its deadline at the latest.

:func:`spawn` starts ``python3 -m chaosext.egress.watchdog``, which forks once more and exits, so the watchdog is
re-parented to init, runs in its own session, and survives SIGKILL of the chaosext process (and of its process
group). It lifts the fault (the driver's ``revert``), deletes the fault record and exits:

- **heartbeat** (optional): when the run's heartbeat file (``chaosext.run.heartbeat``, renewed every 2 s by the
  running experiment) is older than ``grace`` (``HEARTBEAT_GRACE``, default 10 s) -- the experiment process was
  SIGKILLed, OOM-killed or hangs. It polls every second, so the fault is lifted within grace + ~2 s; it also stops
  the k6 runs recorded for the fault's run id (``owner_run_id`` in the k6 runs dir ``k6_dir``). A heartbeat file that
  does not exist counts as beating last when the watchdog started.
- **deadline**: at ``expires_at`` + 1 s, whatever the heartbeat says (next to the kernel's own ``--datestop``).

The deadline is the outage plus a margin that is small next to it: ``chaosext.core.limits.deadline_seconds`` =
``OUTAGE_SECONDS + max(15, ceil(5 % of OUTAGE_SECONDS))``; ``check_deadline`` refuses an outage whose deadline
exceeds the cap (``MAX_OUTAGE_SECONDS``, default 3600) with the largest outage that fits.
``restore`` lifts the fault itself, then stands the watchdog down with SIGUSR1 (:func:`stop`: it exits without a
second revert). Its log: ``<state_dir>/<run_id>.watchdog.log``.

Hardened (issue 27): the fault spec (URLs, driver options) reaches the watchdog on its stdin, never its argv (``ps``
shows only the run id and the heartbeat path); it runs with a minimal environment (``chaosext.core.procs.minimal_env``
plus the Kubernetes credentials the revert needs); SIGTERM -- from an operator or a shutdown -- makes it lift the
fault before it exits; it measures its deadline and the heartbeat's silence on the monotonic clock (the
wall clock may jump; the kernel's own ``--datestop`` is wall-clock UTC and stays so: that is how iptables' ``time``
match works); and :func:`find` / :func:`stop` only ever see watchdogs that run as the user chaosext runs as, with
exactly the watchdog's command line (a look-alike another user starts neither blocks a stale lock nor gets signalled).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from chaosext.core import ids, safefs
from chaosext.core.errors import ChaosextError
from chaosext.core.names import check_run_id
from chaosext.core.procs import find_processes, minimal_env, proc_start_time, process_alive, signal_verified
from chaosext.egress import build_driver
from chaosext.egress.base import FaultError, FaultSpec, delete_record, state_dir
from chaosext.load import k6
from chaosext.run.heartbeat import HEARTBEAT_GRACE, age

__all__ = ["spawn", "stop", "find", "main", "GRACE_SECONDS", "HEARTBEAT_GRACE", "POLL_SECONDS"]

GRACE_SECONDS = 1.0
#: How often the watchdog reads the heartbeat.
POLL_SECONDS = 1.0
MODULE = "chaosext.egress.watchdog"


def spawn(spec: FaultSpec, heartbeat: str = "", grace: float = HEARTBEAT_GRACE, k6_dir: str = "",
          env: Mapping[str, str] | None = None) -> int:
    """Start a detached watchdog for ``spec``; returns its pid. With ``heartbeat`` (a file path) it also lifts the
    fault, and stops the k6 runs of ``spec.run_id`` found in ``k6_dir`` (default: the k6 runs dir of this
    environment), once that file is older than ``grace`` seconds. The spec goes to the watchdog's stdin (never its
    argv); its environment is :func:`chaosext.core.procs.minimal_env` plus ``env`` (credentials the revert needs, e.g.
    KUBERNETES_*: only the same user can read a process's environment, unlike its argv)."""
    if grace <= 0:
        raise FaultError(f"heartbeat grace {grace!r}: give seconds > 0 (HEARTBEAT_GRACE, default 10)")
    # argv names the run and its target (so `ps` tells an operator which fault it guards), nothing else of the spec
    argv = [sys.executable, "-m", MODULE, "--run-id", check_run_id(spec.run_id), "--target", spec.target]
    if heartbeat:
        argv += ["--heartbeat", os.path.abspath(heartbeat), "--grace", str(float(grace))]
        if k6_dir:
            argv += ["--k6-dir", os.path.abspath(k6_dir)]
    child_env = minimal_env(env)
    child_env["CHAOSEXT_STATE_DIR"] = str(state_dir())  # the same records and log, whatever HOME says
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True, text=True, env=child_env, umask=0o077)
    try:
        if proc.stdin:
            proc.stdin.write(json.dumps(spec.to_dict()))
            proc.stdin.close()
        line = proc.stdout.readline() if proc.stdout else ""
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise FaultError(f"the watchdog did not start within 10 s; try `{' '.join(argv[:3])} --help` by hand to see "
                         f"why") from None
    if not line.strip().isdigit():
        raise FaultError(f"the watchdog did not start (exit {proc.returncode}); run `{' '.join(argv[:3])} --help` "
                         f"by hand to see why")
    return int(line)


def _is_watchdog(argv: list[str], run_id: str = "") -> bool:
    """Exactly a watchdog's command line (``<python> -m chaosext.egress.watchdog --run-id <run id> ...``)."""
    return (len(argv) >= 5 and argv[1:4] == ["-m", MODULE, "--run-id"] and ids.is_run_id(argv[4])
            and (not run_id or argv[4] == run_id))


def find(run_id: str = "") -> list[int]:
    """Pids of running watchdogs (of ``run_id`` only, if given): processes of the user chaosext runs as with exactly
    a watchdog's command line."""
    if run_id:
        check_run_id(run_id)
    return find_processes(lambda argv: _is_watchdog(argv, run_id), uid=os.geteuid())


def stop(run_id: str, wait: float = 5.0, revert: bool = False) -> list[int]:
    """Stop every watchdog of ``run_id`` and wait up to ``wait`` seconds until they are gone (so that a lagging revert
    never meets a fault made after this call); their pids. The caller has lifted the fault itself: the watchdog gets
    SIGUSR1 and exits without a second revert (at 1,000 targets a second revert would double the work); with
    ``revert``, SIGTERM: it lifts the fault (if still there) before it exits."""
    sig = signal.SIGTERM if revert else signal.SIGUSR1
    stopped: list[tuple[int, str | None]] = []
    for pid in find(run_id):
        start = proc_start_time(pid)
        if signal_verified(pid, start, lambda argv: _is_watchdog(argv, run_id), sig, group=False,
                           uid=os.geteuid()):
            stopped.append((pid, start))
    end = time.monotonic() + wait
    while any(process_alive(p, s) for p, s in stopped) and time.monotonic() < end:
        time.sleep(0.05)
    return [p for p, _ in stopped]


def _log(run_id: str, message: str) -> None:
    try:
        fd = safefs.open_append(state_dir() / f"{check_run_id(run_id)}.watchdog.log")
        with os.fdopen(fd, "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}\n")
    except (OSError, ValueError):
        pass


def _stop_k6(spec: FaultSpec, k6_dir: str) -> None:
    """Stop the k6 runs recorded for the fault's run id (a dead run's load must not go on)."""
    try:
        base = k6.runs_dir(k6_dir)
        runs = [r for r in k6.owned_runs(base, spec.run_id) if r["alive"]]
        if not runs:
            _log(spec.run_id, f"no running k6 of run {spec.run_id} in {base}")
        for rec in runs:
            out = k6.stop_run(rec, timeout=5)
            _log(spec.run_id, f"stopped k6 run {rec['run_id']} (pid {rec['pid']}): exit {out['exit_code']}"
                              f"{', forced ' + out['forced'] if out['forced'] else ''}")
    except Exception as exc:
        _log(spec.run_id, f"stopping k6 FAILED: {exc}")


class Pulse:
    """The heartbeat as the watchdog sees it: how long its modification time has not changed, measured on this
    process's monotonic clock (a wall clock that jumps neither kills a live run nor keeps a dead one alive). The
    file's age when the watchdog starts is taken once from the wall clock; a missing file counts as beating then."""

    def __init__(self, path: str, grace: float, clock: Any = time.monotonic) -> None:
        self.path, self.grace, self.clock = path, grace, clock
        self.mtime = safefs.mtime(path)
        initial = age(path)
        self.changed_at = clock() - min(initial if initial is not None else 0.0, grace + 1)

    def stale(self) -> str:
        """Why the run counts as dead ('' while the heartbeat changed within ``grace`` seconds)."""
        now = self.clock()
        mtime = safefs.mtime(self.path)
        if mtime is not None and mtime != self.mtime:
            self.mtime, self.changed_at = mtime, now
        silent = now - self.changed_at
        return f"heartbeat {self.path} silent for {silent:.1f} s (grace {self.grace:g} s)" if silent > self.grace \
            else ""


class _Terminated(ChaosextError):
    """SIGTERM arrived: lift the fault now (raised by the signal handler, caught by the watch loop)."""


class _StoodDown(ChaosextError):
    """SIGUSR1 arrived: ``restore`` lifted the fault itself; exit without a revert."""


def _quiet() -> None:
    """From here on no signal of ours interrupts what the watchdog does (a revert, or its exit)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _on_sigterm(*_: Any) -> None:
    _quiet()  # once: the revert itself must not be interrupted
    raise _Terminated


def _on_sigusr1(*_: Any) -> None:
    _quiet()
    raise _StoodDown


def _watch(spec: FaultSpec, heartbeat: str = "", grace: float = HEARTBEAT_GRACE, k6_dir: str = "") -> int:
    deadline = time.monotonic() + (spec.expires_at + GRACE_SECONDS - time.time())  # wall clock read once
    dead = ""
    pulse: Pulse | None = None
    try:  # a signal may arrive from the first line on
        _log(spec.run_id, f"watching {spec.via} {spec.target} until {spec.expires_at:.0f}"
                          + (f", heartbeat {heartbeat} (grace {grace:g} s)" if heartbeat else ""))
        pulse = Pulse(heartbeat, grace) if heartbeat else None
        while (left := deadline - time.monotonic()) > 0:
            if pulse is not None and (dead := pulse.stale()):
                break
            time.sleep(min(left, POLL_SECONDS if pulse is not None else 30.0))
        why = f"run dead ({dead})" if dead else "deadline reached"
        _quiet()  # from here on nothing interrupts the revert
    except _Terminated:
        why = "SIGTERM"
    except _StoodDown:
        _log(spec.run_id, "stood down: restore lifted the fault itself")
        return 0
    try:
        result = build_driver(spec.via, spec.options).revert(spec)
        _log(spec.run_id, f"{why}, reverted: {json.dumps(result)}")
        rc = 0
    except Exception as exc:
        _log(spec.run_id, f"{why}, revert FAILED: {exc}")
        rc = 1
    delete_record(spec.run_id)
    if pulse is not None and (dead or pulse.stale()):
        _stop_k6(spec, k6_dir)
    return rc


def main(argv: list[str] | None = None) -> int:
    """Entry point of the detached process (double fork, new session, then wait for the deadline)."""
    parser = argparse.ArgumentParser(prog=f"python3 -m {MODULE}")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--target", default="", help="the fault's target (shown by ps; must be the spec's)")
    parser.add_argument("--heartbeat", default="", help="the run's heartbeat file")
    parser.add_argument("--grace", type=float, default=HEARTBEAT_GRACE, help="seconds without a heartbeat = dead")
    parser.add_argument("--k6-dir", default="", help="k6 runs dir holding the run's k6 records")
    parser.add_argument("--foreground", action="store_true", help="do not fork (debugging)")
    parser.epilog = "The FaultSpec comes as JSON on stdin (never in argv: it may hold URLs and options)."
    args = parser.parse_args(argv)
    try:
        spec = FaultSpec.from_dict(json.loads(sys.stdin.read()))
    except (ValueError, FaultError) as exc:
        parser.error(f"no usable fault spec on stdin: {exc}")
    if spec.run_id != args.run_id or (args.target and args.target != spec.target):
        parser.error(f"--run-id {args.run_id} / --target {args.target} are not the spec's")
    signal.signal(signal.SIGTERM, _on_sigterm)  # from here on SIGTERM lifts the fault
    signal.signal(signal.SIGUSR1, _on_sigusr1)  # and SIGUSR1 (restore lifted it) ends the watch without a revert
    if not args.foreground:
        pid = os.fork()
        if pid:
            print(pid, flush=True)
            os._exit(0)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return _watch(spec, args.heartbeat, args.grace, args.k6_dir)


if __name__ == "__main__":
    sys.exit(main())
