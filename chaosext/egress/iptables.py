"""iptables driver: a per-run chain in the filter table, jumped to from position 1 of OUTPUT, in each target netns.

Targets: ``local`` (this process's network namespace), ``netns:<name or glob>`` (``ip netns``), ``pid:<pid>`` (the
network namespace of a process, entered with ``nsenter``), ``k8s-pod:<namespace>/<pod or label selector>`` (commands
run in each pod through the Kubernetes API, see :mod:`chaosext.egress.kubernetes`), or several, comma-separated
(:func:`chaosext.egress.base.split_targets`).

Each target gets its whole rule set in one ``iptables-restore --noflush`` transaction per family, after one listing
that makes re-applying a no-op; targets are worked on in parallel (option ``parallelism``), all or none.
Every rule carries ``-m comment --comment chaosext:<run_id>`` and ``-m time --datestop <UTC deadline>``, so the
kernel stops matching at the deadline even when no chaosext process is alive; the watchdog then deletes the chain.
"""
from __future__ import annotations

import ctypes
import fnmatch
import ipaddress
import json
import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

from chaosext.core import ids
from chaosext.core.names import check_run_id
from chaosext.egress.base import (
    FaultError,
    FaultSpec,
    TargetNotFound,
    expected_error,
    probe_endpoint,
    split_targets,
)

__all__ = ["IptablesDriver", "Runner", "HostRunner", "runner_for", "FAMILIES"]

#: binary and address version of each family
FAMILIES = (("iptables", 4), ("ip6tables", 6))
#: a comment as ``iptables -S`` prints it (quoted when it holds more than a word)
_COMMENT = re.compile(r'--comment\s+("(?:[^"\\]|\\.)*"|\S+)')
SEPARATOR = "chaosext-family-separator"
WAIT = ["-w", "5"]
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
#: targets worked on at once (driver option ``parallelism`` / configuration ``FAULT_PARALLELISM``)
DEFAULT_PARALLELISM = 16
#: restore processes staged at once before their COMMIT (two pipe ends each); more targets go in waves
STAGE_MAX = 128
_LIBC = ctypes.CDLL(None, use_errno=True)

T = TypeVar("T")
R = TypeVar("R", bound="Runner")


