"""Processes and ports of this (Linux) host: the one place that reads ``/proc`` and picks free TCP ports.

Every chaosext process record (the lab's ``state.json``, a background k6 run, the run lock) keeps a pid together with
that process's start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot), so that a pid the kernel has
handed to another process since is never taken for ours: :func:`process_alive` checks both.

Nothing is ever signalled on a record's word alone: :func:`is_process` is the one identity check (pid + start time +
a command line the caller recognises + optionally the owner), used by ``chaosext lab down``, the k6 runs and the
watchdog look-up; :func:`signal_verified` checks it again right before it signals. :func:`minimal_env` is the
environment chaosext gives its children (an explicit allow-list, never root's whole environment).
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = ["ProcStat", "free_port", "free_ports", "port_free", "proc_stat", "proc_start_time", "process_alive",
           "cmdline", "process_uid", "netns_id", "is_process", "signal_verified", "find_processes", "CHILD_ENV_KEEP",
           "minimal_env"]

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


def process_uid(pid: int) -> int | None:
    """The effective uid of ``pid`` (``/proc/<pid>/status``), or None when it is gone."""
    try:
        for line in (PROC / str(int(pid)) / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[2])
    except (OSError, ValueError, IndexError):
        return None
    return None


def netns_id(pid: int | str = "self") -> str:
    """The network namespace ``pid`` (default: this process) runs in, as ``<device>:<inode>`` of its
    ``/proc/<pid>/ns/net``: two processes share a network namespace exactly when this is equal. '' when unknown."""
    try:
        st = os.stat(PROC / str(pid) / "ns" / "net")
    except (OSError, ValueError):
        return ""
    return f"{st.st_dev}:{st.st_ino}"


#: how long :func:`is_process` waits for the command line of a live process that shows none yet (just exec'd)
EXEC_SETTLE_SECONDS = 0.5


def is_process(pid: int, start_time: str | int | None, match: Callable[[list[str]], bool],
               uid: int | None = None) -> bool:
    """True when ``pid`` is alive, started at ``start_time`` (when given), its command line is one ``match``
    accepts and, with ``uid``, it runs as that effective user: the recorded process and nothing else."""
    if pid <= 0 or not process_alive(pid, start_time):
        return False
    if uid is not None and process_uid(pid) != uid:
        return False
    argv = cmdline(pid)
    # a process just exec'd (its Popen has returned) shows no command line until the kernel has set up its new
    # argv: wait for it, briefly, while it is still the recorded process (a kernel thread never has one)
    deadline = time.monotonic() + EXEC_SETTLE_SECONDS
    while not argv and time.monotonic() < deadline and process_alive(pid, start_time):
        time.sleep(0.01)
        argv = cmdline(pid)
    return bool(argv) and match(argv)


def signal_verified(pid: int, start_time: str | int | None, match: Callable[[list[str]], bool], sig: int,
                    group: bool = True, uid: int | None = None) -> bool:
    """Send ``sig`` to ``pid`` -- to its process group when ``group`` and it leads one -- only when it is still the
    recorded process (:func:`is_process`, checked right before). True when a signal was sent."""
    if not is_process(pid, start_time, match, uid):
        return False
    try:
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def find_processes(match: Callable[[list[str]], bool], uid: int | None = None) -> list[int]:
    """Pids (ascending) of the live processes, other than this one, whose command line ``match`` accepts (and, with
    ``uid``, that run as that effective user).

    Processes without a command line (zombies, kernel threads) are never matched."""
    me = os.getpid()
    pids = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        argv = cmdline(int(entry.name))
        if argv and match(argv) and (uid is None or process_uid(int(entry.name)) == uid):
            pids.append(int(entry.name))
    return sorted(pids)


#: what a child of chaosext keeps of chaosext's environment: where programs and Python's modules are, the locale,
#: the time zone, the home directory (kubeconfig's default), proxies and CA bundles (to reach the same APIs), the
#: Kubernetes variables of a pod, and chaosext's own directories. Everything else (root's tokens, backend passwords,
#: cloud credentials ...) stays out; a child that needs a secret gets it explicitly (``extra``).
CHILD_ENV_KEEP = (
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE",
    "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "CHAOSTOOLKIT_IN_POD",
    "CHAOSEXT_STATE_DIR", "CHAOSEXT_K6_DIR", "CHAOSEXT_LAB_DIR", "CHAOSEXT_RUN_DIR",
)


def minimal_env(extra: Mapping[str, str] | None = None, keep: Iterable[str] = (),
                source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: :data:`CHILD_ENV_KEEP` (plus ``keep``) from ``source`` (default this process's
    environment), then ``extra``."""
    src = os.environ if source is None else source
    names = set(CHILD_ENV_KEEP) | set(keep)
    env = {k: v for k, v in src.items() if k in names}
    env.update(extra or {})
    return env
