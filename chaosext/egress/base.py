"""What every egress driver shares: the fault description, input checks, the fault record, the reachability probe.

Nothing here changes the system except the JSON records under ``$CHAOSEXT_STATE_DIR``.
Run as ``python3 -m chaosext.egress.base probe <address> <port> <timeout> [<url>]`` it prints one JSON probe result;
drivers use that to probe from inside another network namespace.
"""
from __future__ import annotations

import ipaddress
import json
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

from chaosext.core.errors import ChaosextError
from chaosext.core.faulttarget import ITEM_KINDS, TargetError, split_items
from chaosext.core.limits import MAX_OUTAGE_SECONDS
from chaosext.core.names import FAULT_MODES, FAULT_VIAS
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
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["addresses"] = tuple(d.get("addresses", ()))
        d.setdefault("options", {})
        return cls(**d)


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
    """Return ``(host, port)`` of an http(s) URL, or raise FaultError."""
    if not url:
        raise FaultError("no JWKS URL: pass jwks_url or set JWKS_URL in the configuration")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FaultError(f"JWKS URL {url!r} is not an http(s) URL with a host, e.g. {DEFAULT_JWKS_URL}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FaultError(f"JWKS URL {url!r}: port out of range (1-65535)") from None
    if not 1 <= port <= 65535:
        raise FaultError(f"JWKS URL {url!r}: port {port} out of range (1-65535)")
    return parts.hostname, port


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
    """``$CHAOSEXT_STATE_DIR`` or ``~/.chaosext/faults``."""
    return Path(os.environ.get("CHAOSEXT_STATE_DIR") or Path.home() / ".chaosext" / "faults")


class FaultRecord(TypedDict):
    """A fault record: ``<state_dir>/<run_id>.json`` plus ``path``, where :func:`load_records` found it."""

    #: :meth:`FaultSpec.to_dict`
    spec: dict[str, Any]
    recorded_at: float
    #: ``applying`` while the driver works, then ``active``
    status: str
    #: the dead-man watchdog's pid (0: none)
    watchdog_pid: NotRequired[int]
    #: the process that applied the fault: {"pid", "start"} (start: its start time in clock ticks since boot)
    owner: NotRequired[dict[str, int]]
    path: NotRequired[str]


def save_record(spec: FaultSpec, status: str, watchdog_pid: int | None = None) -> Path:
    """Write ``<state_dir>/<run_id>.json`` atomically, with this process as the fault's owner; returns its path."""
    d = state_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{spec.run_id}.json"
    record: FaultRecord = {"spec": spec.to_dict(), "recorded_at": time.time(), "status": status,
                           "owner": this_process()}
    if watchdog_pid is not None:
        record["watchdog_pid"] = watchdog_pid
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)
    return path


def load_records() -> list[FaultRecord]:
    """Every readable fault record (unreadable files are skipped)."""
    d = state_dir()
    out = []
    for path in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            rec: FaultRecord = json.loads(path.read_text())
            FaultSpec.from_dict(rec["spec"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        rec["path"] = str(path)
        out.append(rec)
    return out


def this_process() -> dict[str, int]:
    """This process as a fault record names its owner: pid and start time (a reused pid is not the owner)."""
    return {"pid": os.getpid(), "start": int(proc_start_time(os.getpid()) or 0)}


def owned_by_this_process(record: FaultRecord) -> bool:
    """True when this very process applied the fault of ``record``."""
    return record.get("owner") == this_process()


def delete_record(run_id: str) -> bool:
    """Remove the record of ``run_id``; True if there was one."""
    try:
        (state_dir() / f"{run_id}.json").unlink()
        return True
    except FileNotFoundError:
        return False


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
