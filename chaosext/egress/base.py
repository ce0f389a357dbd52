"""What every egress driver shares: the fault description, input checks, the fault record, the reachability probe.

Nothing here changes the system except the JSON records under the state directory (``$CHAOSEXT_STATE_DIR``, else
``~/.chaosext/faults`` for a user and ``/var/lib/chaosext/faults`` for root): a 0700 directory of 0600 records, written
and read root-safe (:mod:`chaosext.core.safefs`). A record read back is acted on only when it is a file of ours in
such a directory, is named after a run id and holds a spec that passes every input check (:meth:`FaultSpec.from_dict`):
a forged record never picks a driver, target or URL, and a run id never becomes ``../x``.
Run as ``python3 -m chaosext.egress.base probe <address> <port> <timeout> [<url>]`` it prints one JSON probe result;
drivers use that to probe from inside another network namespace.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import secrets
import socket
import ssl
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NotRequired, Protocol, TypedDict
from urllib.parse import urlsplit

from chaosext.core import ids, safefs, urls
from chaosext.core.errors import ChaosextError, ConfigError
from chaosext.core.faulttarget import ITEM_KINDS, TargetError, split_items
from chaosext.core.limits import MAX_OUTAGE_SECONDS
from chaosext.core.names import FAULT_MODES, FAULT_VIAS, check_run_id
from chaosext.core.procs import proc_start_time

__all__ = [
    "FaultSpec",
    "Driver",
    "FaultError",
    "TargetNotFound",
    "TARGET_KINDS",
    "split_targets",
    "DEFAULT_JWKS_URL",
    "MAX_OUTAGE_SECONDS",
    "VIAS",
    "MODES",
    "FORBIDDEN_PORTS",
    "parse_jwks_url",
    "resolve_addresses",
    "check_duration",
    "check_mode",
    "check_not_control_plane",
    "new_run_id",
    "make_spec",
    "state_dir",
    "FaultRecord",
    "save_record",
    "load_records",
    "delete_record",
    "this_process",
    "owned_by_this_process",
    "probe_endpoint",
    "expected_error",
    "classify_error",
    "Ran",
]

DEFAULT_JWKS_URL = "http://127.0.0.2:8440/.well-known/jwks.json"

VIAS = FAULT_VIAS
MODES = FAULT_MODES
#: DNS and the Kubernetes API server: never blocked, whatever the JWKS URL says.
FORBIDDEN_PORTS = (53, 6443)
logger = logging.getLogger("chaostoolkit")


class FaultError(ChaosextError, RuntimeError):
    """A fault could not be planned, applied or removed; the message says what to do."""


class TargetNotFound(FaultError):
    """A target (namespace, process, pod) does not exist (any more); revert treats that as nothing to remove."""


#: target kinds of the iptables driver (``local`` has no name)
TARGET_KINDS = ITEM_KINDS


def split_targets(target: str) -> list[str]:
    """The iptables items of a comma-separated ``FAULT_TARGET`` (``chaosext.core.faulttarget.split_items``, the one
    parser), its errors as FaultError. Globs are expanded later (by the driver, against the namespaces that exist
    then)."""
    try:
        return list(split_items(target))
    except TargetError as exc:
        raise FaultError(str(exc)) from None


@dataclass(frozen=True)
class FaultSpec:
    """One JWKS egress fault: what to block, where, how, and until when.

    ``expires_at`` (UTC epoch seconds) is the deadline the kernel or the watchdog enforces; 0 means
    "``duration_seconds`` from when it is applied" and is fixed by :func:`make_spec`.
    """

    jwks_url: str
    host: str
    port: int
    addresses: tuple[str, ...]
    via: str
    target: str
    mode: str
    duration_seconds: int
    run_id: str
    expires_at: float = 0.0
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def chain(self) -> str:
        """The per-run iptables chain name."""
        return f"CHAOSEXT-{self.run_id}"

    @property
    def tag(self) -> str:
        """The comment / label value that marks everything this run creates."""
        return f"chaosext:{self.run_id}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (addresses as a list)."""
        d = asdict(self)
        d["addresses"] = list(self.addresses)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaultSpec:
        """Inverse of :meth:`to_dict`, for a spec read back (a record, the watchdog's input): every field is checked
        as :func:`make_spec` checks it, FaultError otherwise."""
        if not isinstance(d, dict):
            raise FaultError("a fault spec must be a JSON object")
        d = dict(d)
        d["addresses"] = tuple(d.get("addresses", ()))
        d.setdefault("options", {})
        try:
            spec = cls(**d)
        except TypeError as exc:
            raise FaultError(f"not a fault spec ({exc})") from None
        spec.check()
        return spec

    def check(self) -> None:
        """FaultError unless every field is one :func:`make_spec` could have made."""
        try:
            check_run_id(self.run_id, "fault run id")
        except ConfigError as exc:
            raise FaultError(str(exc)) from None
        if self.via not in VIAS or self.mode not in MODES:
            raise FaultError(f"fault {self.run_id}: unknown via {self.via!r} or mode {self.mode!r}")
        if not isinstance(self.target, str) or not self.target or any(ord(c) < 0x20 for c in self.target):
            raise FaultError(f"fault {self.run_id}: target {self.target!r} is not a target")
        host, port = parse_jwks_url(self.jwks_url)
        if (host, port) != (self.host, self.port):
            raise FaultError(f"fault {self.run_id}: host/port {self.host}:{self.port} is not the JWKS URL's")
        try:
            [ipaddress.ip_address(a) for a in self.addresses]
        except (TypeError, ValueError):
            raise FaultError(f"fault {self.run_id}: addresses {self.addresses!r} are not IP addresses") from None
        check_not_control_plane(self.host, self.port, self.addresses)
        if not isinstance(self.duration_seconds, int) or isinstance(self.duration_seconds, bool) \
                or self.duration_seconds <= 0 or not isinstance(self.expires_at, (int, float)) \
                or not isinstance(self.options, dict):
            raise FaultError(f"fault {self.run_id}: duration, deadline or options are not what chaosext writes")


