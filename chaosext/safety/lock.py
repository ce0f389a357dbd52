"""One run per target at a time: an exclusive lock per (fault target, JWKS endpoint) on the machine that runs `chaos`.

A lock is a JSON file ``<state dir>/locks/<key>.lock`` (state dir = ``$CHAOSEXT_STATE_DIR``, default
``~/.chaosext/faults``; directory 0700, file 0600) holding the owner's run id, pid, pid start time (so a reused pid
is not mistaken for the owner), ``started`` and ``ends_at`` (UTC epoch seconds). Every read-check-write happens under
``flock`` on ``locks/.guard``, and the file itself is written to a temp name and renamed into place, so of two
processes racing for one key exactly one wins, and a reader never sees half a file.

- A second :func:`acquire` of a held key raises :class:`LockHeld`, whose message names the running run (run id, pid,
  started, ends at) and says what to do; it changes nothing.
- A *stale* lock -- its owner process is gone (dead, or the pid now belongs to another process) AND no fault of its
  run is still recorded in the state dir or watched by a watchdog -- is taken over; :attr:`TargetLock.took_over`
  holds the old holder and :attr:`TargetLock.message` says so (log it). An owner that is gone while its fault is
  still in place is NOT stale: the message says to restore that run first.
- :meth:`TargetLock.release` removes the file only while it still names this run (and this pid).
- Root-safe (:mod:`chaosext.core.safefs`): the locks directory must be ours and writable by nobody else, files are
  opened without following symlinks, temp files get random names, and a lock record is trusted only when it is a file
  of ours whose fields are what :func:`acquire` writes (a run id, integer pid ...); one that is not counts as
  unreadable. A watchdog counts as holding a run's fault only when it runs as the user chaosext runs as, with exactly
  a watchdog's command line (``chaosext.egress.watchdog.find``): another user's look-alike cannot block a takeover.

The key (:func:`lock_key`) names the target where it lives: a target on this host (``local``, ``netns:``, ``pid:``,
an Envoy admin on loopback) carries the host name and the network namespace it resolves to, so two labs in two
namespaces of one host do not block each other while two runs against one namespace do.

**Cluster targets** (``k8s-networkpolicy``, ``istio``, ``iptables`` on ``k8s-pod:``) are locked in the cluster too,
where every machine sees the same lock: a ``coordination.k8s.io/v1`` Lease ``chaosext-lock-<hash of the key>`` in the
target's namespace (:class:`ClusterLease`, what Kubernetes' own leader election uses): ``holderIdentity``
``<run id>@<host>:<pid>``, ``leaseDurationSeconds`` (:data:`LEASE_SECONDS`), ``renewTime`` renewed with the run's
heartbeat (:meth:`TargetLock.renew`, at most every :data:`LEASE_RENEW_SECONDS`), the key and the run's end in its
annotations. A laptop and a CI runner aimed at the same cluster target therefore exclude each other. A Lease whose
``renewTime`` is older than its duration (its run died) is taken over (``leaseTransitions`` + 1); every write carries
the ``resourceVersion`` it read, so of two machines racing for it one gets ``409 Conflict`` and is refused. Release
deletes the Lease with a ``resourceVersion`` precondition. RBAC: ``get, create, update, delete`` on
``leases.coordination.k8s.io`` in the namespace. Clocks: takeover compares the holder's ``renewTime`` with this
machine's clock, so the machines' clocks must agree within a few seconds (NTP).
"""
from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaosext.core import ids, kube, safefs
from chaosext.core.errors import ChaosextError, ConfigError
from chaosext.core.faulttarget import k8s_namespace_selector, parse_fault_target
from chaosext.core.kube import KubeOptions
from chaosext.core.names import check_run_id
from chaosext.core.procs import proc_start_time, process_alive
from chaosext.core.settings import Secrets
from chaosext.egress import watchdog
from chaosext.egress.base import FaultError, load_records, parse_jwks_url, split_targets, state_dir

