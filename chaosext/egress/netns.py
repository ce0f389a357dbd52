"""Many network namespaces at once, from one process: commands started in each, connect checks made from each.

``setns(2)`` moves only the calling thread. So a few short-lived worker threads of this process enter the targets'
namespaces in turn and, from there, start each target's command (a process is born in its parent thread's namespace)
or make its socket (a socket stays in the namespace it was made in); the threads end afterwards, so no other thread
of the process ever leaves its namespace. Then one loop feeds every process its input, reads its output and sees it
end (:func:`run_all`), and one loop waits for every connect (:func:`connect_all`). N targets cost N process starts,
spread over the cores, and one timeout -- not one ``nsenter`` per command, nor one timeout per target. Rule listings
need no process at all where iptables is the nf_tables variant (:func:`listings` reads the kernel's ruleset).

:func:`run_all` can also *stage* a batch: every process gets its input but a held-back tail (an
``iptables-restore`` transaction without its ``COMMIT``), and once all of them wait on their input the tails are sent
in one go, so the transactions commit within milliseconds of each other.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import ipaddress
import os
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chaosext.egress.base import FaultError, Ran, TargetNotFound, classify_error

__all__ = ["Job", "run_all", "connect_all", "listings", "nft_backed", "in_netns", "enter", "path_is_local",
           "fd_budget", "WORKERS", "LOCAL_VERIFY_TIMEOUT"]

CLONE_NEWNET = 0x40000000
#: threads that enter namespaces and start processes / make sockets (a process start is mostly the kernel's work,
#: done with the GIL released: a few threads keep the cores busy)
WORKERS = 4
#: drop mode: seconds without an answer that prove a connect is dropped when the path stays on this host
#: (:func:`path_is_local`); a SYN to a namespace of this host is answered by its kernel within microseconds
LOCAL_VERIFY_TIMEOUT = 0.2
#: file descriptors kept free for everything else the process does
FD_RESERVE = 64
_LIBC = ctypes.CDLL(None, use_errno=True)

T = TypeVar("T")


def enter(nspath: str) -> None:
    """Move the calling thread into the network namespace ``nspath``; TargetNotFound when it cannot (gone)."""
    try:
        fd = os.open(nspath, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise TargetNotFound(f"cannot enter network namespace {nspath}: {exc}") from None
    try:
        if _LIBC.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise TargetNotFound(f"cannot enter network namespace {nspath}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(nspath: str, fn: Callable[[], T]) -> T:
    """``fn()`` run inside the network namespace ``nspath`` (what ``nsenter --net=<nspath>`` does, without a
    process), in a short-lived thread of its own: the rest of the process never leaves its namespace."""
    results: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            enter(nspath)
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, name="chaosext-in-netns")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def fd_budget(needed: int) -> int:
    """How many file descriptors may be opened now: raises the soft RLIMIT_NOFILE towards the hard one when
    ``needed`` (plus a reserve) does not fit, and returns what is available (callers work in waves of that)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + FD_RESERVE + _open_fds()
    if want > soft:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    return max(8, soft - FD_RESERVE - _open_fds())


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


# ---------------------------------------------------------------- workers


