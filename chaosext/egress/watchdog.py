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
``restore`` stops the watchdog early with SIGTERM (:func:`stop`). Its log: ``<state_dir>/<run_id>.watchdog.log``.
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
from pathlib import Path

from chaosext.core.procs import find_processes
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
    environment), once that file is older than ``grace`` seconds. ``env`` adds to its environment (credentials the
    revert needs, e.g. KUBERNETES_*: only the same user can read a process's environment, unlike its argv)."""
    if grace <= 0:
        raise FaultError(f"heartbeat grace {grace!r}: give seconds > 0 (HEARTBEAT_GRACE, default 10)")
    argv = [sys.executable, "-m", MODULE, "--run-id", spec.run_id, "--spec", json.dumps(spec.to_dict())]
    if heartbeat:
        argv += ["--heartbeat", str(Path(heartbeat).resolve()), "--grace", str(float(grace))]
        if k6_dir:
            argv += ["--k6-dir", str(Path(k6_dir).resolve())]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True, text=True,
                            env={**os.environ, **env} if env else None)
    try:
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


def find(run_id: str = "") -> list[int]:
    """Pids of running watchdogs (of ``run_id`` only, if given)."""
    return find_processes(lambda argv: MODULE in argv and (not run_id or run_id in argv))


def stop(run_id: str) -> list[int]:
    """SIGTERM every watchdog of ``run_id``; returns their pids."""
    stopped: list[int] = []
    for pid in find(run_id):
        try:
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
        except ProcessLookupError:
            pass
    return stopped


def _log(run_id: str, message: str) -> None:
    try:
        state_dir().mkdir(parents=True, exist_ok=True)
        with open(state_dir() / f"{run_id}.watchdog.log", "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}\n")
    except OSError:
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


def _heartbeat_stale(heartbeat: str, grace: float, since: float) -> str:
    """Why the run counts as dead ('' while its heartbeat is younger than ``grace``)."""
    seconds = age(heartbeat)
    if seconds is None:
        seconds = time.time() - since
    return f"heartbeat {heartbeat} is {seconds:.1f} s old (grace {grace:g} s)" if seconds > grace else ""


def _watch(spec: FaultSpec, heartbeat: str = "", grace: float = HEARTBEAT_GRACE, k6_dir: str = "") -> int:
    started = time.time()
    _log(spec.run_id, f"watching {spec.via} {spec.target} until {spec.expires_at:.0f}"
                      + (f", heartbeat {heartbeat} (grace {grace:g} s)" if heartbeat else ""))
    dead = ""
    while (left := spec.expires_at + GRACE_SECONDS - time.time()) > 0:
        if heartbeat and (dead := _heartbeat_stale(heartbeat, grace, started)):
            break
        time.sleep(min(left, POLL_SECONDS if heartbeat else 30.0))
    why = f"run dead ({dead})" if dead else "deadline reached"
    try:
        result = build_driver(spec.via, spec.options).revert(spec)
        _log(spec.run_id, f"{why}, reverted: {json.dumps(result)}")
        rc = 0
    except Exception as exc:
        _log(spec.run_id, f"{why}, revert FAILED: {exc}")
        rc = 1
    delete_record(spec.run_id)
    if heartbeat and (dead or _heartbeat_stale(heartbeat, grace, started)):
        _stop_k6(spec, k6_dir)
    return rc


def main(argv: list[str] | None = None) -> int:
    """Entry point of the detached process (double fork, new session, then wait for the deadline)."""
    parser = argparse.ArgumentParser(prog=f"python3 -m {MODULE}")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--spec", required=True, help="FaultSpec as JSON")
    parser.add_argument("--heartbeat", default="", help="the run's heartbeat file")
    parser.add_argument("--grace", type=float, default=HEARTBEAT_GRACE, help="seconds without a heartbeat = dead")
    parser.add_argument("--k6-dir", default="", help="k6 runs dir holding the run's k6 records")
    parser.add_argument("--foreground", action="store_true", help="do not fork (debugging)")
    args = parser.parse_args(argv)
    spec = FaultSpec.from_dict(json.loads(args.spec))
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
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    return _watch(spec, args.heartbeat, args.grace, args.k6_dir)


if __name__ == "__main__":
    sys.exit(main())