__all__ = ["lock_key", "acquire", "read", "locks_dir", "TargetLock", "LockHeld", "ClusterLease", "cluster_lease",
           "LEASE_SECONDS", "LEASE_RENEW_SECONDS"]

#: seconds a cluster Lease holds without renewal: a run that died loses its Lease this long after its last beat
LEASE_SECONDS = 30
#: the heartbeat renews the Lease at most this often (a beat is every 2 s)
LEASE_RENEW_SECONDS = 5.0
CLUSTER_VIAS = ("k8s-networkpolicy", "istio")

logger = logging.getLogger("chaostoolkit")


class LockHeld(ChaosextError, RuntimeError):
    """Another run holds the target's lock; ``holder`` is its lock record."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


def locks_dir() -> Path:
    """``<state dir>/locks`` (``$CHAOSEXT_STATE_DIR/locks``, default ``~/.chaosext/faults/locks``)."""
    return state_dir() / "locks"


def lock_key(via: str, target: str, jwks_url: str) -> str:
    """The lock's key: ``<via>|<target>|<JWKS host>:<port>`` (host lower-cased, default ports filled in, IPv6 in
    brackets), so ``http://Auth:80/a`` and ``http://auth/b`` on the same target share one lock; for a target on this
    host followed by ``@<host name>/net:<network namespace inode>`` (:func:`host_scope`)."""
    host, port = parse_jwks_url(jwks_url)
    host = host.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    return f"{via.strip()}|{target.strip()}|{host}:{port}{host_scope(via.strip(), target.strip())}"


def _netns_of(path: str) -> str:
    """The inode of a network namespace file (``/proc/<pid>/ns/net``, ``/run/netns/<name>``); '' when unreadable."""
    try:
        return str(os.stat(path).st_ino)
    except OSError:
        return ""


def is_cluster_target(via: str, target: str) -> bool:
    """Whether the fault lives in a Kubernetes cluster (shared by every machine that can reach it)."""
    if via in CLUSTER_VIAS:
        return True
    try:
        return via == "iptables" and any(i.partition(":")[0] == "k8s-pod"
                                         for i in parse_fault_target(via, target).items)
    except ConfigError:
        return False


def host_scope(via: str, target: str) -> str:
    """Where a target on this host lives: ``@<host name>/net:<inode>`` of each network namespace it names
    (``local`` = the caller's, ``netns:<name>``, ``pid:<pid>``; an Envoy admin URL on loopback = the caller's);
    ``@<host name>`` alone when a namespace cannot be resolved (a glob, a namespace not created yet); '' for a
    cluster target or a remote Envoy admin, which are the same target from every machine."""
    if is_cluster_target(via, target):
        return ""
    netns: list[str] = []
    if via == "envoy":
        admin = (urlsplit(target).hostname or "").lower()
        try:
            loopback = admin == "localhost" or ipaddress.ip_address(admin).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return ""
        netns.append(_netns_of("/proc/self/ns/net"))
    else:
        try:
            items = split_targets(target)
        except FaultError:
            items = []
        for item in items:
            kind, _, name = item.partition(":")
            path = {"local": "/proc/self/ns/net", "netns": f"/run/netns/{name}", "pid": f"/proc/{name}/ns/net"}
            netns.append(_netns_of(path[kind]) if kind in path and "*" not in name else "")
    scope = f"@{socket.gethostname()}"
    if netns and all(netns):
        scope += "/net:" + "+".join(sorted(set(netns)))
    return scope


def _path(key: str) -> Path:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80]
    return locks_dir() / f"{readable}.{hashlib.sha256(key.encode()).hexdigest()[:12]}.lock"


@contextmanager
def _guarded() -> Iterator[None]:
    with safefs.open_dir(locks_dir(), create=True) as d:
        fd = d.open(".guard", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def _valid(record: Any) -> bool:
    """A lock record as :func:`acquire` writes it."""
    return (isinstance(record, dict) and ids.is_run_id(record.get("run_id"))
            and isinstance(record.get("pid"), int) and not isinstance(record.get("pid"), bool)
            and isinstance(record.get("pid_start_time"), (str, type(None)))
            and isinstance(record.get("host", ""), str)
            and all(isinstance(record.get(k, 0.0), (int, float)) for k in ("started", "ends_at")))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(safefs.read_text(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # UnsafePath too: a symlink or another user's file is never trusted
        return {"run_id": "?", "pid": 0, "unreadable": str(path)}
    if not _valid(record):
        return {"run_id": "?", "pid": 0, "unreadable": str(path)}
    return dict(record)


def _write(path: Path, record: dict[str, Any]) -> None:
    safefs.write_file(path, json.dumps(record, indent=1, sort_keys=True))


def read(key: str) -> dict[str, Any] | None:
    """The lock record of ``key``, or None when nobody holds it."""
    return _read(_path(key))


def _utc(ts: Any) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(ts))) if ts else "unknown"
    except (TypeError, ValueError):
        return "unknown"


def _owner_alive(rec: dict[str, Any]) -> bool:
    if rec.get("host") and rec["host"] != socket.gethostname():
        return True  # another machine's process: cannot be checked from here, so never assumed dead
    pid = int(rec.get("pid") or 0)
    return pid > 0 and process_alive(pid, rec.get("pid_start_time"))


def _faults_of(run_id: str) -> list[str]:
    """Why the run still has a fault in place ([] when none): a record in the state dir or a live watchdog."""
    if not ids.is_run_id(run_id):
        return []
    found = [f"fault record {r.get('path')}" for r in load_records() if r["spec"].get("run_id") == run_id]
    found += [f"watchdog pid {pid}" for pid in watchdog.find(run_id)]
    return found


def _describe(rec: dict[str, Any]) -> str:
    return (f"run {rec.get('run_id')} (pid {rec.get('pid')}, started {_utc(rec.get('started'))}, "
            f"ends at {_utc(rec.get('ends_at'))})")


@dataclass
class TargetLock:
    """A held target lock. ``took_over`` is the stale record it replaced (None if the key was free)."""

    key: str
    run_id: str
    path: Path
    record: dict[str, Any]
    took_over: dict[str, Any] | None = None
    message: str = ""
    #: the cluster-side lock of a cluster target (None for a target on this host)
    lease: ClusterLease | None = None
    _released: bool = field(default=False, repr=False)

    def _mine(self, rec: dict[str, Any] | None) -> bool:
        return rec is not None and rec.get("run_id") == self.run_id and rec.get("pid") == self.record["pid"]

    def renew(self) -> None:
        """Renew the cluster Lease (the heartbeat calls this on every beat; it writes at most every
        LEASE_RENEW_SECONDS). Never raises: a failed renewal is logged, and the Lease expires on its own."""
        if self.lease is not None:
            self.lease.renew()

    def release(self) -> bool:
        """Remove the lock if it still names this run; True when it was removed (idempotent)."""
        if self.lease is not None:
            self.lease.release()
        with _guarded():
            if not self._mine(_read(self.path)):
                return False
            safefs.remove(self.path)
            self._released = True
            return True

    def extend(self, ends_at: float) -> None:
        """Record a new ``ends_at``; raises LockHeld if the lock is no longer this run's."""
        with _guarded():
            rec = _read(self.path)
            if not self._mine(rec):
                raise LockHeld(f"the lock on {self.key} is no longer held by run {self.run_id}"
                               + (f" but by {_describe(rec)}" if rec else ""), rec or {})
            self.record["ends_at"] = float(ends_at)
            _write(self.path, self.record)

    def __enter__(self) -> TargetLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def acquire(key: str, run_id: str, info: dict[str, Any] | None = None,
            lease: ClusterLease | None = None) -> TargetLock:
    """Take the lock of ``key`` for ``run_id`` (the calling process is recorded as its owner), and for a cluster
    target the cluster ``lease`` too (:func:`cluster_lease`; the local lock is given back when the Lease is held).

    ``info`` is stored with the lock (``started`` and ``ends_at`` are read from it when present: UTC epoch seconds).
    Raises :class:`LockHeld` (changing nothing) when another live run holds it, or when its owner is gone but its
    fault is still in place. Re-acquiring a lock this process already holds for ``run_id`` returns it again.
    """
    held = _acquire_local(key, run_id, info)
    if lease is not None:
        try:
            lease.acquire(run_id, held.record)
        except BaseException:
            held.release()
            raise
        held.lease = lease
        if lease.took_over:
            logger.warning("chaosext lock: %s", lease.message)
    return held