class Driver(Protocol):
    """The interface every egress driver implements (docs/architecture.md, "Egress fault")."""

    via: str

    def describe(self, spec: FaultSpec) -> list[str]:
        """Exact commands / API calls apply would make (dry run)."""

    def describe_revert(self, spec: FaultSpec) -> list[str]:
        """Exact commands / API calls revert would make (dry run)."""

    def apply(self, spec: FaultSpec) -> dict[str, Any]:
        """Make the fault; idempotent for the same spec."""

    def verify(self, spec: FaultSpec) -> dict[str, Any]:
        """``{"blocked": bool, ...}`` checked from the target's point of view."""

    def revert(self, spec: FaultSpec) -> dict[str, Any]:
        """Remove everything ``spec.run_id`` made; tolerant of things already gone."""

    def find_orphans(self, target: str) -> list[dict[str, Any]]:
        """Every chaosext fault on ``target``, found by tags/labels alone: ``[{"run_id": ..., "via": ...,
        "target": ..., ...}]``; ``endpoints`` (``addr:port`` it blocks) where the driver can tell."""

    def remove_orphan(self, target: str, run_id: str) -> list[str]:
        """Remove what :meth:`find_orphans` found of ``run_id`` on ``target``; what was removed."""


def parse_jwks_url(url: str) -> tuple[str, int]:
    """Return ``(host, port)`` of an http(s) URL as requests would reach it (chaosext.core.urls: no user info,
    backslash or parser disagreement), or raise FaultError."""
    if not url:
        raise FaultError("no JWKS URL: pass jwks_url or set JWKS_URL in the configuration")
    try:
        parsed = urls.parse(url, "JWKS URL")
    except urls.UrlError as exc:
        raise FaultError(f"{exc} (e.g. {DEFAULT_JWKS_URL})") from None
    return parsed.host, parsed.port


