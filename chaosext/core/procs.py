"""Processes and ports of this (Linux) host: the one place that reads ``/proc`` and picks free TCP ports.

Every chaosext process record (the lab's ``state.json``, a background k6 run, the run lock) keeps a pid together with
that process's start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot), so that a pid the kernel has
handed to another process since is never taken for ours: :func:`process_alive` checks both.
"""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = ["ProcStat", "free_port", "free_ports", "port_free", "proc_stat", "proc_start_time", "process_alive",
           "cmdline", "find_processes"]

PROC = Path("/proc")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_ports(hosts: Sequence[str]) -> list[int]:
    """One TCP port per host that was free a moment ago (the kernel picks it), all distinct: every socket is held
    until all are picked, then released."""
    socks: list[socket.socket] = []
    try:
        for host in hosts:
            sock = socket.socket(_family(host), socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (the kernel picks it)."""
    return free_ports([host])[0]


def port_free(host: str, port: int) -> bool:
    """True when a TCP server could listen on ``host:port`` now. Binds with ``SO_REUSEADDR`` as servers do, so a port
    left in TIME_WAIT counts as free."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class ProcStat(NamedTuple):
    """What chaosext reads of ``/proc/<pid>/stat``."""

    #: one letter: R running, S sleeping, D disk sleep, Z zombie, X dead, T stopped ...
    state: str
    #: start time in clock ticks since boot (field 22): with the pid, it names one process for good
    start_ticks: int


def proc_stat(pid: int) -> ProcStat | None:
    """State and start time of ``pid``, or None when there is no such process (or it cannot be read)."""
    try:
        raw = (PROC / str(int(pid)) / "stat").read_text()
        # the command name (field 2) is in parentheses and may itself contain ") "
        fields = raw[raw.rindex(")") + 2:].split()
        return ProcStat(fields[0], int(fields[19]))
    except (OSError, ValueError, IndexError):
        return None


def proc_start_time(pid: int) -> str | None:
    """The start time of ``pid`` as recorded in run files (clock ticks, a string), or None when it does not exist."""
    stat = proc_stat(pid)
    return None if stat is None else str(stat.start_ticks)


def process_alive(pid: int, start_time: str | int | None = None) -> bool:
    """True when ``pid`` runs and is not a zombie and, when ``start_time`` is given (:func:`proc_start_time`'s string
    or the ticks as an int), started at that time, i.e. it is still the process that was recorded.

    A zombie that is this process's own child is reaped on the way (``waitpid(WNOHANG)``)."""
    if pid <= 0:
        return False
    stat = proc_stat(pid)
    if stat is None:
        return False
    if stat.state in ("Z", "X"):
        with contextlib.suppress(OSError):  # ChildProcessError: not our child; someone else reaps it
            os.waitpid(pid, os.WNOHANG)
        return False
    return start_time is None or str(stat.start_ticks) == str(start_time)


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` (empty arguments left out); [] when it is gone, a zombie or not readable."""
    try:
        raw = (PROC / str(int(pid)) / "cmdline").read_bytes()
    except (OSError, ValueError):
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def find_processes(match: Callable[[list[str]], bool]) -> list[int]:
    """Pids (ascending) of the live processes, other than this one, whose command line ``match`` accepts.

    Processes without a command line (zombies, kernel threads) are never matched."""
    me = os.getpid()
    pids = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        argv = cmdline(int(entry.name))
        if argv and match(argv):
            pids.append(int(entry.name))
    return sorted(pids)