def _in_workers(items: Sequence[T], nspath: Callable[[T], str], work: Callable[[int, T], None],
                workers: int = WORKERS) -> dict[int, BaseException]:
    """``work(index, item)`` for every item, from up to ``workers`` threads, each inside ``nspath(item)``
    ("" = the caller's namespace) when it runs it; items of one namespace are taken together (one setns). Returns
    the errors raised, by index, once every item was tried."""
    if not items:
        return {}
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    order = sorted(range(len(items)), key=lambda i: nspath(items[i]))
    lock = threading.Lock()
    cursor = [0]
    errors: dict[int, BaseException] = {}

    def worker() -> None:
        here: str | None = None
        while True:
            with lock:
                if cursor[0] >= len(order):
                    return
                index = order[cursor[0]]
                cursor[0] += 1
            item = items[index]
            want = nspath(item)
            try:
                if want != here:
                    here = None
                    if want:
                        enter(want)
                    elif _LIBC.setns(home, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns back into this namespace failed")
                    here = want
                work(index, item)
            except BaseException as exc:
                with lock:
                    errors[index] = exc

    try:
        threads = [threading.Thread(target=worker, name="chaosext-netns-worker")
                   for _ in range(max(1, min(workers, len(items))))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        os.close(home)
    return errors


# ---------------------------------------------------------------- commands


@dataclass
class Job:
    """One command in one target: ``argv`` run in the namespace file ``nspath`` ("" = this one), fed ``stdin``;
    ``held``: input sent only once every staged job of the batch waits for more (see :func:`run_all`)."""

    argv: list[str]
    nspath: str = ""
    stdin: str = ""
    held: str = ""
    capture: bool = True  # False: stdout goes to /dev/null


class _Child:
    """A started process and the parent's ends of its pipes (-1: none)."""

    def __init__(self, pid: int, stdin: int, stdout: int, stderr: int,
                 popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid, self.fds = pid, {"stdin": stdin, "stdout": stdout, "stderr": stderr}
        self.popen = popen  # the fallback's (it reaps its own child)

    def close(self, name: str) -> None:
        fd = self.fds[name]
        if fd >= 0:
            self.fds[name] = -1
            try:
                os.close(fd)
            except OSError:
                pass

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float = 5.0) -> int:
        """The exit code (negative: killed by that signal); SIGKILL after ``timeout``."""
        if self.popen is not None:
            try:
                return self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                return self.popen.wait()
        end = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG if time.monotonic() < end else 0)
            if pid:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() >= end:
                self.kill()
            time.sleep(0.001)


class _Spawner:
    """``posix_spawnp(3)`` called through ctypes, which releases the GIL: the worker threads start processes in
    parallel, each in the namespace it entered (``subprocess`` holds the GIL while the child execs, so process starts
    there are one at a time however many threads ask). Children get the pipes as fds 0-2, no other descriptor
    (``posix_spawn_file_actions_addclosefrom_np``, glibc 2.34), default SIGPIPE/SIGXFSZ and an empty signal mask,
    like ``subprocess`` gives them. Unavailable (another libc): :func:`_start` falls back to ``subprocess``."""

    ACTIONS_SIZE = ATTR_SIZE = SIGSET_SIZE = 1024  # opaque libc structures; larger than any libc's
    POSIX_SPAWN_SETSIGMASK, POSIX_SPAWN_SETSIGDEF = 0x08, 0x04

    def __init__(self) -> None:
        libc = _LIBC
        for name in ("posix_spawnp", "posix_spawn_file_actions_init", "posix_spawn_file_actions_adddup2",
                     "posix_spawn_file_actions_addclosefrom_np", "posix_spawn_file_actions_destroy",
                     "posix_spawnattr_init", "posix_spawnattr_setflags", "posix_spawnattr_setsigmask",
                     "posix_spawnattr_setsigdefault", "posix_spawnattr_destroy", "sigemptyset", "sigaddset"):
            getattr(libc, name)  # AttributeError: not this libc
        self.libc = libc
        self.attr = ctypes.create_string_buffer(self.ATTR_SIZE)
        empty, default = ctypes.create_string_buffer(self.SIGSET_SIZE), ctypes.create_string_buffer(self.SIGSET_SIZE)
        libc.sigemptyset(empty)
        libc.sigemptyset(default)
        for signum in (13, 25):  # SIGPIPE, SIGXFSZ: Python ignores them, a child must not inherit that
            libc.sigaddset(default, signum)
        libc.posix_spawnattr_init(self.attr)
        libc.posix_spawnattr_setflags(self.attr, ctypes.c_short(self.POSIX_SPAWN_SETSIGMASK
                                                                | self.POSIX_SPAWN_SETSIGDEF))
        libc.posix_spawnattr_setsigmask(self.attr, empty)
        libc.posix_spawnattr_setsigdefault(self.attr, default)
        self._keep = (empty, default)

    def spawn(self, argv: list[str], stdin: int, stdout: int, stderr: int) -> int:
        libc = self.libc
        actions = ctypes.create_string_buffer(self.ACTIONS_SIZE)
        libc.posix_spawn_file_actions_init(actions)
        try:
            for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
                libc.posix_spawn_file_actions_adddup2(actions, fd, target)
            libc.posix_spawn_file_actions_addclosefrom_np(actions, 3)
            args = (ctypes.c_char_p * (len(argv) + 1))(*[os.fsencode(a) for a in argv], None)
            env = [os.fsencode(f"{k}={v}") for k, v in os.environ.items()]
            envp = (ctypes.c_char_p * (len(env) + 1))(*env, None)
            pid = ctypes.c_int()
            err = libc.posix_spawnp(ctypes.byref(pid), args[0], actions, self.attr, args, envp)
        finally:
            libc.posix_spawn_file_actions_destroy(actions)
        if err:
            raise OSError(err, os.strerror(err), argv[0])
        return pid.value


@functools.lru_cache(maxsize=1)
def _spawner() -> _Spawner | None:
    """The process's one :class:`_Spawner` (its attributes are set up once), or None where libc lacks one."""
    try:
        return _Spawner()
    except (AttributeError, OSError):
        return None


def _start(job: Job) -> _Child:
    """Start ``job.argv`` in the calling thread's namespace with pipes for stdin, stdout (or /dev/null) and
    stderr."""
    spawner = _spawner()
    try:
        if spawner is None:
            popen = subprocess.Popen(job.argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE if job.capture else subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, close_fds=True)
            fds = [os.dup(p.fileno()) if p is not None else -1 for p in (popen.stdin, popen.stdout, popen.stderr)]
            for p in (popen.stdin, popen.stdout, popen.stderr):
                if p is not None:
                    p.close()
            return _Child(popen.pid, fds[0], fds[1], fds[2], popen=popen)
        opened: list[int] = []
        try:
            in_r, in_w = os.pipe()
            opened += [in_r, in_w]
            err_r, err_w = os.pipe()
            opened += [err_r, err_w]
            if job.capture:
                out_r, out_w = os.pipe()
                opened += [out_r, out_w]
            else:
                out_r, out_w = -1, os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
                opened.append(out_w)
            pid = spawner.spawn(job.argv, in_r, out_w, err_w)
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        return _Child(pid, in_w, out_r, err_r)
    except FileNotFoundError as exc:
        raise FaultError(f"{exc.filename} not found on this host; install it (scripts/setup)") from None


@dataclass
class _Proc:
    job: Job
    child: _Child
    pending: bytes
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    open_pipes: int = 0
    released: bool = False


def _wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as fh:
            return fh.read()
    except OSError:
        return ""


def run_all(jobs: Sequence[Job], timeout: float = 0.0, staged: bool = False, ready_timeout: float = 3.0,
            wave: int = 0, workers: int = WORKERS) -> list[Ran]:
    """Run every job at once; one :class:`Ran` per job, in order (never raises for one job's failure).

    ``staged``: each process first gets ``stdin`` only; once every one of them waits on its input (or
    ``ready_timeout`` passed), all the ``held`` tails go out in one go and the inputs are closed. ``timeout``: the
    whole batch's limit (default 15 s plus 20 ms a job); processes still running then are killed. Jobs go in waves
    when the open-file limit cannot hold them all (three pipe ends each), or of ``wave`` jobs when given.
    ``workers``: threads starting the processes."""
    limit = timeout or 15.0 + 0.02 * len(jobs)
    size = max(1, fd_budget(3 * len(jobs)) // 3)
    if wave:
        size = min(size, wave)
    out: list[Ran] = []
    for start in range(0, len(jobs), size):
        out += _run_wave(list(jobs[start:start + size]), limit, staged, ready_timeout, workers)
    return out


def _run_wave(jobs: list[Job], limit: float, staged: bool, ready_timeout: float, workers: int) -> list[Ran]:
    results = [Ran() for _ in jobs]
    procs: dict[int, _Proc] = {}
    lock = threading.Lock()

    def spawn(index: int, job: Job) -> None:
        child = _start(job)
        data = job.stdin if staged else job.stdin + job.held
        with lock:
            procs[index] = _Proc(job, child, data.encode())

    for index, exc in _in_workers(jobs, lambda j: j.nspath, spawn, workers).items():
        results[index].error = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    sel = selectors.DefaultSelector()
    fd_owner: dict[int, tuple[int, str]] = {}
    try:
        for index, proc in procs.items():
            for name, fd in proc.child.fds.items():
                if fd < 0:
                    continue
                os.set_blocking(fd, False)
                fd_owner[fd] = (index, name)
                if name == "stdin":
                    if proc.pending:
                        sel.register(fd, selectors.EVENT_WRITE)
                    elif not staged:
                        proc.child.close("stdin")
                        del fd_owner[fd]
                else:
                    proc.open_pipes += 1
                    sel.register(fd, selectors.EVENT_READ)
        _loop(procs, results, sel, fd_owner, limit, staged, ready_timeout)
    finally:
        sel.close()
        for index, proc in procs.items():
            _reap(proc, results[index])
    return results


def _loop(procs: dict[int, _Proc], results: list[Ran], sel: selectors.BaseSelector,
          fd_owner: dict[int, tuple[int, str]], limit: float, staged: bool, ready_timeout: float) -> None:
    deadline = time.monotonic() + limit
    ready_by = time.monotonic() + ready_timeout
    released = not staged
    running = {i for i, p in procs.items() if p.open_pipes}
    while running and time.monotonic() < deadline:
        for key, mask in sel.select(timeout=0.002 if not released else 0.05):
            index, name = fd_owner[key.fd]
            proc = procs[index]
            if mask & selectors.EVENT_WRITE:
                _feed(sel, key.fd, proc, close=released)
            if mask & selectors.EVENT_READ:
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    (proc.out if name == "stdout" else proc.err).extend(data)
                    continue
                sel.unregister(key.fd)
                proc.child.close(name)
                proc.open_pipes -= 1
                if not proc.open_pipes:
                    results[index].at = time.time()
                    running.discard(index)
        if not released and (time.monotonic() >= ready_by or _all_waiting(procs, running)):
            released = True
            for proc in procs.values():
                proc.released = True
                fd = proc.child.fds["stdin"]
                if fd < 0:
                    continue
                proc.pending += proc.job.held.encode()
                try:
                    sel.register(fd, selectors.EVENT_WRITE)
                except KeyError:
                    pass  # still registered: its body is not all written yet
    for index in running:
        results[index].error = FaultError(f"timed out after {limit:.0f}s: {' '.join(procs[index].job.argv)}")
        procs[index].child.kill()


def _feed(sel: selectors.BaseSelector, fd: int, proc: _Proc, close: bool) -> None:
    """Write what is pending to a process's stdin; unregister when done (and close it, unless it is held open
    for a staged tail)."""
    try:
        written = os.write(fd, proc.pending[:65536])
        proc.pending = proc.pending[written:]
    except BlockingIOError:
        return
    except OSError:
        proc.pending = b""  # it exited already; its return code and stderr say why
    if not proc.pending:
        sel.unregister(fd)
        if close or proc.released:
            proc.child.close("stdin")


def _all_waiting(procs: dict[int, _Proc], running: set[int]) -> bool:
    """Every staged process has its input and waits for more (blocked reading its stdin pipe), or has ended."""
    for index in running:
        proc = procs[index]
        if proc.pending or "pipe" not in _wchan(proc.child.pid):
            return False
    return True


def _reap(proc: _Proc, result: Ran) -> None:
    for name in proc.child.fds:
        proc.child.close(name)
    result.returncode = proc.child.wait()
    result.stdout = proc.out.decode(errors="replace")
    result.stderr = proc.err.decode(errors="replace")
    result.at = result.at or time.time()


# ---------------------------------------------------------------- connect checks


def connect_all(probes: Sequence[tuple[str, str, int]], timeout: float,
                local_timeout: float | None = None) -> list[dict[str, Any]]:
    """A fresh TCP connect for each ``(namespace file, address, port)`` ("" = this namespace), all at once.

    Every socket is made inside its namespace and connects without blocking; one loop then waits until each is
    answered or its timeout passed, so the whole batch costs one timeout however many there are. ``local_timeout``:
    the shorter wait for probes whose path stays on this host (:func:`path_is_local`): there, no answer within it
    means dropped. Results as :func:`chaosext.egress.base.probe_endpoint`'s (``status`` 0: no HTTP), plus
    ``timeout_s`` (the wait used) and ``path`` (``local`` / ``remote``)."""
    results: list[dict[str, Any]] = [
        {"address": a, "port": p, "reachable": False, "error": "", "status": 0, "elapsed_ms": 0.0,
         "timeout_s": timeout, "path": "remote"} for _, a, p in probes]
    socks: dict[int, tuple[socket.socket, float, float]] = {}  # index -> (socket, started, deadline)
    local_seen: dict[tuple[str, str], bool] = {}
    lock = threading.Lock()

    def start(index: int, probe: tuple[str, str, int]) -> None:
        nspath, address, port = probe
        wait = timeout
        if local_timeout is not None:
            key = (nspath, address)
            if key not in local_seen:
                local_seen[key] = path_is_local(address)
            if local_seen[key]:
                wait = min(timeout, local_timeout)
                results[index]["path"] = "local"
        results[index]["timeout_s"] = wait
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        started = time.monotonic()
        code = sock.connect_ex((address, port))
        if code in (errno.EINPROGRESS, errno.EAGAIN):
            with lock:
                socks[index] = (sock, started, started + wait)
            return
        _settle(results[index], code, started)
        sock.close()

    size = max(1, fd_budget(len(probes)))  # one socket each
    for first in range(0, len(probes), size):
        chunk = list(range(first, min(len(probes), first + size)))
        failed = _in_workers(chunk, lambda i: probes[i][0], lambda _, i: start(i, probes[i]))
        for pos, exc in failed.items():  # a namespace that cannot be entered: its probes say why
            results[chunk[pos]]["error"] = _error_text(exc)
            results[chunk[pos]]["gone"] = isinstance(exc, TargetNotFound)
        _wait_connects(socks, results)
        socks.clear()
    return results


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, FaultError) else f"{type(exc).__name__}: {exc}"


def _settle(result: dict[str, Any], code: int, started: float) -> None:
    if code == 0:
        result["reachable"] = True
    else:
        result["error"] = classify_error(OSError(code, os.strerror(code)))
    result["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)


def _wait_connects(socks: dict[int, tuple[socket.socket, float, float]], results: list[dict[str, Any]]) -> None:
    """Wait until every socket connected, failed, or saw its deadline pass -- counted from when the last of them sent
    its SYN at the earliest: a batch's handshakes share the machine, and the early ones are not judged before the
    late ones were even sent. A socket is judged only after the loop looked at it: one that connected while others
    were still being made counts as connected."""
    sel = selectors.DefaultSelector()
    sent = max((start for _, start, _ in socks.values()), default=0.0)
    pending = {i: (sock, start, max(end, sent + (end - start))) for i, (sock, start, end) in socks.items()}
    try:
        for index, (sock, _, _) in pending.items():
            sel.register(sock.fileno(), selectors.EVENT_WRITE, index)
        while pending:
            wait = max(0.0, min(end for _, _, end in pending.values()) - time.monotonic())
            for key, _ in sel.select(timeout=wait):
                sock, started, _ = pending.pop(key.data)
                sel.unregister(key.fd)
                _settle(results[key.data], sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), started)
            now = time.monotonic()
            for index in [i for i, (_, _, end) in pending.items() if end <= now]:
                sock, started, _ = pending.pop(index)
                sel.unregister(sock.fileno())
                results[index]["error"] = "timeout"
                results[index]["elapsed_ms"] = round((now - started) * 1000, 1)
    finally:
        sel.close()
        for sock, _, _ in socks.values():
            sock.close()


# ---------------------------------------------------------------- is the path local? (rtnetlink)

_NLMSG_ERROR = 2
_RTM_GETLINK, _RTM_NEWLINK, _RTM_GETROUTE, _RTM_NEWROUTE = 18, 16, 26, 24
_NLM_F_REQUEST = 1
_RTA_DST, _RTA_OIF, _RTA_GATEWAY = 1, 4, 5
_RTN_LOCAL = 2
_IFLA_LINKINFO, _IFLA_INFO_KIND = 18, 1
_ARPHRD_LOOPBACK = 772


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("HH", data, pos)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[pos + 4:pos + length]
        pos += (length + 3) & ~3
    return out


def _ask(sock: socket.socket, kind: int, body: bytes) -> tuple[int, bytes]:
    """One rtnetlink request and its one answer: (message type, payload)."""
    sock.send(struct.pack("IHHII", 16 + len(body), kind, _NLM_F_REQUEST, 1, 0) + body)
    data = sock.recv(65536)
    length, answer = struct.unpack_from("IH", data, 0)
    return answer, data[16:length]


def path_is_local(address: str) -> bool:
    """Whether packets from the calling thread's network namespace to ``address`` stay on this host: the address
    is local there (loopback), or it is reached without a gateway through a veth (whose other end is, by
    construction, a namespace of this host). Asked of the kernel's routing table (rtnetlink); False when unsure."""
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0) as sock:
            sock.settimeout(1.0)
            rtattr = struct.pack("HH", 4 + len(ip.packed), _RTA_DST) + ip.packed
            kind, payload = _ask(sock, _RTM_GETROUTE,
                                 struct.pack("BBBBBBBBI", family, ip.max_prefixlen, 0, 0, 0, 0, 0, 0, 0) + rtattr)
            if kind != _RTM_NEWROUTE:
                return False
            route_type = payload[7]
            attrs = _attrs(payload[12:])
            if route_type == _RTN_LOCAL:
                return True
            if _RTA_GATEWAY in attrs or _RTA_OIF not in attrs:
                return False
            oif = struct.unpack("I", attrs[_RTA_OIF][:4])[0]
            kind, payload = _ask(sock, _RTM_GETLINK, struct.pack("BxHiII", socket.AF_UNSPEC, 0, oif, 0, 0))
            if kind != _RTM_NEWLINK:
                return False
            if struct.unpack_from("H", payload, 2)[0] == _ARPHRD_LOOPBACK:
                return True
            info = _attrs(_attrs(payload[16:]).get(_IFLA_LINKINFO, b""))
            return info.get(_IFLA_INFO_KIND, b"").rstrip(b"\0") == b"veth"
    except (OSError, struct.error, IndexError):
        return False


