"""iptables driver: a per-run chain in the filter table, jumped to from position 1 of OUTPUT, in each target netns.

Targets: ``local`` (this process's network namespace), ``netns:<name or glob>`` (``ip netns``), ``pid:<pid>`` (the
network namespace of a process, entered with ``nsenter``), ``k8s-pod:<namespace>/<pod or label selector>`` (commands
run in each pod through the Kubernetes API, see :mod:`chaosext.egress.kubernetes`), or several, comma-separated
(:func:`chaosext.egress.base.split_targets`).

Each target gets its whole rule set in one ``iptables-restore --noflush`` transaction per family, after one listing
that makes re-applying a no-op; all targets are worked on at once (:func:`_batch`: local namespaces from one process
through :mod:`chaosext.egress.netns`, pods through their own batch of exec calls), staged so that they commit
together, all or none. Every rule carries ``-m comment --comment chaosext:<run_id>`` and ``-m time --datestop <UTC
deadline>``, so the kernel stops matching at the deadline even when no chaosext process is alive; the watchdog then
deletes the chain.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

from chaosext.core import ids
from chaosext.core.names import SOCKET_MARK, check_run_id
from chaosext.egress import netns
from chaosext.egress.base import (
    FaultError,
    FaultSpec,
    Ran,
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
NETNS_DIR = "/run/netns"
#: targets contacted at once (driver option ``parallelism`` / configuration ``FAULT_PARALLELISM``): pod exec calls
#: being opened, threads starting processes in local namespaces (at most :data:`chaosext.egress.netns.WORKERS`);
#: once started, every target's command runs at the same time
DEFAULT_PARALLELISM = 16
#: restore processes staged at once before their COMMIT (also capped by the open-file limit); more go in waves
STAGE_MAX = 4096

T = TypeVar("T")
R = TypeVar("R", bound="Runner")


class Runner(Protocol):
    """Runs commands and probes inside one target network namespace.

    A runner class may also offer ``run_batch(items, parallelism, staged) -> list[Ran]`` (one command in each of many
    runners of that class at once, see :func:`_batch`) and ``probe_batch(items, timeout) -> list[list[dict]]``;
    :class:`HostRunner` is batched by :mod:`chaosext.egress.netns` instead."""

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
            cp = netns.in_netns(self.nspath, start) if self.nspath else start()
        except FileNotFoundError as exc:
            raise FaultError(f"{exc.filename} not found on this host; install it (scripts/setup)") from None
        except subprocess.TimeoutExpired:
            raise FaultError(f"timed out after {self.timeout}s: {self.shown(argv)}") from None
        return cp.returncode, cp.stdout, cp.stderr

    def shown(self, argv: list[str]) -> str:
        return shlex.join(self.prefix + argv)

    def probe(self, address: str, port: int, timeout: float, url: str = "") -> dict[str, Any]:
        if not self.prefix:
            return probe_endpoint(address, port, timeout, url)
        if self.nspath:  # a socket made inside the target: no process to start (matters at 100 targets)
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = netns.in_netns(self.nspath, lambda: socket.socket(family, socket.SOCK_STREAM))
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


def _known_binaries(runner: Runner) -> dict[str, bool] | None:
    """The runner's memory of which binaries it has (``known_binaries``, e.g. a pod's), or None."""
    known = getattr(runner, "known_binaries", None)
    return known if isinstance(known, dict) else None


def _present(binaries: list[str]) -> Callable[[Runner], list[str]]:
    """``runner -> the ones of binaries it has``; asked once for all local targets (they share this host's)."""
    local: list[str] | None = None

    def of(runner: Runner) -> list[str]:
        nonlocal local
        if isinstance(runner, HostRunner):
            if local is None:
                local = [b for b in binaries if runner.has(b)]
            return local
        return [b for b in binaries if runner.has(b)]

    return of


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


def _datestop(expires_at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(expires_at))


def _family_addresses(spec: FaultSpec, version: int) -> list[str]:
    return [a for a in spec.addresses if ipaddress.ip_address(a).version == version]


def _rule(spec: FaultSpec, address: str, version: int) -> list[str]:
    prefix = 32 if version == 4 else 128
    target = ["DROP"] if spec.mode == "drop" else ["REJECT", "--reject-with", "tcp-reset"]
    # option exempt_mark: chaosext's own marked connections pass (rotation-during-outage asks the IdP for tokens)
    exempt = ["-m", "mark", "!", "--mark", hex(SOCKET_MARK)] if spec.options.get("exempt_mark") else []
    return [spec.chain, "-d", f"{address}/{prefix}", "-p", "tcp", "-m", "tcp", "--dport", str(spec.port), *exempt,
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


def _listing_commands(runner: Runner, binaries: list[str]) -> list[tuple[list[str], list[str]]]:
    """The commands that list the filter table of each family (``binary -S``): ``[(argv, families it lists)]``. A
    local target gets one process per family; another (a pod) one command for all (one exec round trip)."""
    if not binaries:
        return []
    if len(binaries) == 1 or isinstance(runner, HostRunner):
        return [([b, *WAIT, "-t", "filter", "-S"], [b]) for b in binaries]
    return [(["sh", "-c", f" && echo {SEPARATOR} && ".join(shlex.join([b, *WAIT, "-t", "filter", "-S"])
                                                           for b in binaries)], binaries)]


def _parsed_listing(runner: Runner, argv: list[str], binaries: list[str], rc: int, out: str,
                    err: str) -> dict[str, list[str]]:
    """The lines of each family from one listing command's outcome; TargetNotFound for a namespace that is gone."""
    if rc != 0:
        if isinstance(runner, HostRunner) and runner.nspath and not os.path.exists(runner.nspath):
            raise TargetNotFound(f"{runner.label} is gone: {err.strip()}")
        raise FaultError(f"cannot list rules in {runner.label}: {err.strip()}")
    parts = out.split(f"{SEPARATOR}\n")
    if len(parts) != len(binaries):
        raise FaultError(f"cannot list rules in {runner.label}: unexpected output of {runner.shown(argv)}")
    return {b: part.splitlines() for b, part in zip(binaries, parts, strict=True)}


def _listings(runner: Runner, binaries: list[str]) -> dict[str, list[str]]:
    """``binary -S`` of the filter table for each family, in this one target."""
    found: dict[str, list[str]] = {}
    for argv, covered in _listing_commands(runner, binaries):
        found.update(_parsed_listing(runner, argv, covered, *runner.run(argv)))
    return found


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


def _owned_lines(lines: list[str], run_id: str) -> list[str]:
    """The lines of a listing that are ``run_id``'s (its chain, its rules, the jumps to it), by exact name only."""
    return [line for line in lines if _belongs(line, run_id)]


def _held(listings: dict[str, list[str]], run_id: str) -> dict[str, Any]:
    """What listings of a target hold for ``run_id``: its rule lines (``binary line``), the families with its chain,
    and the position of each jump to it in OUTPUT."""
    chain = ids.chain_name(run_id)
    found: dict[str, Any] = {"rules": [], "chains": [], "jump_positions": []}
    for binary, lines in listings.items():
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


def _restore_input(lines: list[str]) -> str:
    return "*filter\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n"


def _revert_script(run_id: str) -> str:
    """The transaction removing ``run_id``'s jump, rules and chain, as apply made them; the kernel refuses it
    (nothing changed) unless exactly that jump and that chain exist."""
    chain, tag = ids.chain_name(run_id), ids.tag(run_id)  # a run id that is not one never reaches the input
    return _restore_input([_shown_line(["-D", "OUTPUT", "-m", "comment", "--comment", tag, "-j", chain]),
                           f"-F {chain}", f"-X {chain}"])


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


#: one command in one target: ``(runner, argv, stdin, held tail)`` (see :func:`_batch`)
Item = tuple[Runner, list[str], str, str]


def _batch(items: Sequence[Item], parallelism: int, staged: bool = False, capture: bool = True) -> list[Ran]:
    """Every ``(runner, argv, stdin, held)`` at once; one :class:`Ran` each, in order, never raising for one.

    Local targets (:class:`HostRunner`) go through :func:`chaosext.egress.netns.run_all` (processes started in their
    namespaces from this process); a runner class with a ``run_batch`` of its own (pods) through that; any other one
    by one, ``parallelism`` at a time. ``staged``: each command first gets its ``stdin``, and the ``held`` tails are
    sent to all of them together once all wait for them. ``capture``: keep stdout."""
    out: list[Ran] = [Ran() for _ in items]
    groups: dict[type, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(type(item[0]), []).append(index)
    for kind, indexes in groups.items():
        chosen = [items[i] for i in indexes]
        if kind is HostRunner:
            jobs = [netns.Job(argv if cast(HostRunner, r).nspath else cast(HostRunner, r).prefix + argv,
                              nspath=cast(HostRunner, r).nspath, stdin=stdin, held=held, capture=capture)
                    for r, argv, stdin, held in chosen]
            done = netns.run_all(jobs, staged=staged, wave=STAGE_MAX, workers=min(netns.WORKERS, parallelism))
        elif hasattr(kind, "run_batch"):
            done = kind.run_batch(chosen, parallelism, staged)
        else:
            def one(item: Item) -> Ran:
                try:
                    rc, stdout, stderr = item[0].run(item[1], stdin=item[2] + item[3])
                    return Ran(rc, stdout, stderr, time.time())
                except Exception as exc:
                    return Ran(error=exc, at=time.time())

            with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(chosen))),
                                    thread_name_prefix="chaosext-egress") as pool:
                done = list(pool.map(one, chosen))
        for index, ran in zip(indexes, done, strict=True):
            out[index] = ran
    return out


