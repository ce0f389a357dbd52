"""The supervisor between chaosext and a background k6: ``python3 -m chaosext.load.runner [options] -- k6 run ...``.

It ties k6 to the process that started it (the experiment run):

- it starts k6 in a process group of its own and forwards SIGINT / SIGTERM to that group (SIGINT: k6 stops and still
  writes its summary; a second signal aborts it);
- it learns when its parent dies -- ``PR_SET_PDEATHSIG`` (``--pdeathsig``) plus a poll of its parent pid every
  0.5 s -- and then SIGINTs k6, waits ``--kill-after`` seconds (default 3) and SIGKILLs k6's group;
- k6 itself gets ``PR_SET_PDEATHSIG=SIGKILL``, so a SIGKILLed runner takes k6 with it;
- it writes k6's pid (``--pid-file``, JSON ``{"pid", "start_time"}``) and, when k6 exits, k6's exit code
  (``--exit-file``; 128+N when killed by signal N, like a shell) atomically, so any process can read them.

Linux fires ``PR_SET_PDEATHSIG`` when the parent *thread* that forked the runner exits, not the parent process:
``start_k6`` asks for it only when called from the main thread (Chaos Toolkit runs method activities and control
hooks there); the parent-pid poll covers every other case within 0.5 s.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

from chaosext.core import safefs
from chaosext.core.procs import proc_start_time

__all__ = ["main", "set_pdeathsig"]

PR_SET_PDEATHSIG = 1


def set_pdeathsig(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) dies; False if prctl failed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _write_atomic(path: str, text: str) -> None:
    safefs.write_file(path, text)  # root-safe: a random temp name in a safe directory, then a rename


def _say(message: str) -> None:
    print(f"chaosext runner: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the k6 command after ``--``; exit with its exit code."""
    parser = argparse.ArgumentParser(prog="python3 -m chaosext.load.runner")
    parser.add_argument("--exit-file", required=True)
    parser.add_argument("--pid-file", default="")
    parser.add_argument("--parent-pid", type=int, default=0, help="the owner; k6 stops when it is gone")
    parser.add_argument("--pdeathsig", action="store_true", help="also use PR_SET_PDEATHSIG (parent thread's death)")
    parser.add_argument("--kill-after", type=float, default=3.0, help="seconds from SIGINT to SIGKILL when orphaned")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("give the command after --")
    parent = args.parent_pid or os.getppid()
    orphaned = {"at": 0.0}

    def parent_gone(*_: object) -> None:
        if not orphaned["at"]:
            orphaned["at"] = time.monotonic()

    signal.signal(signal.SIGUSR1, parent_gone)
    if args.pdeathsig:
        set_pdeathsig(signal.SIGUSR1)
    if os.getppid() != parent:  # it died before prctl took effect
        parent_gone()

    child = {"pid": 0, "pending": 0}

    def forward(signum: int, _frame: object) -> None:
        if not child["pid"]:
            child["pending"] = signum  # arrived before k6 started: sent right after
            return
        try:
            os.killpg(child["pid"], signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def child_setup() -> None:
        set_pdeathsig(signal.SIGKILL)

    proc = subprocess.Popen(cmd, process_group=0, preexec_fn=child_setup)
    child["pid"] = proc.pid
    if args.pid_file:
        _write_atomic(args.pid_file, json.dumps({"pid": proc.pid, "start_time": proc_start_time(proc.pid)}))
    if child["pending"]:
        forward(child["pending"], None)
    stage = ""
    while True:
        try:
            rc = proc.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        if not orphaned["at"] and os.getppid() != parent:
            parent_gone()
        if orphaned["at"] and not stage:
            _say(f"the process that started k6 (pid {parent}) is gone: stopping k6 (SIGINT)")
            forward(signal.SIGINT, None)
            stage = "INT"
        elif stage == "INT" and time.monotonic() - orphaned["at"] > args.kill_after:
            _say(f"k6 still running {args.kill_after:g} s after SIGINT: SIGKILL")
            forward(signal.SIGKILL, None)
            stage = "KILL"
    code = rc if rc >= 0 else 128 - rc
    _write_atomic(args.exit_file, f"{code}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