# ---------------------------------------------------------------- rule listings without a process (nf_tables)

_NETLINK_NETFILTER = 12
_NFT_MSG_GETCHAIN, _NFT_MSG_GETRULE = 4, 7
_NLM_F_DUMP = 0x300
_NLMSG_DONE = 3
_NFPROTO = {"iptables": 2, "ip6tables": 10}
_VERDICTS = {0: "DROP", 1: "ACCEPT", -5: "RETURN"}


def nft_backed(binary: str) -> bool:
    """Whether ``binary`` (``iptables`` / ``ip6tables`` on PATH) is the nf_tables variant, whose rules
    :func:`listings` can read from the kernel directly."""
    path = shutil.which(binary)
    return bool(path) and os.path.basename(os.path.realpath(str(path))) == "xtables-nft-multi"


def _nest(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("HH", data, pos)
        if length < 4:
            break
        out.append((kind & 0x3FFF, data[pos + 4:pos + length]))
        pos += (length + 3) & ~3
    return out


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def _dump(sock: socket.socket, message: int, family: int) -> list[bytes]:
    """One nf_tables dump of the ``filter`` table of ``family``: the payload (attributes) of each message."""
    table = b"filter\0"
    attr = struct.pack("HH", 4 + len(table), 1) + table + b"\0" * (-len(table) % 4)
    body = struct.pack("BBH", family, 0, 0) + attr
    sock.send(struct.pack("IHHII", 16 + len(body), (10 << 8) | message, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + body)
    found: list[bytes] = []
    while True:
        data = sock.recv(1 << 20)
        pos = 0
        while pos + 16 <= len(data):
            length, kind = struct.unpack_from("IH", data, pos)
            if kind == _NLMSG_DONE:
                return found
            if kind == _NLMSG_ERROR:
                code = struct.unpack_from("i", data, pos + 16)[0]
                if code in (0, -errno.ENOENT):  # no such table: nothing in it
                    return found
                raise OSError(-code, os.strerror(-code))
            found.append(data[pos + 20:pos + length])  # after nlmsghdr (16) and nfgenmsg (4)
            pos += (length + 3) & ~3


def _be(value: bytes) -> int:
    return int.from_bytes(value[:4], "big")


def _rule_line(attrs: dict[int, bytes], version: int) -> str:
    """A rule of IP ``version`` as ``iptables -S`` shows it, with what the checks read: chain, destination, TCP
    destination port, comments and target (other matches are left out)."""
    daddr = (16, 4) if version == 4 else (24, 16)  # where the destination address is in the IP header
    chain = _text(attrs.get(2, b""))
    dest: list[str] = []
    proto: list[str] = []
    comments: list[str] = []
    target: list[str] = []
    loaded: tuple[str, int, int] | None = None  # what the last payload/meta expression put in the register
    prefix: int | None = None
    for _, element in _nest(attrs.get(4, b"")):
        expr = dict(_nest(element))
        name, data = _text(expr.get(1, b"")), dict(_nest(expr.get(2, b"")))
        if name == "payload":  # base 1: network header, 2: transport header
            base = {1: "network", 2: "transport"}.get(_be(data.get(2, b"")), "")
            loaded, prefix = (base, _be(data.get(3, b"")), _be(data.get(4, b""))), None
        elif name == "meta":
            loaded, prefix = ("l4proto", 0, 1) if _be(data.get(2, b"")) == 16 else None, None
        elif name == "bitwise" and loaded:  # a mask before the comparison: a network prefix
            bits = dict(_nest(data.get(4, b""))).get(1, b"")
            prefix = sum(bin(b).count("1") for b in bits) if bits else None
        elif name == "cmp" and loaded and _be(data.get(2, b"\0\0\0\0")) == 0:  # equal
            value = dict(_nest(data.get(3, b""))).get(1, b"")
            kind, offset, length = loaded
            if kind == "network" and offset == daddr[0] and length <= daddr[1]:  # a short load is a prefix
                address = ipaddress.ip_address(value[:length].ljust(daddr[1], b"\0"))
                dest = ["-d", f"{address}/{prefix if prefix is not None else length * 8}"]
            elif kind == "l4proto" and value[:1] == b"\x06":
                proto = ["-p", "tcp"]
            elif kind == "transport" and (offset, length) == (2, 2):
                proto = ["-p", "tcp", "-m", "tcp", "--dport", str(int.from_bytes(value[:2], "big"))]
            loaded = None
        elif name == "match" and _text(data.get(1, b"")) == "comment":
            comments += ["-m", "comment", "--comment", f'"{_text(data.get(3, b""))}"']
        elif name == "target":
            target = ["-j", _text(data.get(1, b""))]
        elif name == "immediate" and 2 in data:
            verdict = dict(_nest(dict(_nest(data[2])).get(2, b"")))
            code = struct.unpack(">i", verdict.get(1, b"\0\0\0\0")[:4])[0]
            if code in (-3, -4):  # jump, goto
                target = ["-j" if code == -3 else "-g", _text(verdict.get(2, b""))]
            elif code in _VERDICTS:
                target = ["-j", _VERDICTS[code]]
    udata = attrs.get(7, b"")
    pos = 0
    while pos + 2 <= len(udata):  # rule userdata TLVs: type 0 is a comment
        tlv, length = udata[pos], udata[pos + 1]
        if tlv == 0:
            comments += ["-m", "comment", "--comment", f'"{_text(udata[pos + 2:pos + 2 + length])}"']
        pos += 2 + length
    return " ".join(["-A", chain, *dest, *proto, *comments, *target])


def _family_lines(sock: socket.socket, family: int) -> list[str]:
    chains = [dict(_nest(m)) for m in _dump(sock, _NFT_MSG_GETCHAIN, family)]
    lines = [f"-N {_text(c.get(3, b''))}" for c in chains if 4 not in c]  # no hook: a user chain
    version = 4 if family == _NFPROTO["iptables"] else 6
    return lines + [_rule_line(dict(_nest(m)), version) for m in _dump(sock, _NFT_MSG_GETRULE, family)]


def listings(items: Sequence[tuple[str, list[str]]]) -> list[dict[str, list[str]] | Exception]:
    """For each ``(namespace file, binaries)``: the filter table of each family as ``iptables -S`` lines with what the
    checks read (``-N`` for user chains; per rule ``-A <chain>``, its comments and its ``-j``/``-g`` target, in
    order), read from the kernel over nf_tables netlink from inside each namespace, all from this process. Only for
    binaries that are the nf_tables variant (:func:`nft_backed`). A namespace that cannot be entered gives its
    TargetNotFound, a failed read its OSError."""
    out: list[dict[str, list[str]] | Exception] = [{} for _ in items]

    def read(index: int, item: tuple[str, list[str]]) -> None:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_NETFILTER) as sock:
            sock.settimeout(5.0)
            out[index] = {binary: _family_lines(sock, _NFPROTO[binary]) for binary in item[1]}

    for index, exc in _in_workers(items, lambda item: item[0], read).items():
        out[index] = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    return out