def _list_all(runners: Sequence[Runner], binaries: Callable[[Runner], list[str]],
              parallelism: int) -> list[Done[Runner, dict[str, list[str]]]]:
    """:func:`_listings` of every runner (the families ``binaries(runner)``), all at once (:func:`_batch`)."""
    items: list[Item] = []
    owners: list[tuple[int, list[str]]] = []
    for pos, runner in enumerate(runners):
        for argv, covered in _listing_commands(runner, binaries(runner)):
            items.append((runner, argv, "", ""))
            owners.append((pos, covered))
    found: list[dict[str, list[str]]] = [{} for _ in runners]
    errors: list[Exception | None] = [None for _ in runners]
    at = [0.0 for _ in runners]
    for (pos, covered), item, ran in zip(owners, items, _batch(items, parallelism), strict=True):
        at[pos] = max(at[pos], ran.at)
        if errors[pos] is not None:
            continue
        try:
            if ran.error is not None:
                raise ran.error
            found[pos].update(_parsed_listing(runners[pos], item[1], covered, ran.returncode, ran.stdout,
                                              ran.stderr))
        except Exception as exc:
            errors[pos] = exc
    return [Done(r, None if errors[i] else found[i], errors[i], at[i] or time.time()) for i, r in enumerate(runners)]