def _acquire_local(key: str, run_id: str, info: dict[str, Any] | None = None) -> TargetLock:
    """The local lock file of :func:`acquire`."""
    if not run_id:
        raise ConfigError("acquire needs the run id that will own the lock: pass the experiment run's id")
    check_run_id(run_id, "lock owner run id")
    info = dict(info or {})
    pid = os.getpid()
    record = {**info, "key": key, "run_id": run_id, "pid": pid, "pid_start_time": proc_start_time(pid),
              "host": socket.gethostname(), "started": float(info.get("started") or time.time()),
              "ends_at": float(info.get("ends_at") or 0.0)}
    path = _path(key)
    with _guarded():
        held = _read(path)
        took_over = None
        if held and not (held.get("run_id") == run_id and held.get("pid") == pid):
            if _owner_alive(held):
                raise LockHeld(
                    f"target {key} is in use by {_describe(held)}; one run per target at a time: wait for it to "
                    f"end, or stop it (Ctrl-C in its terminal, or `chaosext restore --run-id {held.get('run_id')}` "
                    f"plus SIGTERM to pid {held.get('pid')}). Nothing was changed.", held)
            faults = _faults_of(str(held.get("run_id", "")))
            if faults:
                raise LockHeld(
                    f"target {key} is locked by {_describe(held)}, whose process is gone but whose fault is still "
                    f"in place ({'; '.join(faults)}); remove it first with `chaosext restore --run-id "
                    f"{held.get('run_id')}` (or `chaosext restore --all`), then start again. Nothing was changed.",
                    held)
            took_over = held
        _write(path, record)
    message = (f"took over the stale lock on {key} from {_describe(took_over)}: its process is gone and no fault of "
               f"it is left" if took_over else f"locked {key} for run {run_id}")
    if took_over:
        logger.warning("chaosext lock: %s", message)
    return TargetLock(key=key, run_id=run_id, path=path, record=record, took_over=took_over, message=message)


