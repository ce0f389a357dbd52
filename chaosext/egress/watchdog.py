"""The dead-man switch: a detached process that removes a fault at its deadline if nothing else did.

:func:`spawn` starts ``python3 -m chaosext.egress.watchdog``, which forks once more and exits, so the watchdog is
re-parented to init, runs in its own session, and survives SIGKILL of the chaosext process (and of its process
group). At ``expires_at`` + grace it reverts the fault through the same driver, deletes the fault record and exits.
``restore`` stops it early with SIGTERM (:func:`stop`). Its log: ``<state_dir>/<run_id>.watchdog.log``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chaosext.egress.base import FaultError, FaultSpec, delete_record, state_dir

__all__ = ["spawn", "stop", "find", "main", "GRACE_SECONDS"]

GRACE_SECONDS = 1.0
MODULE = "chaosext.egress.watchdog"


def spawn(spec: FaultSpec) -> int:
    """Start a detached watchdog for ``spec``; returns its pid."""
    argv = [sys.executable, "-m", MODULE, "--run-id", spec.run_id, "--spec", json.dumps(spec.to_dict())]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise FaultError("the watchdog did not start within 10 s") from None
    if not line.strip().isdigit():
        raise FaultError(f"the watchdog did not start (exit {proc.returncode})")
    return int(line)


def find(run_id: str = "") -> list[int]:
    """Pids of running watchdogs (of ``run_id`` only, if given)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if MODULE.encode() in args and (not run_id or run_id.encode() in args):
            pids.append(int(entry.name))
    return pids


def stop(run_id: str) -> list[int]:
    """SIGTERM every watchdog of ``run_id``; returns their pids."""
    stopped = []
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


def _watch(spec: FaultSpec) -> int:
    from chaosext.egress import build_driver

    _log(spec.run_id, f"watching {spec.via} {spec.target} until {spec.expires_at:.0f}")
    while (left := spec.expires_at + GRACE_SECONDS - time.time()) > 0:
        time.sleep(min(left, 30.0))
    try:
        result = build_driver(spec.via, spec.options).revert(spec)
        _log(spec.run_id, f"deadline reached, reverted: {json.dumps(result)}")
        rc = 0
    except Exception as exc:  # noqa: BLE001 - log whatever broke; nothing else will
        _log(spec.run_id, f"deadline reached, revert FAILED: {exc}")
        rc = 1
    delete_record(spec.run_id)
    return rc


def main(argv: list[str] | None = None) -> int:
    """Entry point of the detached process (double fork, new session, then wait for the deadline)."""
    parser = argparse.ArgumentParser(prog=f"python3 -m {MODULE}")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--spec", required=True, help="FaultSpec as JSON")
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
    return _watch(spec)


if __name__ == "__main__":
    sys.exit(main())