@dataclass
class Staged:
    """One target's staged transactions: ``results`` {binary: (returncode, stderr)}, ``at`` when the last finished;
    or the ``error`` that kept them from starting."""

    results: dict[str, tuple[int, str]] = field(default_factory=dict)
    at: float = 0.0
    error: Exception | None = None


def _staged_transactions(runners: list[Runner], inputs: Callable[[Runner], list[tuple[str, str]]],
                         parallelism: int, staged: bool = True) -> dict[int, Staged]:
    """Run one restore transaction per ``(binary, input)`` of ``inputs(runner)`` in every runner, all at once, so that
    they commit at (nearly) the same moment.

    ``staged``: every ``<binary>-restore --noflush`` is started in its target and fed its input without the final
    ``COMMIT``; once every process waits on its stdin (it has parsed its rules) or a few seconds passed, all the
    ``COMMIT`` lines go out in one go (:func:`chaosext.egress.netns.run_all`). The kernel commits each target's
    transaction as that line arrives, so the targets are cut off within milliseconds of each other rather than one
    process start apart. Local targets are not staged where iptables is the legacy variant: every legacy
    ``iptables-restore`` holds one host-wide lock (``/run/xtables.lock``) from its table line to its end, so staged
    ones would wait for each other until ``-w`` gives up; there they commit one after another as the lock allows.
    Returns ``{id(runner): Staged}``."""
    items: list[Item] = []
    owners: list[tuple[Runner, str]] = []
    for runner in runners:
        for binary, script in inputs(runner):
            items.append((runner, [f"{binary}-restore", *WAIT, "--noflush"], script[:-len("COMMIT\n")], "COMMIT\n"))
            owners.append((runner, binary))
    locked = {b for _, b in owners if not netns.nft_backed(b)}
    ran_all: list[Ran] = [Ran() for _ in items]
    for local in (True, False):
        chosen = [i for i, (runner, _) in enumerate(owners) if isinstance(runner, HostRunner) == local]
        done = _batch([items[i] for i in chosen], parallelism, staged=staged and not (local and locked),
                      capture=False)
        for i, ran in zip(chosen, done, strict=True):
            ran_all[i] = ran
    out: dict[int, Staged] = {}
    for (runner, binary), ran in zip(owners, ran_all, strict=True):
        entry = out.setdefault(id(runner), Staged())
        if ran.error is not None:
            entry.error = entry.error or ran.error
            continue
        entry.results[binary] = (ran.returncode, ran.stderr)
        entry.at = max(entry.at, ran.at)
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
        return _revert_script(spec.run_id)

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
        """Resolve every target and check each has what we need; nothing is changed. Local targets share this host's
        binaries and capabilities, so one of each kind is checked; pods are asked once each, all at once."""
        _ = self.parallelism  # checked before anything changes
        runners = runner_for(spec.target, spec.options, secrets=self.secrets)
        binaries = [b for b, _, _ in self._families(spec)]
        self._learn_binaries(runners, binaries)
        checked: set[tuple[type, bool]] = set()

        def check(runner: Runner) -> None:
            if isinstance(runner, HostRunner):
                kind = (HostRunner, bool(runner.prefix))
                if kind in checked:
                    return
                checked.add(kind)
                runner.check_capable()
            for binary in binaries:
                if not runner.has(binary):
                    raise FaultError(f"{binary} not found in {runner.label}; install iptables (scripts/setup)")

        for runner in runners:
            check(runner)
        return runners

    def _learn_binaries(self, runners: Sequence[Runner], binaries: list[str]) -> None:
        """Ask every runner that remembers its binaries (``known_binaries``, pods) which of ``binaries`` it has, in
        one command each, all at once, so that the ``has`` checks after it cost no round trip."""
        asking = [(r, known) for r in runners if (known := _known_binaries(r)) is not None
                  and any(b not in known for b in binaries)]
        if not asking:
            return
        script = "; ".join(f"command -v {shlex.quote(b)} >/dev/null 2>&1 && echo {shlex.quote(b)}" for b in binaries)
        for (_, known), ran in zip(asking, _batch([(r, ["sh", "-c", script + "; true"], "", "") for r, _ in asking],
                                                  self.parallelism), strict=True):
            if ran.error is None and ran.returncode == 0:
                found = set(ran.stdout.split())
                known.update({b: b in found for b in binaries})

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

    @property
    def staged_commit(self) -> bool:
        """Option ``staged_commit`` (default on): hold every target's COMMIT until all have parsed their input."""
        return str(self.options.get("staged_commit", True)).lower() not in ("0", "false", "no", "off")

    def _staged(self, runners: list[Runner], inputs: Callable[[Runner], list[tuple[str, str]]]) -> dict[int, Staged]:
        """:func:`_staged_transactions` for every target (the COMMITs held back unless ``staged_commit`` is off)."""
        return _staged_transactions(runners, inputs, self.parallelism, staged=self.staged_commit)

    def apply(self, spec: FaultSpec) -> dict[str, Any]:
        """Give every target the chain, its rules and the jump, all targets at once; if any target fails, remove the
        fault from all of them again and raise a FaultError naming the failed targets and why. One round of one
        transaction per target and family, committed together (:func:`_staged_transactions`), so the first and the
        last target are cut off as close together as the machine allows (``spread``)."""
        runners = self.preflight(spec)
        fresh = [(b, self._fresh_input(spec, v, a)) for b, v, a in self._families(spec)]
        staged = self._staged(runners, lambda r: fresh)
        results = _fan_out(lambda r: self._apply_one(r, spec, staged.get(id(r))), runners, self.parallelism)
        failed = [(d.runner, d.error) for d in results if d.error]
        if failed:
            _, stuck, _ = self._remove_all(runners, spec.run_id, self._revert_input(spec),
                                           _present([b for b, _, _ in self._families(spec)]))
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
        binaries = [b for b, _ in FAMILIES if runner.has(b) and (binaries is None or b in binaries)]
        return _held(_listings(runner, binaries), run_id)

    def _read_rules(self, runners: list[Runner], binaries: list[str]) -> list[Done[Runner, dict[str, list[str]]]]:
        """The listings the checks read, all targets at once: for local targets of an nf_tables iptables, read from
        the kernel without a process (:func:`chaosext.egress.netns.listings`; a target whose read fails is listed
        with ``iptables -S`` instead), else ``iptables -S`` in each (:func:`_list_all`)."""
        present = _present(binaries)
        host = [i for i, r in enumerate(runners) if isinstance(r, HostRunner)]
        out: dict[int, Done[Runner, dict[str, list[str]]]] = {}
        if host and all(netns.nft_backed(b) for b in present(runners[host[0]])):
            read = netns.listings([(cast(HostRunner, runners[i]).nspath, present(runners[i])) for i in host])
            for i, found in zip(host, read, strict=True):
                if isinstance(found, TargetNotFound):
                    out[i] = Done(runners[i], None, found, time.time())
                elif not isinstance(found, Exception):
                    out[i] = Done(runners[i], found, None, time.time())
        rest = [i for i in range(len(runners)) if i not in out]
        for i, done in zip(rest, _list_all([runners[i] for i in rest], present, self.parallelism), strict=True):
            out[i] = done
        return [out[i] for i in range(len(runners))]

    def _probe_all(self, runners: Sequence[Runner], spec: FaultSpec) -> list[list[dict[str, Any]]]:
        """A fresh connect to every JWKS address from inside every target, all at once: ``[probes of each runner]``.
        Drop mode: no answer within ``verify_timeout`` (default 1 s) means dropped, or within ``local_verify_timeout``
        (default 0.2 s) where the path stays on this host (:func:`chaosext.egress.netns.path_is_local`)."""
        timeout = float(spec.options.get("verify_timeout", 1.0))
        local = float(spec.options.get("local_verify_timeout", netns.LOCAL_VERIFY_TIMEOUT)) \
            if spec.mode == "drop" else None
        out: list[list[dict[str, Any]]] = [[] for _ in runners]
        host = [i for i, r in enumerate(runners) if isinstance(r, HostRunner)]
        asked = [(i, a) for i in host for a in spec.addresses]
        found = netns.connect_all([(cast(HostRunner, runners[i]).nspath, a, spec.port) for i, a in asked], timeout,
                                  local)
        for (i, _), probe in zip(asked, found, strict=True):
            out[i].append(probe)
        others: dict[type, list[int]] = {}
        for i, r in enumerate(runners):
            if not isinstance(r, HostRunner):
                others.setdefault(type(r), []).append(i)
        for kind, indexes in others.items():
            if hasattr(kind, "probe_batch"):
                batch = kind.probe_batch([(runners[i], list(spec.addresses), spec.port) for i in indexes], timeout,
                                         self.parallelism)
            else:
                batch = [d.result or [{"address": "", "port": spec.port, "reachable": False, "status": 0,
                                       "elapsed_ms": 0.0, "error": _error_text(d.error or FaultError("?"))}]
                         for d in _fan_out(lambda r: [r.probe(a, spec.port, timeout) for a in spec.addresses],
                                           [runners[i] for i in indexes], self.parallelism)]
            for i, probes in zip(indexes, batch, strict=True):
                out[i] = probes
        return out

    def verify(self, spec: FaultSpec) -> dict[str, Any]:
        """In every target: rules present, jump first in OUTPUT, and a fresh connect fails the way ``mode`` says.
        All targets at once: one listing per target and family, and every connect in one loop (one timeout)."""
        runners = runner_for(spec.target, spec.options, missing_ok=True, secrets=self.secrets)
        families = self._families(spec)
        binaries = [b for b, _, _ in families]
        self._learn_binaries(runners, binaries)
        listed = self._read_rules(runners, binaries)
        probed = self._probe_all(runners, spec)
        want = expected_error(spec.mode)
        expect_rules = sum(len(a) + 1 for _, _, a in families)
        targets: list[dict[str, Any]] = []
        for done, probes in zip(listed, probed, strict=True):
            if done.error:
                targets.append({"target": done.runner.label, "blocked": False, "error": _error_text(done.error)})
                continue
            held = _held(done.value, spec.run_id)
            ok = (
                len(held["rules"]) >= expect_rules
                and all(p == 1 for p in held["jump_positions"])
                and bool(probes) and all(p["error"] in want for p in probes)
            )
            targets.append({"target": done.runner.label, "blocked": ok, "rules": len(held["rules"]),
                            "jump_positions": held["jump_positions"], "probes": probes})
        return {"blocked": bool(targets) and all(t["blocked"] for t in targets), "targets": targets,
                "expired": time.time() >= spec.expires_at, "expected_error": "|".join(want)}

    def revert(self, spec: FaultSpec) -> dict[str, Any]:
        """Delete the jump(s), flush and delete the chain in both families of every target, all at once (one restore
        transaction per target and family, committed together); fine if already gone, or if a target itself is
        gone."""
        runners = runner_for(spec.target, self.options or spec.options, missing_ok=True, secrets=self.secrets)
        removed, left, spread = self._remove_all(runners, spec.run_id, self._revert_input(spec),
                                                 _present([b for b, _, _ in self._families(spec)]))
        if left:
            raise FaultError(f"could not remove every chaosext:{spec.run_id} rule: {left}")
        return {"removed": removed, "left": left, "spread": spread}

    def _remove_all(self, runners: list[Runner], run_id: str, script: str = "",
                    families: Callable[[Runner], list[str]] | None = None,
                    ) -> tuple[list[str], list[str], dict[str, Any]]:
        """Remove ``run_id`` from every runner, all at once; ``(removed, left, spread)``. Targets that are gone count
        as clean.

        With ``script`` (the exact revert transaction, :meth:`_revert_input`), first that transaction in each family
        ``families(runner)``, committed together. Where it is refused (already gone, or changed since) -- or without
        a script -- one listing, then one transaction deleting whatever of the run is there; a family whose
        transaction fails is listed again to say what is left."""
        removed: list[str] = []
        left: list[str] = []
        done_at: dict[int, float] = {}
        self._learn_binaries(runners, [b for b, _ in FAMILIES])
        rest = list(runners)
        if script:
            of = families or _present([b for b, _ in FAMILIES])
            staged = self._staged(runners, lambda r: [(b, script) for b in of(r)])
            rest = []
            for runner in runners:
                first = staged.get(id(runner), Staged())
                if isinstance(first.error, TargetNotFound):
                    continue  # the namespace / pod went away, and its rules with it
                if first.error:
                    left.append(f"{runner.label}: {_error_text(first.error)}")
                    continue
                if not first.results or any(rc != 0 for rc, _ in first.results.values()):
                    rest.append(runner)  # refused (or not run): list, then remove what is there
                    continue
                removed += [f"{runner.label} {binary} {line}" for binary in first.results
                            for line in script.splitlines()[1:-1]]
                done_at[id(runner)] = first.at
        listed = _list_all(rest, _present([b for b, _ in FAMILIES]), self.parallelism)
        plans: list[tuple[Runner, str, list[str]]] = []
        for done in listed:
            if isinstance(done.error, TargetNotFound):
                continue
            if done.error:
                left.append(f"{done.runner.label}: {_error_text(done.error)}")
                continue
            plans += [(done.runner, binary, todo)
                      for binary, todo in self._plan_remove(done.runner, run_id, listings=done.value)]
        ran = _batch([(r, [f"{b}-restore", *WAIT, "--noflush"], _restore_input(todo), "") for r, b, todo in plans],
                     self.parallelism, capture=False)
        failed: dict[int, tuple[Runner, list[str]]] = {}
        for (runner, binary, todo), outcome in zip(plans, ran, strict=True):
            done_at[id(runner)] = max(done_at.get(id(runner), 0.0), outcome.at)
            if outcome.error is None and outcome.returncode == 0:
                removed += [f"{runner.label} {binary} {line}" for line in todo]
            elif not isinstance(outcome.error, TargetNotFound):
                failed.setdefault(id(runner), (runner, []))[1].append(binary)
        again = _list_all([r for r, _ in failed.values()], lambda r: failed[id(r)][1], self.parallelism)
        for done in again:
            if isinstance(done.error, TargetNotFound):
                continue
            if done.error:
                left.append(f"{done.runner.label}: {_error_text(done.error)}")
                continue
            left += [f"{done.runner.label} {binary} {line}" for binary, lines in done.value.items()
                     for line in _owned_lines(lines, run_id)]
        return removed, left, _spread([t for t in done_at.values() if t])

    def _plan_remove(self, runner: Runner, run_id: str, binaries: list[str] | None = None,
                     listings: dict[str, list[str]] | None = None) -> list[tuple[str, list[str]]]:
        """One listing of the target (or ``listings``, made already); ``[(binary, restore lines)]`` deleting
        ``run_id``'s jumps, rules and chain."""
        chain, tag = ids.chain_name(run_id), ids.tag(run_id)
        plan: list[tuple[str, list[str]]] = []
        if listings is None:
            present = [b for b, _ in FAMILIES if runner.has(b) and (binaries is None or b in binaries)]
            listings = _listings(runner, present)
        for binary, lines in listings.items():
            if not any(_belongs(line, run_id) for line in lines):
                continue
            todo = ["-D" + line[2:] for line in _run_lines(lines, chain, tag) if line.split()[1] != chain]
            if f"-N {chain}" in lines:
                todo += [f"-F {chain}", f"-X {chain}"]
            plan.append((binary, todo))
        return plan

    def find_orphans(self, target: str) -> list[dict[str, Any]]:
        """Every chaosext chain or tagged rule in every target ``target`` names, by name and comment alone."""
        found: dict[str, dict[str, Any]] = {}
        runners = runner_for(target, self.options, secrets=self.secrets)
        self._learn_binaries(runners, [b for b, _ in FAMILIES])

        for d in self._read_rules(runners, [b for b, _ in FAMILIES]):
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
        self._learn_binaries(runners, [b for b, _ in FAMILIES])
        holding: dict[int, list[str]] = {}
        for done in self._read_rules(runners, [b for b, _ in FAMILIES]):
            if isinstance(done.error, TargetNotFound):
                continue  # gone, and its rules with it
            held = [b for b, lines in done.value.items() if _owned_lines(lines, run_id)] if done.error is None \
                else _present([b for b, _ in FAMILIES])(done.runner)  # unreadable: try, then list and say what is left
            if held:
                holding[id(done.runner)] = held
        removed, left, _ = self._remove_all([r for r in runners if id(r) in holding], run_id,
                                            _revert_script(run_id), lambda r: holding[id(r)])
        if left:
            raise FaultError(f"could not remove every chaosext:{run_id} rule: {left}")
        return removed