# ------------------------------------------------------------------------------------- the cluster-side lock (Lease)
def _micro(epoch: float) -> str:
    """A Kubernetes MicroTime (RFC 3339, microseconds, UTC)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _epoch(value: Any) -> float:
    """Epoch seconds of a MicroTime as the client hands it back (datetime or string); 0 when absent."""
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() if value else 0.0
    except ValueError:
        return 0.0


def cluster_lease(via: str, target: str, key: str, options: KubeOptions = None,
                  secrets: Secrets = None) -> ClusterLease | None:
    """The Lease that locks ``key`` in the cluster, for a cluster target (None for a target on this host).
    ``options`` (``kube_api_url``, ``kube_context``: the run's KUBE_API_URL / KUBE_CONTEXT) and ``secrets`` (the
    KUBERNETES_* credentials) build chaosext's one Kubernetes client."""
    if not is_cluster_target(via, target):
        return None
    items = [i for i in parse_fault_target(via, target).items if via != "iptables" or i.partition(":")[0] == "k8s-pod"]
    namespace, _ = k8s_namespace_selector(items[0])
    return ClusterLease(namespace=namespace, key=key, options=dict(options or {}), secrets=secrets)


@dataclass
class ClusterLease:
    """A ``coordination.k8s.io/v1`` Lease in ``namespace`` naming the run that holds ``key`` (module docstring)."""

    namespace: str
    key: str
    #: kube_api_url / kube_context, and the activity's KUBERNETES_* secrets (never kept beyond the run)
    options: dict[str, Any] = field(default_factory=dict, repr=False)
    secrets: Secrets = field(default=None, repr=False)
    duration: int = LEASE_SECONDS
    #: the API client (chaosext.core.kube.api_client by default; tests pass one)
    api: Any = field(default=None, repr=False)
    holder: str = ""
    run_id: str = ""
    took_over: dict[str, Any] | None = None
    message: str = ""
    #: True once another run took the Lease (renewals failed for longer than its duration)
    lost: bool = False
    _body: dict[str, Any] = field(default_factory=dict, repr=False)
    _renewed: float = field(default=0.0, repr=False)
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return f"chaosext-lock-{hashlib.sha256(self.key.encode()).hexdigest()[:16]}"

    def _coord(self) -> Any:
        from kubernetes import client

        if self.api is None:
            try:
                self.api = kube.api_client(self.options, self.secrets)
            except kube.KubeConfigError as exc:
                raise LockHeld(f"cannot take the cluster lock on {self.key}: {exc}. Nothing was changed.",
                               {}) from None
        return client.CoordinationV1Api(self.api)

    def _error(self, exc: Any, what: str) -> LockHeld:
        status = getattr(exc, "status", None)
        fix = (f"grant it get, create, update and delete on leases.coordination.k8s.io in namespace "
               f"{self.namespace}" if status == 403 else "check the Kubernetes API is reachable (chaosext doctor)")
        return LockHeld(f"cannot {what} the cluster lock {self.namespace}/{self.name} on {self.key}: "
                        f"{status or ''} {getattr(exc, 'reason', exc)}; {fix}. Nothing was changed.", {})

    def _describe(self, lease: dict[str, Any]) -> dict[str, Any]:
        meta = lease.get("metadata", {})
        notes = meta.get("annotations") or {}
        spec = lease.get("spec") or {}
        return {"run_id": (meta.get("labels") or {}).get("chaosext.io/run-id", "?"),
                "holder": spec.get("holderIdentity") or "", "host": notes.get("chaosext.io/host", "?"),
                "pid": notes.get("chaosext.io/pid", "?"), "started": notes.get("chaosext.io/started", ""),
                "ends_at": notes.get("chaosext.io/ends-at", ""), "lease": f"{self.namespace}/{self.name}",
                "renewed": _epoch(spec.get("renewTime") or spec.get("acquireTime")),
                "duration": int(spec.get("leaseDurationSeconds") or 0)}

    def _new_body(self, record: dict[str, Any], now: float, transitions: int) -> dict[str, Any]:
        from chaosext.egress.kubernetes import MANAGED_BY, RUN_LABEL

        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "labels": {MANAGED_BY: "chaosext", RUN_LABEL: self.run_id},
                         "annotations": {"chaosext.io/lock-key": self.key, "chaosext.io/host": str(record["host"]),
                                         "chaosext.io/pid": str(record["pid"]),
                                         "chaosext.io/started": str(record.get("started", "")),
                                         "chaosext.io/ends-at": str(record.get("ends_at", ""))}},
            "spec": {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration,
                     "acquireTime": _micro(now), "renewTime": _micro(now), "leaseTransitions": transitions},
        }

    def _keep(self, answer: Any) -> None:
        body = answer if isinstance(answer, dict) else self.api.sanitize_for_serialization(answer)
        self._body = body
        self._renewed = time.monotonic()

    def acquire(self, run_id: str, record: dict[str, Any]) -> None:
        """Create the Lease for ``run_id``, or take over one that expired; LockHeld (nothing changed) when a live
        run holds it, when another machine won a race for it, or when the API refuses."""
        from kubernetes.client.exceptions import ApiException

        self.run_id = run_id
        self.holder = f"{run_id}@{record['host']}:{record['pid']}"
        coord = self._coord()
        now = time.time()
        try:
            self._keep(coord.create_namespaced_lease(self.namespace, self._new_body(record, now, 0),
                                                     _request_timeout=10))
            self.message = f"took the cluster lock {self.namespace}/{self.name} for run {run_id}"
            return
        except ApiException as exc:
            if exc.status != 409:
                raise self._error(exc, "create") from None
        try:
            current = self.api.sanitize_for_serialization(
                coord.read_namespaced_lease(self.name, self.namespace, _request_timeout=10))
        except ApiException as exc:
            raise self._error(exc, "read") from None
        holder = self._describe(current)
        if holder["holder"] == self.holder:
            self._keep(current)
            return
        left = holder["renewed"] + holder["duration"] - now
        if holder["holder"] and left > 0:
            ends = f", ends at {_utc(holder['ends_at'])}" if holder["ends_at"] else ""
            raise LockHeld(
                f"target {self.key} is in use by run {holder['run_id']} on {holder['host']} (pid {holder['pid']}"
                f"{ends}): the cluster lock {holder['lease']} was renewed {now - holder['renewed']:.0f} s ago and "
                f"holds {max(1, math.ceil(left))} s more without renewal. One run per target at a time: wait for it "
                f"to end, or stop it on {holder['host']}. Nothing was changed.", holder)
        body = self._new_body(record, now, int((current.get("spec") or {}).get("leaseTransitions") or 0) + 1)
        body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
        try:
            self._keep(coord.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=10))
        except ApiException as exc:
            if exc.status == 409:
                raise LockHeld(f"target {self.key}: another run took the expired cluster lock {holder['lease']} at "
                               f"the same moment; one run per target at a time. Nothing was changed.",
                               holder) from None
            raise self._error(exc, "take over") from None
        self.took_over = holder
        self.message = (f"took over the expired cluster lock {holder['lease']} on {self.key} from run "
                        f"{holder['run_id']} on {holder['host']} (not renewed for {now - holder['renewed']:.0f} s)")

    def renew(self, force: bool = False) -> bool:
        """Write a new ``renewTime`` (at most every LEASE_RENEW_SECONDS unless ``force``); True when written. Never
        raises: an unreachable API is logged (the Lease then expires on its own), a Lease another run holds now
        sets :attr:`lost`."""
        from kubernetes.client.exceptions import ApiException

        with self._mutex:
            if not self._body or self.lost or (not force and time.monotonic() - self._renewed < LEASE_RENEW_SECONDS):
                return False
            body = {**self._body, "spec": {**self._body["spec"], "renewTime": _micro(time.time())}}
            try:
                self._keep(self._coord().replace_namespaced_lease(self.name, self.namespace, body,
                                                                  _request_timeout=5))
                return True
            except ApiException as exc:
                if exc.status in (404, 409):
                    self.lost = True
                    logger.error("chaosext lock: the cluster lock %s/%s on %s is no longer run %s's (%s): another "
                                 "run may start on this target", self.namespace, self.name, self.key, self.run_id,
                                 exc.reason)
                else:
                    logger.warning("chaosext lock: could not renew the cluster lock %s/%s: %s %s", self.namespace,
                                   self.name, exc.status, exc.reason)
            except Exception as exc:  # the API unreachable: the Lease expires LEASE_SECONDS after the last renewal
                logger.warning("chaosext lock: could not renew the cluster lock %s/%s: %s", self.namespace,
                               self.name, exc)
            return False

    def release(self) -> bool:
        """Delete the Lease if it is still this run's (a ``resourceVersion`` precondition); True when deleted.
        Never raises."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        with self._mutex:
            if not self._body or self.lost:
                return False
            meta = self._body.get("metadata", {})
            try:
                self._coord().delete_namespaced_lease(
                    self.name, self.namespace, _request_timeout=10, body=client.V1DeleteOptions(
                        preconditions=client.V1Preconditions(uid=meta.get("uid"),
                                                             resource_version=meta.get("resourceVersion"))))
                self._body = {}
                return True
            except ApiException as exc:
                if exc.status not in (404, 409):
                    logger.warning("chaosext lock: could not delete the cluster lock %s/%s (%s %s); it expires "
                                   "%d s after its last renewal", self.namespace, self.name, exc.status, exc.reason,
                                   self.duration)
            except Exception as exc:
                logger.warning("chaosext lock: could not delete the cluster lock %s/%s: %s", self.namespace,
                               self.name, exc)
            return False