def resolve_addresses(host: str, port: int) -> tuple[str, ...]:
    """Every A and AAAA address of ``host`` (a literal IP resolves to itself), in a stable order."""
    try:
        return (str(ipaddress.ip_address(host)),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FaultError(f"cannot resolve JWKS host {host!r} ({exc}); check the URL or DNS") from None
    seen: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            addr = str(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
            if addr not in seen:
                seen.append(addr)
    if not seen:
        raise FaultError(f"JWKS host {host!r} has no A or AAAA record")
    return tuple(sorted(seen, key=lambda a: (ipaddress.ip_address(a).version, a)))


def check_duration(duration_seconds: int, max_duration_seconds: int = MAX_OUTAGE_SECONDS) -> int:
    """Return the duration as int if 0 < duration <= cap, else raise FaultError."""
    try:
        duration = int(duration_seconds)
        cap = int(max_duration_seconds)
    except (TypeError, ValueError):
        raise FaultError(f"the fault's deadline {duration_seconds!r} is not a whole number of seconds") from None
    if duration <= 0:
        raise FaultError(f"the fault's deadline must be > 0 seconds (got {duration}); the fault needs a deadline")
    if duration > cap:
        raise FaultError(
            f"the fault's deadline of {duration} s is above the cap of {cap} s (the deadline of MAX_OUTAGE_SECONDS); "
            f"shorten the outage or raise MAX_OUTAGE_SECONDS"
        )
    return duration


def check_mode(mode: str) -> str:
    """Return the mode if it is one of :data:`MODES`."""
    if mode not in MODES:
        raise FaultError(f"unknown mode {mode!r}: use 'drop' (timeouts) or 'reject' (refused at once)")
    return mode


def _kube_api_addresses() -> set[str]:
    """Addresses of the Kubernetes API server known without network calls (in-cluster env)."""
    found: set[str] = set()
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    if host:
        try:
            found.add(str(ipaddress.ip_address(host)))
        except ValueError:
            pass
    return found


def check_not_control_plane(host: str, port: int, addresses: tuple[str, ...]) -> None:
    """Refuse to block DNS or the Kubernetes API server."""
    if port in FORBIDDEN_PORTS:
        raise FaultError(f"refusing to block port {port}: DNS (53) and the Kubernetes API (6443) are never blocked")
    api = _kube_api_addresses() & set(addresses)
    if api:
        raise FaultError(f"refusing: JWKS host {host} resolves to the Kubernetes API server ({', '.join(sorted(api))})")
    for addr in addresses:
        ip = ipaddress.ip_address(addr)
        if ip.is_unspecified or ip.is_multicast:
            raise FaultError(f"refusing to block {addr}: not a unicast JWKS address")


def new_run_id() -> str:
    """A short random hex id naming one fault (chain CHAOSEXT-<run_id>)."""
    return secrets.token_hex(4)


def make_spec(
    jwks_url: str,
    via: str,
    target: str,
    mode: str,
    duration_seconds: int,
    max_duration_seconds: int = MAX_OUTAGE_SECONDS,
    run_id: str = "",
    expires_at: float = 0.0,
    options: dict[str, Any] | None = None,
    resolve: bool = True,
) -> FaultSpec:
    """Check every input and build a :class:`FaultSpec`; raises FaultError before anything changes."""
    if via not in VIAS:
        raise FaultError(f"unknown via {via!r}: use one of {', '.join(VIAS)}")
    if run_id and not ids.is_run_id(run_id):  # before it reaches a chain name, a path or iptables-restore input
        raise FaultError(f"run_id {run_id!r} is not a chaosext run id (8 lower-case hex digits, e.g. 1a2b3c4d)")
    check_mode(mode)
    duration = check_duration(duration_seconds, max_duration_seconds)
    host, port = parse_jwks_url(jwks_url)
    addresses = resolve_addresses(host, port) if resolve else ()
    check_not_control_plane(host, port, addresses)
    return FaultSpec(
        jwks_url=jwks_url,
        host=host,
        port=port,
        addresses=addresses,
        via=via,
        target=target,
        mode=mode,
        duration_seconds=duration,
        run_id=run_id or new_run_id(),
        expires_at=expires_at or float(math.ceil(time.time()) + duration),
        options=dict(options or {}),
    )


# ---------------------------------------------------------------- fault records


def state_dir() -> Path:
    """``$CHAOSEXT_STATE_DIR``, else ``~/.chaosext/faults`` (a user) or ``/var/lib/chaosext/faults`` (root)."""
    explicit = os.environ.get("CHAOSEXT_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().absolute()
    return Path(safefs.default_dir(Path.home() / ".chaosext" / "faults", "faults"))


class FaultRecord(TypedDict):
    """A fault record: ``<state_dir>/<run_id>.json`` plus ``path``, where :func:`load_records` found it."""

    #: :meth:`FaultSpec.to_dict`
    spec: dict[str, Any]
    recorded_at: float
    #: ``applying`` while the driver works, then ``active``
    status: str
    #: the dead-man watchdog's pid (0: none) and its start time (``chaosext.core.procs.proc_start_time``)
    watchdog_pid: NotRequired[int]
    watchdog_start_time: NotRequired[str]
    #: the process that applied the fault: {"pid", "start"} (start: its start time in clock ticks since boot)
    owner: NotRequired[dict[str, int]]
    path: NotRequired[str]


RECORD_STATUSES = ("applying", "active")


def save_record(spec: FaultSpec, status: str, watchdog_pid: int | None = None,
                watchdog_start_time: str | None = None) -> Path:
    """Write ``<state_dir>/<run_id>.json`` (0600, in a 0700 directory) atomically, with this process as the fault's
    owner; returns its path."""
    record: FaultRecord = {"spec": spec.to_dict(), "recorded_at": time.time(), "status": status,
                           "owner": this_process()}
    if watchdog_pid is not None:
        record["watchdog_pid"] = watchdog_pid
        record["watchdog_start_time"] = watchdog_start_time or ""
    return safefs.write_file(state_dir() / f"{check_run_id(spec.run_id)}.json",
                             json.dumps(record, indent=1, sort_keys=True))


def _checked_record(d: safefs.SafeDir, name: str) -> FaultRecord:
    """The record ``name`` of ``d``, every field checked (FaultError, UnsafePath, ValueError otherwise)."""
    rec = json.loads(d.read_text(name))
    if not isinstance(rec, dict) or not isinstance(rec.get("spec"), dict):
        raise FaultError("not a fault record")
    spec = FaultSpec.from_dict(rec["spec"])
    if f"{spec.run_id}.json" != name:
        raise FaultError(f"names run {spec.run_id}, not the one of its file name")
    if rec.get("status") not in RECORD_STATUSES or not isinstance(rec.get("recorded_at"), (int, float)) \
            or not isinstance(rec.get("watchdog_pid", 0), int) or not isinstance(rec.get("watchdog_start_time", ""),
                                                                                   str):
        raise FaultError("status, time or watchdog are not what chaosext writes")
    owner = rec.get("owner")
    if owner is not None and not (isinstance(owner, dict) and all(isinstance(owner.get(k), int) and
                                                                  not isinstance(owner.get(k), bool)
                                                                  for k in ("pid", "start"))):
        raise FaultError("its owner is not what chaosext writes")
    checked: FaultRecord = {"spec": spec.to_dict(), "recorded_at": float(rec["recorded_at"]),
                            "status": str(rec["status"]), "path": d.shown(name)}
    if owner is not None:
        checked["owner"] = {"pid": int(owner["pid"]), "start": int(owner["start"])}
    if "watchdog_pid" in rec:
        checked["watchdog_pid"] = int(rec["watchdog_pid"])
        checked["watchdog_start_time"] = str(rec.get("watchdog_start_time", ""))
    return checked


def load_records() -> list[FaultRecord]:
    """Every fault record chaosext can trust: ``<run id>.json`` files of ours in the (safe) state directory whose
    every field checks. Anything else is skipped with a warning, never acted on. UnsafePath when the state directory
    itself is not safe."""
    try:
        d = safefs.open_dir(state_dir())
    except FileNotFoundError:
        return []
    out = []
    with d:
        for name in d.listdir():
            if not name.endswith(".json") or not ids.is_run_id(name[:-len(".json")]):
                continue
            try:
                out.append(_checked_record(d, name))
            except (OSError, ValueError, KeyError, TypeError, ChaosextError) as exc:
                logger.warning("chaosext: ignoring fault record %s: %s", d.shown(name), exc)
    return out


def this_process() -> dict[str, int]:
    """This process as a fault record names its owner: pid and start time (a reused pid is not the owner)."""
    return {"pid": os.getpid(), "start": int(proc_start_time(os.getpid()) or 0)}


def owned_by_this_process(record: FaultRecord) -> bool:
    """True when this very process applied the fault of ``record``."""
    return record.get("owner") == this_process()


def delete_record(run_id: str) -> bool:
    """Remove the record of ``run_id`` (a run id, never a path); True if there was one."""
    try:
        check_run_id(run_id)
    except ConfigError as exc:
        raise FaultError(str(exc)) from None
    return safefs.remove(state_dir() / f"{run_id}.json")


@dataclass
class Ran:
    """One command's outcome in one target of a batch (drivers run a command in many targets at once)."""

    returncode: int = -1
    stdout: str = ""
    stderr: str = ""
    #: wall time it ended (epoch seconds)
    at: float = 0.0
    #: why it could not run at all (the target is gone: TargetNotFound), or None
    error: Exception | None = None


# ---------------------------------------------------------------- reachability probe


def expected_error(mode: str) -> tuple[str, ...]:
    """Probe errors that mean "blocked the way ``mode`` blocks"."""
    return ("timeout",) if mode == "drop" else ("refused", "reset")


def classify_error(exc: BaseException) -> str:
    """A connect's error as the probes name it: ``timeout``, ``refused``, ``reset``, ``tls``, ``unreachable``, or
    the exception's class name."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, OSError) and exc.errno in (101, 113):
        return "unreachable"
    return type(exc).__name__


def probe_endpoint(address: str, port: int, timeout: float = 2.0, url: str = "",
                   sock: socket.socket | None = None) -> dict[str, Any]:
    """A fresh TCP connect to ``address:port`` and, with ``url``, one HTTP GET of it (no pooling, no proxy).

    ``sock``: an unconnected TCP socket of the address's family to use (e.g. one created inside another network
    namespace); it is closed afterwards. Returns ``{"reachable": bool, "error": "" | "timeout" | "refused" |
    "reset" | ..., "elapsed_ms": float, "status": int}``; reachable means connected and (with a url) got an HTTP
    status line.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    start = time.monotonic()
    result: dict[str, Any] = {"address": address, "port": port, "reachable": False, "error": "", "status": 0}
    sock = sock or socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
        if url:
            parts = urlsplit(url)
            conn: socket.socket = sock
            if parts.scheme == "https":
                ctx = ssl.create_default_context()
                conn = ctx.wrap_socket(sock, server_hostname=parts.hostname)
            path = parts.path or "/"
            if parts.query:
                path += "?" + parts.query
            host_header = parts.netloc.rsplit("@", 1)[-1]
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n".encode())
            line = conn.recv(64).split(b"\r\n", 1)[0].split()
            if len(line) < 2 or not line[0].startswith(b"HTTP/"):
                raise ConnectionResetError("no HTTP status line")
            result["status"] = int(line[1])
        result["reachable"] = True
    except (OSError, ValueError) as exc:
        result["error"] = classify_error(exc)
    finally:
        sock.close()
    result["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
    return result


def _main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "probe":
        url = argv[4] if len(argv) > 4 else ""
        print(json.dumps(probe_endpoint(argv[1], int(argv[2]), float(argv[3]), url)))
        return 0
    print("usage: python3 -m chaosext.egress.base probe <address> <port> <timeout> [<url>]", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover - exercised through namespace probes
    sys.exit(_main(sys.argv[1:]))