class Runner(Protocol):
    """Runs commands and probes inside one target network namespace."""

    label: str

    def run(self, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
        """Run ``argv`` in the target (``stdin`` fed to it); ``(returncode, stdout, stderr)``."""

    def shown(self, argv: list[str]) -> str:
        """The command line as it is really executed (for dry runs and reports)."""

    def probe(self, address: str, port: int, timeout: float, url: str = "") -> dict[str, Any]:
        """:func:`chaosext.egress.base.probe_endpoint` from inside the target."""

    def has(self, binary: str) -> bool:
        """Whether ``binary`` can be run in the target."""


def _cap_eff() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


class HostRunner:
    """Local processes, optionally prefixed to enter a namespace (``ip netns exec`` / ``nsenter``)."""

    def __init__(self, label: str, prefix: list[str] | None = None, timeout: float = 15.0, nspath: str = "") -> None:
        self.label = label
        self.prefix = list(prefix or [])
        self.timeout = timeout
        self.nspath = nspath  # the namespace file (/run/netns/<name>, /proc/<pid>/ns/net); "" = this one

    def run(self, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
        """Run ``argv`` in the target; with a namespace file it is started there directly (same effect as the
        ``nsenter`` prefix that :meth:`shown` prints, one process less per command)."""
        def start() -> subprocess.CompletedProcess[str]:
            return subprocess.run(argv if self.nspath else self.prefix + argv, capture_output=True, text=True,
                                  timeout=self.timeout, input=stdin)

        try:
            cp = _in_netns(self.nspath, start) if self.nspath else start()
        except FileNotFoundError as exc:
            raise FaultError(f"{exc.filename} not found on this host; install it (scripts/setup)") from None
        except subprocess.TimeoutExpired:
            raise FaultError(f"timed out after {self.timeout}s: {self.shown(argv)}") from None
        return cp.returncode, cp.stdout, cp.stderr

    def start(self, argv: list[str]) -> subprocess.Popen[str]:
        """Start ``argv`` in the target with its stdin and stderr as pipes (see :func:`_staged_transactions`)."""
        def start() -> subprocess.Popen[str]:
            return subprocess.Popen(argv if self.nspath else self.prefix + argv, stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        try:
            return _in_netns(self.nspath, start) if self.nspath else start()
        except FileNotFoundError as exc:
            raise FaultError(f"{exc.filename} not found on this host; install it (scripts/setup)") from None

    def shown(self, argv: list[str]) -> str:
        return shlex.join(self.prefix + argv)

    def probe(self, address: str, port: int, timeout: float, url: str = "") -> dict[str, Any]:
        if not self.prefix:
            return probe_endpoint(address, port, timeout, url)
        if self.nspath:  # a socket made inside the target: no process to start (matters at 100 targets)
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = _in_netns(self.nspath, lambda: socket.socket(family, socket.SOCK_STREAM))
            return probe_endpoint(address, port, timeout, url, sock=sock)
        argv = [sys.executable, "-m", "chaosext.egress.base", "probe", address, str(port), str(timeout)]
        rc, out, err = self.run(argv + ([url] if url else []))
        try:
            result: dict[str, Any] = json.loads(out)
            return result
        except ValueError:
            raise FaultError(f"probe inside {self.label} failed (rc={rc}): {err.strip()[-300:]}") from None

    def has(self, binary: str) -> bool:
        return shutil.which(binary) is not None

    def check_capable(self) -> None:
        """Refuse early without CAP_NET_ADMIN (and CAP_SYS_ADMIN to enter another namespace)."""
        caps = _cap_eff()
        if not caps >> CAP_NET_ADMIN & 1:
            raise FaultError("iptables needs CAP_NET_ADMIN: run as root (or in `unshare -rn` for a private netns)")
        if self.prefix and not caps >> CAP_SYS_ADMIN & 1:
            raise FaultError(f"entering {self.label} needs CAP_SYS_ADMIN: run as root")


def _netns_runner(target: str, name: str) -> HostRunner:
    path = f"{NETNS_DIR}/{name}"
    if not name or "/" in name or not os.path.exists(path):
        raise TargetNotFound(f"target {target!r} not found: no network namespace {name!r} (see `ip netns list`)")
    return HostRunner(f"netns:{name}", ["nsenter", f"--net={path}", "--"], nspath=path)


def _resolve_item(item: str, options: dict[str, Any], secrets: Mapping[str, Any] | None = None) -> list[Runner]:
    """Runners for one item of :func:`split_targets` (a ``netns:`` glob expands to every matching namespace)."""
    if item == "local":
        return [HostRunner("local")]
    kind, _, name = item.partition(":")
    if kind == "netns":
        if not any(c in name for c in "*?["):
            return [_netns_runner(item, name)]
        names = sorted(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else []
        matched = [n for n in names if fnmatch.fnmatchcase(n, name)]
        if not matched:
            raise TargetNotFound(f"target {item!r} not found: no network namespace matches {name!r} "
                                 "(see `ip netns list`)")
        return [_netns_runner(f"netns:{n}", n) for n in matched]
    if kind == "pid":
        if not name.isdigit() or not os.path.exists(f"/proc/{name}/ns/net"):
            raise TargetNotFound(f"target {item!r} not found: no process {name!r} (give the pid of a running "
                                 "process)")
        return [HostRunner(item, ["nsenter", "-t", name, "-n", "--"], nspath=f"/proc/{name}/ns/net")]
    if kind == "k8s-pod":
        from chaosext.egress.kubernetes import pod_runners

        return list(pod_runners(name, options, secrets=secrets))
    raise FaultError(f"unknown target {item!r}: use local, netns:<name|glob>, pid:<pid> or "
                     "k8s-pod:<namespace>/<pod|selector>")


def _identity(runner: Runner) -> tuple[str | int, ...]:
    """What makes two runners the same target: the network namespace itself (two pids may share one)."""
    path = getattr(runner, "nspath", None)
    if path is not None:
        try:
            st = os.stat(path or "/proc/self/ns/net")
            return ("netns", st.st_dev, st.st_ino)
        except OSError:
            pass
    return ("label", runner.label)


def runner_for(target: str, options: dict[str, Any] | None = None, missing_ok: bool = False,
               secrets: Mapping[str, Any] | None = None) -> list[Runner]:
    """One runner per distinct network namespace that ``target`` names (a comma-separated list; ``netns:`` globs,
    ``k8s-pod:`` selectors). Raises FaultError for a target that does not exist, unless ``missing_ok`` (revert: a
    target that is gone holds nothing to remove). ``secrets``: Kubernetes credentials for ``k8s-pod:`` targets."""
    runners: list[Runner] = []
    seen: set[tuple[str | int, ...]] = set()
    for item in split_targets(target):
        try:
            found = _resolve_item(item, options or {}, secrets)
        except TargetNotFound:
            if missing_ok:
                continue
            raise
        for runner in found:
            key = _identity(runner)
            if key not in seen:
                seen.add(key)
                runners.append(runner)
    return runners


def _in_netns(nspath: str, fn: Callable[[], T]) -> T:
    """``fn()`` run inside the network namespace ``nspath`` (what ``nsenter --net=<nspath>`` does, without a process).

    ``setns`` switches only the calling thread, so ``fn`` runs in a short-lived thread of its own: the rest of the
    process never leaves its namespace, whatever happens. Sockets it creates stay in that namespace; processes it
    starts are born there."""
    results: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            with open(nspath) as target:
                if _LIBC.setns(target.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {nspath}: {os.strerror(err)}")
        except OSError as exc:
            errors.append(TargetNotFound(f"cannot enter network namespace {nspath}: {exc}"))
            return
        try:
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=body, name="chaosext-in-netns")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def _datestop(expires_at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(expires_at))


def _family_addresses(spec: FaultSpec, version: int) -> list[str]:
    return [a for a in spec.addresses if ipaddress.ip_address(a).version == version]


def _rule(spec: FaultSpec, address: str, version: int) -> list[str]:
    prefix = 32 if version == 4 else 128
    target = ["DROP"] if spec.mode == "drop" else ["REJECT", "--reject-with", "tcp-reset"]
    return [spec.chain, "-d", f"{address}/{prefix}", "-p", "tcp", "-m", "tcp", "--dport", str(spec.port),
            "-m", "time", "--datestop", _datestop(spec.expires_at),
            "-m", "comment", "--comment", spec.tag, "-j", *target]


def _jump(spec: FaultSpec) -> list[str]:
    return ["OUTPUT", "-m", "comment", "--comment", spec.tag, "-j", spec.chain]


def _rule_endpoint(line: str) -> str:
    """``addr:port`` a chaosext rule blocks (``-d 127.0.0.2/32 ... --dport 8440``), or "" for a jump/chain line."""
    dest, port = re.search(r"\s-d\s+(\S+)", line), re.search(r"--dport\s+(\d+)", line)
    if not dest or not port:
        return ""
    return f"{ipaddress.ip_interface(dest.group(1)).ip}:{port.group(1)}"


def _listings(runner: Runner, binaries: list[str]) -> dict[str, list[str]]:
    """``binary -S`` of the filter table for each family, in one process (one exec round trip in a pod)."""
    if not binaries:
        return {}
    if len(binaries) == 1:
        argv = [binaries[0], *WAIT, "-t", "filter", "-S"]
    else:
        argv = ["sh", "-c", f" && echo {SEPARATOR} && ".join(shlex.join([b, *WAIT, "-t", "filter", "-S"])
                                                             for b in binaries)]
    rc, out, err = runner.run(argv)
    if rc != 0:
        if isinstance(runner, HostRunner) and runner.nspath and not os.path.exists(runner.nspath):
            raise TargetNotFound(f"{runner.label} is gone: {err.strip()}")
        raise FaultError(f"cannot list rules in {runner.label}: {err.strip()}")
    parts = out.split(f"{SEPARATOR}\n")
    if len(parts) != len(binaries):
        raise FaultError(f"cannot list rules in {runner.label}: unexpected output of {runner.shown(argv)}")
    return {b: part.splitlines() for b, part in zip(binaries, parts, strict=True)}


def _listing(runner: Runner, binary: str) -> list[str]:
    return _listings(runner, [binary])[binary]


def _shown_line(argv: list[str]) -> str:
    """An argv as ``iptables -S`` prints it (the comment value quoted), to compare with a listing."""
    return " ".join(f'"{a}"' if a.startswith("chaosext:") else a for a in argv)


def _jump_target(words: list[str]) -> str:
    """The ``-j`` target of a rule's words ('' when none)."""
    return words[words.index("-j") + 1] if "-j" in words[:-1] else ""


def _owner(line: str) -> str:
    """The run id that owns a listing line, by exact name only (chaosext.core.ids): a chain ``CHAOSEXT-<run id>``
    (its ``-N`` line, a rule in it, a jump to it) or a comment that is exactly ``chaosext:<run id>``. '' when the line
    is not chaosext's: ``chaosext:ssh`` or a user chain ``CHAOSEXT-corpfw`` is somebody else's."""
    words = line.split()
    if len(words) < 2:
        return ""
    comment = _COMMENT.search(line)
    return (ids.run_id_of_chain(words[1]) or ids.run_id_of_chain(_jump_target(words))
            or (ids.run_id_of_tag(comment.group(1)) if comment else ""))


def _belongs(line: str, run_id: str) -> bool:
    """The listing line is ``run_id``'s (exactly: :func:`_owner`)."""
    return bool(run_id) and _owner(line) == run_id


def _run_lines(lines: list[str], chain: str, tag: str) -> list[str]:
    """The ``-A`` lines of a listing that belong to the run (its chain's rules, tagged rules, jumps to its chain)."""
    run_id = ids.run_id_of_chain(chain)
    return [line for line in lines if line.startswith("-A ") and _belongs(line, run_id)]


def _restore_input(lines: list[str]) -> str:
    return "*filter\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n"


@dataclass(frozen=True)
class Done(Generic[R, T]):
    """One runner's part of a fan-out: its result, or the error it raised; ``at``: wall time it finished."""

    runner: R
    result: T | None
    error: Exception | None
    at: float

    @property
    def value(self) -> T:
        """The result of a runner that did not fail (its error is raised otherwise)."""
        if self.error is not None:
            raise self.error
        return cast(T, self.result)  # no error: ``result`` is what the function returned


def _fan_out(fn: Callable[[R], T], runners: Sequence[R], parallelism: int) -> list[Done[R, T]]:
    """``fn(runner)`` for every runner, at most ``parallelism`` at once, in the runners' order. Never raises for one
    runner's failure (it is that runner's ``error``)."""
    def one(runner: R) -> Done[R, T]:
        try:
            return Done(runner, fn(runner), None, time.time())
        except Exception as exc:
            return Done(runner, None, exc, time.time())

    if len(runners) <= 1:
        return [one(r) for r in runners]
    with ThreadPoolExecutor(max_workers=min(parallelism, len(runners)), thread_name_prefix="chaosext-egress") as pool:
        return list(pool.map(one, runners))


def _wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as fh:
            return fh.read()
    except OSError:
        return ""


@dataclass
class Staged:
    """One target's staged transactions: ``results`` {binary: (returncode, stderr)}, ``at`` when the last finished;
    or the ``error`` that kept them from starting."""

    results: dict[str, tuple[int, str]] = field(default_factory=dict)
    at: float = 0.0
    error: Exception | None = None


def _staged_transactions(runners: list[Runner], inputs: Callable[[Runner], list[tuple[str, str]]],
                         parallelism: int, timeout: float = 15.0) -> dict[int, Staged]:
    """Run restore transactions in many local targets so that they commit at (nearly) the same moment.

    For each :class:`HostRunner` (others are skipped) and each ``(binary, input)`` of ``inputs(runner)``, start
    ``<binary>-restore --noflush`` in the target and feed it the input without its final ``COMMIT``; once every
    process waits on its stdin (it has parsed its rules) or a few seconds passed, send all the ``COMMIT`` lines in
    one go. The kernel commits each target's transaction as that line arrives, so the targets are cut off within
    milliseconds of each other rather than one process start apart. Returns ``{id(runner): Staged}``."""
    host = [r for r in runners if isinstance(r, HostRunner)]
    out: dict[int, Staged] = {}
    # two pipe ends stay open per staged process: keep far below the open-file limit
    per_runner = max(1, len(inputs(host[0]))) if host else 1
    size = max(1, min(STAGE_MAX, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 64) // 2) // per_runner)
    for i in range(0, len(host), size):
        wave = host[i:i + size]

        def stage(runner: HostRunner) -> list[tuple[str, subprocess.Popen[str]]]:
            procs: list[tuple[str, subprocess.Popen[str]]] = []
            try:
                for binary, script in inputs(runner):
                    proc = runner.start([f"{binary}-restore", *WAIT, "--noflush"])
                    procs.append((binary, proc))
                    try:
                        assert proc.stdin is not None  # started with stdin=PIPE
                        proc.stdin.write(script[:-len("COMMIT\n")])
                        proc.stdin.flush()
                    except BrokenPipeError:
                        pass  # it exited already; its return code and stderr say why
            except BaseException:
                for _, proc in procs:
                    proc.kill()
                    proc.wait()
                raise
            return procs

        started = _fan_out(stage, wave, parallelism)
        procs = [(id(d.runner), b, p) for d in started if not d.error for b, p in d.value]
        out.update({id(d.runner): Staged(error=d.error) for d in started if d.error})
        ready_by = time.monotonic() + 3.0
        waiting = [p for _, _, p in procs]
        while waiting and time.monotonic() < ready_by:
            waiting = [p for p in waiting if p.poll() is None and "pipe" not in _wchan(p.pid)]
            if waiting:
                time.sleep(0.005)
        for _, _, proc in procs:
            try:
                assert proc.stdin is not None  # started with stdin=PIPE
                proc.stdin.write("COMMIT\n")
                proc.stdin.close()
            except OSError:
                pass  # it exited already; its return code says why
        finished: dict[int, float] = {}
        end = time.monotonic() + timeout
        while len(finished) < len(procs):
            for _, _, proc in procs:
                if proc.pid not in finished and proc.poll() is not None:
                    finished[proc.pid] = time.time()
            if len(finished) < len(procs):
                if time.monotonic() > end:
                    for _, _, proc in procs:
                        if proc.poll() is None:
                            proc.kill()
                    end = time.monotonic() + 5.0
                time.sleep(0.001)
        for key, binary, proc in procs:
            entry = out.setdefault(key, Staged())
            entry.results[binary] = (proc.returncode, proc.stderr.read() if proc.stderr else "")
            entry.at = max(entry.at, finished[proc.pid])
            if proc.stderr:
                proc.stderr.close()
    return out


def _spread(times: list[float]) -> dict[str, Any]:
    """First and last time of a fan-out and the seconds between them (the outage skew across targets)."""
    if not times:
        return {"first": None, "last": None, "seconds": 0.0, "targets": 0}
    return {"first": min(times), "last": max(times), "seconds": round(max(times) - min(times), 4),
            "targets": len(times)}


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, FaultError) else f"{type(exc).__name__}: {exc}"


class IptablesDriver:
    """Block the JWKS host:port with iptables/ip6tables in every target network namespace, one atomic
    ``iptables-restore --noflush`` transaction per target and family, targets in parallel."""

    via = "iptables"

    def __init__(self, options: dict[str, Any] | None = None, secrets: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.secrets = secrets  # the activity's secrets, for k8s-pod targets (never recorded)

    @property
    def parallelism(self) -> int:
        """Targets worked on at once (option ``parallelism``, default 16); FaultError unless a whole number >= 1."""
        raw = self.options.get("parallelism") or DEFAULT_PARALLELISM
        try:
            value = int(raw)
        except (TypeError, ValueError):
            value = 0
        if value < 1 or str(raw).strip() != str(value):
            raise FaultError(f"FAULT_PARALLELISM / parallelism {raw!r} must be a whole number >= 1 (default "
                             f"{DEFAULT_PARALLELISM})")
        return value

    # -- planning

    def _families(self, spec: FaultSpec) -> list[tuple[str, int, list[str]]]:
        """``(binary, version, addresses)`` of each family the JWKS host has addresses in."""
        return [(b, v, _family_addresses(spec, v)) for b, v in FAMILIES if _family_addresses(spec, v)]

    def _wanted(self, spec: FaultSpec, version: int, addrs: list[str]) -> list[str]:
        """The chain's rules as ``iptables -S`` lists them."""
        return [_shown_line(["-A", *_rule(spec, a, version)]) for a in addrs]

    def _apply_input(self, spec: FaultSpec, version: int, addrs: list[str], lines: list[str] | None) -> str:
        """The ``iptables-restore --noflush`` input that gives the target the whole rule set, or "" if it already has
        it. ``lines``: the family's current listing (None: plan for an empty target, as a dry run shows).

        The chain line creates the chain, or flushes it if it exists, so its rules end up exactly these; the jump is
        (re)inserted at position 1 unless it is there once already. One transaction: all of it or nothing."""
        chain = spec.chain
        jump = _shown_line(_jump(spec))
        lines = lines or []
        output = [line for line in lines if line.startswith("-A OUTPUT ")]
        jumps = [i for i, line in enumerate(output, 1) if line == f"-A {jump}"]
        have = [line for line in lines if line.startswith(f"-A {chain} ")]
        wanted = self._wanted(spec, version, addrs)
        chain_ok = f"-N {chain}" in lines and have == wanted
        jump_ok = jumps == [1] and not any(_jump_target(line.split()) == chain for line in output[1:])
        if chain_ok and jump_ok:
            return ""
        todo = [] if chain_ok else [f":{chain} - [0:0]", *wanted]
        if not jump_ok:
            todo += ["-D" + line[2:] for line in output if _jump_target(line.split()) == chain]
            todo.append(_shown_line(["-I", "OUTPUT", "1", *_jump(spec)[1:]]))
        return _restore_input(todo)

    def _fresh_input(self, spec: FaultSpec, version: int, addrs: list[str]) -> str:
        """The whole rule set as one transaction that the kernel refuses, changing nothing, if the chain exists
        (``-N``): check and add in one step, so a target is only ever blocked once per run."""
        return _restore_input([f"-N {spec.chain}", *self._wanted(spec, version, addrs),
                               _shown_line(["-I", "OUTPUT", "1", *_jump(spec)[1:]])])

    def _revert_input(self, spec: FaultSpec) -> str:
        """Jump, rules and chain gone in one transaction; refused (nothing changed) unless exactly that exists."""
        return _restore_input([_shown_line(["-D", *_jump(spec)]), f"-F {spec.chain}", f"-X {spec.chain}"])

    def describe(self, spec: FaultSpec) -> list[str]:
        """What apply runs inside each target, per family: one ``iptables-restore --noflush`` with exactly this
        input; only if it is refused because the chain exists, one listing and one transaction with what is missing."""
        lines: list[str] = []
        for runner in runner_for(spec.target, spec.options, secrets=self.secrets):
            for binary, version, addrs in self._families(spec):
                lines.append(runner.shown([f"{binary}-restore", *WAIT, "--noflush"]) + " <<'EOF'")
                lines += self._fresh_input(spec, version, addrs).splitlines() + ["EOF"]
                lines.append(f"# if {spec.chain} exists in {runner.label}: "
                             + runner.shown([binary, *WAIT, "-t", "filter", "-S"])
                             + ", then one transaction with only what is missing (nothing if complete)")
        return lines

    def describe_revert(self, spec: FaultSpec) -> list[str]:
        """What revert runs inside each target, per family: one ``iptables-restore --noflush`` with exactly this
        input; only if it is refused (already gone, or changed since), one listing and one transaction deleting
        whatever of the run is there."""
        lines: list[str] = []
        for runner in runner_for(spec.target, spec.options, missing_ok=True, secrets=self.secrets):
            for binary, _, _ in self._families(spec):
                lines.append(runner.shown([f"{binary}-restore", *WAIT, "--noflush"]) + " <<'EOF'")
                lines += self._revert_input(spec).splitlines() + ["EOF"]
                lines.append(f"# if refused in {runner.label}: " + runner.shown([binary, *WAIT, "-t", "filter", "-S"])
                             + ", then one transaction deleting what of the run is there")
        return lines

    def preflight(self, spec: FaultSpec) -> list[Runner]:
        """Resolve every target and check each has what we need; nothing is changed."""
        _ = self.parallelism  # checked before anything changes
        runners = runner_for(spec.target, spec.options, secrets=self.secrets)
        binaries = [b for b, _, _ in self._families(spec)]

        def check(runner: Runner) -> None:
            if isinstance(runner, HostRunner):
                runner.check_capable()
            for binary in binaries:
                if not runner.has(binary):
                    raise FaultError(f"{binary} not found in {runner.label}; install iptables (scripts/setup)")

        for done in _fan_out(check, runners, self.parallelism):
            if done.error:
                raise done.error
        return runners

    # -- doing

    def _apply_one(self, runner: Runner, spec: FaultSpec, first: Staged | None = None) -> tuple[list[str], float]:
        """Per family: the whole rule set in one transaction (:meth:`_fresh_input`; ``first``: its outcome when it
        was already run staged); if the kernel refuses it because the chain exists, one listing and, only if
        something is missing, one repairing transaction. ``(families changed, time the target was done)``."""
        if first and first.error:
            raise first.error
        changed = []
        at = first.at if first else 0.0
        for binary, version, addrs in self._families(spec):
            argv = [f"{binary}-restore", *WAIT, "--noflush"]
            if first and binary in first.results:
                rc, err = first.results[binary]
            else:
                rc, _, err = runner.run(argv, stdin=self._fresh_input(spec, version, addrs))
                at = time.time()
            if rc != 0:
                script = self._apply_input(spec, version, addrs, _listing(runner, binary))
                if not script:
                    continue  # this run's rule set is already complete here: re-applying is a no-op
                rc, _, err = runner.run(argv, stdin=script)
                at = time.time()
            if rc != 0:
                if isinstance(runner, HostRunner) and runner.nspath and not os.path.exists(runner.nspath):
                    raise TargetNotFound(f"{runner.label} is gone: {err.strip()}")
                raise FaultError(f"{binary}-restore in {runner.label} failed: {err.strip()}")
            changed.append(binary)
        return changed, at or time.time()

    def _staged(self, runners: list[Runner], inputs: Callable[[Runner], list[tuple[str, str]]]) -> dict[int, Staged]:
        """:func:`_staged_transactions` for the local targets (option ``staged_commit``, default on)."""
        if str(self.options.get("staged_commit", True)).lower() in ("0", "false", "no", "off"):
            return {}
        return _staged_transactions(runners, inputs, self.parallelism)

    def apply(self, spec: FaultSpec) -> dict[str, Any]:
        """Give every target the chain, its rules and the jump, targets in parallel (at most ``parallelism`` at
        once); if any target fails, remove the fault from all of them again and raise a FaultError naming the failed
        targets and why. One round of one transaction per target and family, so the first and the last target are
        cut off as close together as the machine allows (``spread``); local targets commit together
        (:func:`_staged_transactions`)."""
        runners = self.preflight(spec)
        fresh = [(b, self._fresh_input(spec, v, a)) for b, v, a in self._families(spec)]
        staged = self._staged(runners, lambda r: fresh)
        results = _fan_out(lambda r: self._apply_one(r, spec, staged.get(id(r))), runners, self.parallelism)
        failed = [(d.runner, d.error) for d in results if d.error]
        if failed:
            undone = _fan_out(lambda r: self._remove_run(r, spec.run_id), runners, self.parallelism)
            stuck = [f"{d.runner.label}: {_error_text(d.error) if d.error else d.value[1]}"
                     for d in undone if (d.error and not isinstance(d.error, TargetNotFound))
                     or (not d.error and d.value[1])]
            reasons = "; ".join(f"{runner.label}: {_error_text(error)}" for runner, error in failed)
            rolled = (f"the other {len(runners) - len(failed)} target(s) were restored" if not stuck
                      else f"ROLLBACK INCOMPLETE, run `chaosext restore --run-id {spec.run_id}`: {'; '.join(stuck)}")
            raise FaultError(f"iptables fault failed on {len(failed)} of {len(runners)} target(s): {reasons}; "
                             f"{rolled}")
        per_target: list[dict[str, Any]] = [{"target": d.runner.label, "changed": d.value[0], "blocked_at": d.value[1]}
                                            for d in results]
        return {"applied": [f"{p['target']} {b}-restore --noflush" for p in per_target for b in p["changed"]],
                "chain": spec.chain, "expires_at": spec.expires_at, "datestop_utc": _datestop(spec.expires_at),
                "targets": [r.label for r in runners], "per_target": per_target,
                "spread": _spread([d.value[1] for d in results])}

    def rules_of(self, runner: Runner, run_id: str, binaries: list[str] | None = None) -> dict[str, Any]:
        """What the target holds for ``run_id``: rule lines per family (``binaries``, default both) and the jump
        position in OUTPUT."""
        chain = ids.chain_name(run_id)
        found: dict[str, Any] = {"rules": [], "chains": [], "jump_positions": []}
        binaries = [b for b, _ in FAMILIES if runner.has(b) and (binaries is None or b in binaries)]
        for binary, lines in _listings(runner, binaries).items():
            position = 0
            for line in lines:
                if line.startswith("-A OUTPUT "):
                    position += 1
                if line == f"-N {chain}":
                    found["chains"].append(binary)
                elif line.startswith("-A ") and _belongs(line, run_id):
                    found["rules"].append(f"{binary} {line}")
                    if line.startswith("-A OUTPUT ") and _jump_target(line.split()) == chain:
                        found["jump_positions"].append(position)
        return found

    def _verify_one(self, runner: Runner, spec: FaultSpec) -> dict[str, Any]:
        timeout = float(spec.options.get("verify_timeout", 1.0))
        want = expected_error(spec.mode)
        families = self._families(spec)
        held = self.rules_of(runner, spec.run_id, [b for b, _, _ in families])
        expect_rules = sum(len(a) + 1 for _, _, a in families)
        probes = [runner.probe(a, spec.port, timeout) for a in spec.addresses]
        ok = (
            len(held["rules"]) >= expect_rules
            and all(p == 1 for p in held["jump_positions"])
            and all(p["error"] in want for p in probes)
        )
        return {"target": runner.label, "blocked": ok, "rules": len(held["rules"]),
                "jump_positions": held["jump_positions"], "probes": probes}

    def verify(self, spec: FaultSpec) -> dict[str, Any]:
        """In every target: rules present, jump first in OUTPUT, and a fresh connect fails the way ``mode`` says."""
        runners = runner_for(spec.target, spec.options, missing_ok=True, secrets=self.secrets)
        results = _fan_out(lambda r: self._verify_one(r, spec), runners, self.parallelism)
        targets = [{"target": d.runner.label, "blocked": False, "error": _error_text(d.error)} if d.error
                   else d.value for d in results]
        return {"blocked": bool(targets) and all(t["blocked"] for t in targets), "targets": targets,
                "expired": time.time() >= spec.expires_at, "expected_error": "|".join(expected_error(spec.mode))}

    def revert(self, spec: FaultSpec) -> dict[str, Any]:
        """Delete the jump(s), flush and delete the chain in both families of every target (targets in parallel;
        one restore transaction per target and family); fine if already gone, or if a target itself is gone."""
        runners = runner_for(spec.target, self.options or spec.options, missing_ok=True, secrets=self.secrets)
        script = self._revert_input(spec)
        staged = self._staged(runners, lambda r: [(b, script) for b, _, _ in self._families(spec)])
        removed, left, spread = self._remove_everywhere(runners, spec.run_id,
                                                        lambda r: self._revert_one(r, spec, staged.get(id(r))))
        if left:
            raise FaultError(f"could not remove every chaosext:{spec.run_id} rule: {left}")
        return {"removed": removed, "left": left, "spread": spread}

    def _revert_one(self, runner: Runner, spec: FaultSpec,
                    first: Staged | None = None) -> tuple[list[str], list[str], float]:
        """Per family of ``spec``: one transaction removing exactly what apply made (:meth:`_revert_input`;
        ``first``: its outcome when it was already run staged); if the kernel refuses it (already gone, or changed
        since), one listing and one transaction removing whatever of the run is there. ``(removed, left, time the
        target was done)``."""
        if first and first.error:
            raise first.error
        removed: list[str] = []
        left: list[str] = []
        at = first.at if first else 0.0
        script = self._revert_input(spec)
        for binary, _, _ in self._families(spec):
            if first and binary in first.results:
                rc = first.results[binary][0]
            else:
                rc, _, _ = runner.run([f"{binary}-restore", *WAIT, "--noflush"], stdin=script)
                at = time.time()
            if rc == 0:
                removed += [f"{binary} {line}" for line in script.splitlines()[1:-1]]
                continue
            gone, still = self._commit_remove(runner, spec.run_id, self._plan_remove(runner, spec.run_id, [binary]))
            at = time.time()
            removed += gone
            left += still
        return removed, left, at or time.time()

    def _remove_everywhere(self, runners: list[Runner], run_id: str,
                           one: Callable[[Runner], tuple[list[str], list[str], float]] | None = None,
                           ) -> tuple[list[str], list[str], dict[str, Any]]:
        """Remove ``run_id`` from every runner, in parallel, with ``one(runner)`` (default: list both families,
        then one transaction each) returning ``(removed, left, done at)``; ``(removed, left, spread)``. Targets
        that are gone count as clean."""
        def listed_then_removed(runner: Runner) -> tuple[list[str], list[str], float]:
            removed, left = self._remove_run(runner, run_id)
            return removed, left, 0.0  # 0: the time the fan-out saw it finish

        results = _fan_out(one or listed_then_removed, runners, self.parallelism)
        removed: list[str] = []
        left: list[str] = []
        for d in results:
            if isinstance(d.error, TargetNotFound):
                continue  # the namespace / pod went away, and its rules with it
            if d.error:
                left.append(f"{d.runner.label}: {_error_text(d.error)}")
                continue
            removed += [f"{d.runner.label} {line}" for line in d.value[0]]
            left += [f"{d.runner.label} {line}" for line in d.value[1]]
        return removed, left, _spread([d.value[2] or d.at for d in results if not d.error])

    def _plan_remove(self, runner: Runner, run_id: str,
                     binaries: list[str] | None = None) -> list[tuple[str, list[str]]]:
        """One listing of the target; ``[(binary, restore lines)]`` deleting ``run_id``'s jumps, rules and chain."""
        chain, tag = ids.chain_name(run_id), ids.tag(run_id)
        plan: list[tuple[str, list[str]]] = []
        present = [b for b, _ in FAMILIES if runner.has(b) and (binaries is None or b in binaries)]
        for binary, lines in _listings(runner, present).items():
            if not any(_belongs(line, run_id) for line in lines):
                continue
            todo = ["-D" + line[2:] for line in _run_lines(lines, chain, tag) if line.split()[1] != chain]
            if f"-N {chain}" in lines:
                todo += [f"-F {chain}", f"-X {chain}"]
            plan.append((binary, todo))
        return plan

    def _commit_remove(self, runner: Runner, run_id: str,
                       plan: list[tuple[str, list[str]]]) -> tuple[list[str], list[str]]:
        """One restore transaction per family (a single kernel commit instead of one per delete); ``(removed,
        left)``: a family whose transaction failed is listed again to say what is left."""
        removed: list[str] = []
        failed: list[str] = []
        for binary, todo in plan:
            rc, _, _ = runner.run([f"{binary}-restore", *WAIT, "--noflush"], stdin=_restore_input(todo))
            if rc == 0:
                removed += [f"{binary} {line}" for line in todo]
            else:
                failed.append(binary)
        left = [f"{binary} {line}" for binary, lines in _listings(runner, failed).items()
                for line in lines if _belongs(line, run_id)]
        return removed, left

    def _remove_run(self, runner: Runner, run_id: str) -> tuple[list[str], list[str]]:
        """Remove ``run_id`` from one target: ``(removed, left)``."""
        return self._commit_remove(runner, run_id, self._plan_remove(runner, run_id))

    def find_orphans(self, target: str) -> list[dict[str, Any]]:
        """Every chaosext chain or tagged rule in every target ``target`` names, by name and comment alone."""
        found: dict[str, dict[str, Any]] = {}
        runners = runner_for(target, self.options, secrets=self.secrets)

        def scan(runner: Runner) -> dict[str, list[str]]:
            return _listings(runner, [b for b, _ in FAMILIES if runner.has(b)])

        for d in _fan_out(scan, runners, self.parallelism):
            if isinstance(d.error, TargetNotFound):
                continue
            for binary, lines in d.value.items():  # another error is raised here
                for line in lines:
                    words = line.split()
                    run_id = _owner(line)  # exact names only: a look-alike is somebody else's
                    if run_id:
                        item = found.setdefault(run_id, {"run_id": run_id, "via": self.via, "target": target,
                                                         "rules": 0, "families": [], "endpoints": [],
                                                         "targets": []})
                        item["rules"] += words[0] == "-A"
                        endpoint = _rule_endpoint(line)
                        if endpoint and endpoint not in item["endpoints"]:
                            item["endpoints"].append(endpoint)
                        if binary not in item["families"]:
                            item["families"].append(binary)
                        if d.runner.label not in item["targets"]:
                            item["targets"].append(d.runner.label)
        return list(found.values())

    def remove_orphan(self, target: str, run_id: str) -> list[str]:
        """Remove one run's rules found by :meth:`find_orphans` in every target (no FaultSpec needed)."""
        check_run_id(run_id)
        runners = runner_for(target, self.options, missing_ok=True, secrets=self.secrets)
        removed, left, _ = self._remove_everywhere(runners, run_id)
        if left:
            raise FaultError(f"could not remove every chaosext:{run_id} rule: {left}")
        return removed
