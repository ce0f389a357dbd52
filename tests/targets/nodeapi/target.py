#!/usr/bin/env python3
"""The `shop` target: a second system under test for chaosext, built from widely used parts that chaosext did not
write, started in network namespaces of its own.

    python3 tests/targets/nodeapi/target.py --dir /tmp/shop up      # start (namespace `shop`); prints TARGET_FILE
    python3 tests/targets/nodeapi/target.py --dir /tmp/shop restart orders --fail-open
    python3 tests/targets/nodeapi/target.py --dir /tmp/shop rotate   # a new IdP signing key (the old one stays)
    python3 tests/targets/nodeapi/target.py --dir /tmp/shop down     # stop everything, delete the namespaces

What runs (needs root, iproute2, Node.js >= 20.19 with ``npm ci`` done here (scripts/setup does it), and Debian's
prometheus and prometheus-alertmanager):

- network namespace ``<name>`` (the apps; ``up --name``, default ``shop``): the ``orders`` service (express + jose's
  remote JWKS cache) on 127.0.0.1:8081, the ``billing`` service (express + jsonwebtoken + jwks-rsa 4.1's cache) on
  127.0.0.1:8082,
  Prometheus on 127.0.0.1:9090 scraping both (job ``shop-apis``) with the rules of alerts.yml, Alertmanager on
  127.0.0.1:9093; chaosext and k6 run here too (``ip netns exec <name> ...``);
- network namespace ``<name>-idp``, joined to the apps by a veth pair (10.77.0.1 <-> 10.77.0.2): the identity
  provider (oidc-provider) on 10.77.0.2:3000 (discovery, /jwks, /token), its ops port (POST /admin/rotate) on
  10.77.0.2:3001. Blocking 10.77.0.2:3000 in the apps' namespace cuts the services off the JWKS and nothing else.

``up`` writes into ``--dir``: ``target.json`` (the target description chaosext reads: TARGET_FILE), ``secrets.env``
(mode 0600: ``TOKEN_CLIENTS``, the per-tenant client credentials), ``state.json`` (pids and namespaces, for
``down``), ``audit.log`` (the services' pino audit lines) and ``logs/``. Nothing of it outlives ``down``: every
process is stopped, anything left in the namespaces is killed, the namespaces (and so the veth pair and any
iptables rule in them) are deleted.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
TENANTS = ("acme", "globex", "initech")
APPS_ADDR, IDP_ADDR = "10.77.0.1", "10.77.0.2"
IDP_PORT, IDP_OPS_PORT = 3000, 3001
PROMETHEUS_PORT, ALERTMANAGER_PORT = 9090, 9093
AUDIENCE = "https://api.shop.example"
OTHER_AUDIENCE = "https://reports.shop.example"
TENANT_HEADER = "X-Tenant-ID"
SCRAPE_SECONDS = 2
#: what the services' JWKS caches are configured with (and what the description promises: jwks_cache)
JWKS = {"ttl_seconds": 5, "max_stale_seconds": 120, "cooldown_seconds": 10, "retry_seconds": 2, "timeout_ms": 1500}
SERVICES: dict[str, dict[str, Any]] = {
    "orders": {
        "port": 8081, "script": "orders.mjs",
        "routes": [{"method": "GET", "path": "/v2/orders", "weight": 9},
                   {"method": "POST", "path": "/v2/orders", "body": {"sku": "x-1", "qty": 1}, "weight": 1}],
    },
    "billing": {
        "port": 8082, "script": "billing.mjs",
        "routes": [{"method": "GET", "path": "/billing/invoices", "weight": 9},
                   {"method": "POST", "path": "/billing/payments", "body": {"amount": 12.5}, "weight": 1}],
    },
}
#: the planted variants: command-line switches of the services
VARIANTS = ("--fail-open", "--drop-keys-on-failure", "--any-audience")
NODE_MIN = (20, 19)


class TargetError(RuntimeError):
    """The target cannot be started or stopped; the message says what to do."""


# ------------------------------------------------------------------------------------------------- the description
def orders_cache(name: str) -> dict[str, Any]:
    """PromQL per cache state (1 while in it) over the services' own gauges."""
    usable = f'auth_jwks_keys_usable{{service="{name}"}}'
    failing = f'auth_jwks_refresh_failing{{service="{name}"}}'
    return {"prometheus": {"fresh": f"({usable} > bool 0) * ({failing} == bool 0)",
                           "stale": f"({usable} > bool 0) * {failing}",
                           "expired": f"({usable} == bool 0) * {failing}"}}


def billing_cache(url: str) -> dict[str, Any]:
    """The JSON health endpoint's field and its words per state."""
    return {"http": {"url": f"{url}/health", "field": "jwks.status", "age_field": "jwks.ageSeconds",
                     "states": {"fresh": ["ok"], "stale": ["degraded"], "expired": ["down"], "empty": ["starting"]}}}


def description(home: Path) -> dict[str, Any]:
    """The target description (TARGET_FILE) of this target."""
    services: dict[str, Any] = {}
    for name, svc in SERVICES.items():
        url = f"http://127.0.0.1:{svc['port']}"
        read, write = (f"{r['method']} {r['path']}" for r in svc["routes"])
        services[name] = {"url": url, "routes": svc["routes"], "probe": read, "forgery_routes": [read, write],
                          "cache": orders_cache(name) if name == "orders" else billing_cache(url),
                          "ready": f"{url}/ready"}
    authority = f"http://{IDP_ADDR}:{IDP_PORT}"
    return {
        "version": 1,
        "identity_provider": {
            "authority_url": authority,
            "jwks_url": f"{authority}/jwks",
            "audience": AUDIENCE,
            "token": {"endpoint": "", "auth_method": "client_secret_basic", "tenant_param": "",
                      "audience_param": "resource", "other_audience": OTHER_AUDIENCE, "scope": ""},
            "jwks_cache": {"ttl_seconds": JWKS["ttl_seconds"], "max_stale_seconds": JWKS["max_stale_seconds"]},
        },
        "tenants": list(TENANTS),
        "tenant_header": TENANT_HEADER,
        "services": services,
        "prometheus": {
            "url": f"http://127.0.0.1:{PROMETHEUS_PORT}",
            "metrics": {"requests": "http_request_duration_seconds_count", "requests_matchers": 'job="shop-apis"',
                        "status_label": "status_code", "service_label": "service", "tenant_label": "tenant",
                        "error_status": "5..|401", "latency_histogram": "http_request_duration_seconds",
                        "unverified_accepts": "auth_unverified_accepts_total"},
        },
        "alertmanager": {"url": f"http://127.0.0.1:{ALERTMANAGER_PORT}"},
        "expiry_alerts": ["JwksKeysExpired"],
        "audit": {
            "source": f"file:{home / 'audit.log'}",
            "fields": {"time": "time", "service": "svc", "action": "event", "tenant": "tenant"},
            "actions": {"degraded": "jwks.stale", "recovered": "jwks.recovered", "expired": "jwks.expired",
                        "rejected": "token.rejected"},
        },
        "forgery": {"refused_statuses": [401, 403], "skip": []},
    }


# ------------------------------------------------------------------------------------------------- small helpers
def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise TargetError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _write_private(path: Path, text: str) -> None:
    """A file only its owner can read (it holds client secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: tells our process from another that got its pid later (None: gone, or a
    zombie, which is reaped here when it is our child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in "ZX" else fields[19]


def node_binary() -> str:
    """The node to run, checked: >= 20.19 (jwks-rsa 4.1 and jose 6 need it) with this folder's packages installed."""
    node = shutil.which("node")
    if not node:
        raise TargetError("node not found: install Node.js 20.19 or later")
    version = _run([node, "--version"]).stdout.strip().lstrip("v")
    if tuple(int(p) for p in version.split(".")[:2]) < NODE_MIN:
        raise TargetError(f"node {version} is too old: jwks-rsa 4.1 and jose 6 need Node.js 20.19 or later")
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        raise TargetError(f"no node_modules in {HERE}: run `bash scripts/setup` (or `npm ci` there)")
    return node


CLONE_NEWNET = 0x40000000


def enter_netns(netns: str) -> None:
    """Move the calling thread (only it: ``setns`` is per thread) into the network namespace; its sockets are then
    opened in there."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{netns}") as fh:
        if libc.setns(fh.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """``fn()`` on a short-lived thread that entered the namespace (the rest of this process never leaves its own)."""
    with ThreadPoolExecutor(max_workers=1, initializer=enter_netns, initargs=(netns,)) as pool:
        return pool.submit(fn).result()


def http(netns: str, url: str, method: str = "GET", timeout: float = 3) -> tuple[int, str]:
    """One HTTP request from inside the namespace: (status, or 0 when nothing answered; body)."""
    def send() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, repr(exc)

    return in_netns(netns, send)


# ------------------------------------------------------------------------------------------------- the target
@dataclass
class Proc:
    name: str
    argv: list[str]
    netns: str
    pid: int = 0
    start: str | None = None


@dataclass
class Target:
    """A running (or stopped) target; ``home`` holds its files."""

    home: Path
    name: str = ""
    procs: dict[str, Proc] = field(default_factory=dict)
    flags: dict[str, list[str]] = field(default_factory=dict)

    # -------------------------------------------------------------- paths and facts
    @property
    def idp_netns(self) -> str:
        return f"{self.name}-idp"

    @property
    def description_file(self) -> Path:
        return self.home / "target.json"

    @property
    def secrets_file(self) -> Path:
        return self.home / "secrets.env"

    @property
    def audit_file(self) -> Path:
        return self.home / "audit.log"

    @property
    def prefix(self) -> list[str]:
        """Run a command where chaosext must run: ``ip netns exec <apps namespace>``."""
        return ["ip", "netns", "exec", self.name]

    def token_clients(self) -> dict[str, dict[str, str]]:
        """TOKEN_CLIENTS: {tenant: {client_id, client_secret}} (read from the 0600 secrets file)."""
        for line in self.secrets_file.read_text(encoding="utf-8").splitlines():
            if line.startswith("TOKEN_CLIENTS="):
                clients: dict[str, dict[str, str]] = json.loads(line.partition("=")[2].strip("'"))
                return clients
        raise TargetError(f"{self.secrets_file} has no TOKEN_CLIENTS")

    def _save(self) -> None:
        state = {"name": self.name, "flags": self.flags,
                 "procs": {n: {"argv": p.argv, "netns": p.netns, "pid": p.pid, "start": p.start}
                           for n, p in self.procs.items()}}
        (self.home / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, home: Path) -> Target:
        state = json.loads((home / "state.json").read_text(encoding="utf-8"))
        t = cls(home=home, name=state["name"], flags=state.get("flags") or {})
        t.procs = {n: Proc(n, p["argv"], p["netns"], p["pid"], p["start"]) for n, p in state["procs"].items()}
        return t

    # -------------------------------------------------------------- start
    def up(self, flags: dict[str, list[str]] | None = None, wait: float = 60) -> Target:
        if os.geteuid() != 0:
            raise TargetError("needs root (ip netns, veth)")
        node = node_binary()
        for binary in ("prometheus", "prometheus-alertmanager", "ip"):
            if not shutil.which(binary):
                raise TargetError(f"{binary} not found: apt-get install prometheus prometheus-alertmanager iproute2")
        self.home.mkdir(parents=True, exist_ok=True)
        if (self.home / "state.json").exists():
            raise TargetError(f"{self.home} already holds a target: `down` it first")
        self.name = self.name or f"shop{secrets.token_hex(3)}"
        self.flags = {n: list(flags.get(n, [])) if flags else [] for n in SERVICES}
        for service_flags in self.flags.values():
            unknown = set(service_flags) - set(VARIANTS)
            if unknown:
                raise TargetError(f"unknown switch {sorted(unknown)}; the services know {', '.join(VARIANTS)}")
        self._save()
        try:
            self._network()
            self._files()
            # Alertmanager and Prometheus need nothing else: they start while the IdP does
            self._spawn("alertmanager", [
                "prometheus-alertmanager", f"--config.file={self.home / 'alertmanager.yml'}",
                f"--storage.path={self.home / 'alertmanager'}",
                f"--web.listen-address=127.0.0.1:{ALERTMANAGER_PORT}", "--cluster.listen-address="], self.name)
            self._spawn("prometheus", [
                "prometheus", f"--config.file={self.home / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.home / 'prometheus'}", f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
                f"--rules.alert.resend-delay={SCRAPE_SECONDS}s"], self.name)
            self._spawn("idp", [node, str(HERE / "idp.mjs"), str(self.home / "idp.json")], self.idp_netns)
            self._wait_http(self.name, f"http://{IDP_ADDR}:{IDP_PORT}/.well-known/openid-configuration", wait)
            for name in SERVICES:  # they load the JWKS as they start: the IdP must answer first
                self._spawn_service(name)
            for name, svc in SERVICES.items():
                self._wait_http(self.name, f"http://127.0.0.1:{svc['port']}/ready", wait, what=name)
            self._wait_http(self.name, f"http://127.0.0.1:{ALERTMANAGER_PORT}/-/ready", wait)
            self._wait_http(self.name, f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready", wait)
        except BaseException:
            self.down()
            raise
        return self

    def _network(self) -> None:
        _run(["ip", "netns", "add", self.name])
        _run(["ip", "netns", "add", self.idp_netns])
        for ns in (self.name, self.idp_netns):
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # created inside the apps namespace with its peer in the IdP's: the pair never appears on this host
        _run(["ip", "-n", self.name, "link", "add", "shop0", "type", "veth", "peer", "name", "shop0",
              "netns", self.idp_netns])
        for ns, addr in ((self.name, APPS_ADDR), (self.idp_netns, IDP_ADDR)):
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "shop0"])
            _run(["ip", "-n", ns, "link", "set", "shop0", "up"])

    def _files(self) -> None:
        home = self.home
        (home / "logs").mkdir(exist_ok=True)
        clients = {t: {"client_id": f"{t}-shop-client", "client_secret": secrets.token_urlsafe(24)} for t in TENANTS}
        issuer = f"http://{IDP_ADDR}:{IDP_PORT}"
        _write_private(home / "idp.json", json.dumps({
            "issuer": issuer, "listen": {"host": IDP_ADDR, "port": IDP_PORT},
            "ops": {"host": IDP_ADDR, "port": IDP_OPS_PORT}, "resource": AUDIENCE, "other_resource": OTHER_AUDIENCE,
            "token_ttl": 3600,
            "clients": [{"client_id": c["client_id"], "client_secret": c["client_secret"], "tenant": t}
                        for t, c in clients.items()]}))
        _write_private(self.secrets_file, f"TOKEN_CLIENTS='{json.dumps(clients)}'\n")
        for name, svc in SERVICES.items():
            (home / f"{name}.json").write_text(json.dumps({
                "service": name, "listen": {"host": "127.0.0.1", "port": svc["port"]},
                "jwks_url": f"{issuer}/jwks", "issuer": issuer, "audience": AUDIENCE, "tenants": list(TENANTS),
                "tenant_header": TENANT_HEADER, "audit_file": str(self.audit_file), "jwks": JWKS}), encoding="utf-8")
        targets = [f"127.0.0.1:{svc['port']}" for svc in SERVICES.values()]
        interval = f"{SCRAPE_SECONDS}s"
        (home / "prometheus.yml").write_text(json.dumps({
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "rule_files": [str(HERE / "alerts.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ALERTMANAGER_PORT}"]}]}]},
            "scrape_configs": [{"job_name": "shop-apis", "static_configs": [{"targets": targets}]}],
        }, indent=1), encoding="utf-8")
        (home / "alertmanager.yml").write_text(json.dumps({
            "route": {"receiver": "null", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "1s",
                      "repeat_interval": "1h"},
            "receivers": [{"name": "null"}]}, indent=1), encoding="utf-8")
        self.description_file.write_text(json.dumps(description(home), indent=1) + "\n", encoding="utf-8")

    def _spawn(self, name: str, argv: list[str], netns: str) -> Proc:
        log = open(self.home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        with log:
            proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=HERE, start_new_session=True,
                                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NODE_ENV": "production"})
        # `ip netns exec` execs the command: this pid is the program's own
        p = Proc(name, argv, netns, proc.pid, _start_time(proc.pid))
        self.procs[name] = p
        self._save()
        return p

    def _spawn_service(self, name: str) -> Proc:
        argv = [node_binary(), str(HERE / SERVICES[name]["script"]), str(self.home / f"{name}.json"),
                *self.flags.get(name, [])]
        return self._spawn(name, argv, self.name)

    def _wait_http(self, netns: str, url: str, wait: float, what: str = "") -> None:
        deadline = time.monotonic() + wait
        status, body = 0, ""
        while time.monotonic() < deadline:
            status, body = http(netns, url)
            if status == 200:
                return
            dead = [p.name for p in self.procs.values() if not self.alive(p)]
            if dead:
                raise TargetError(f"{', '.join(dead)} exited: see {self.home / 'logs'}")
            time.sleep(0.2)
        raise TargetError(f"{what or url} not ready after {wait:.0f}s (last: {status} {body[:200]})")

    # -------------------------------------------------------------- change it
    def restart(self, service: str, flags: list[str] | None = None, wait: float = 30) -> None:
        """Stop one service and start it again (its counters start at 0), with these switches."""
        if service not in SERVICES:
            raise TargetError(f"no service {service!r}: {', '.join(SERVICES)}")
        self.flags[service] = list(flags or [])
        old = self.procs.get(service)
        if old:
            self._stop(old)
        self._spawn_service(service)
        self._wait_http(self.name, f"http://127.0.0.1:{SERVICES[service]['port']}/ready", wait, what=service)

    def rotate(self) -> dict[str, Any]:
        """A new IdP signing key, published first; the previous one stays in the JWKS."""
        status, body = http(self.name, f"http://{IDP_ADDR}:{IDP_OPS_PORT}/admin/rotate", method="POST")
        if status != 200:
            raise TargetError(f"rotate failed: {status} {body[:200]}")
        result: dict[str, Any] = json.loads(body)
        return result

    # -------------------------------------------------------------- stop
    @staticmethod
    def alive(p: Proc) -> bool:
        return p.pid > 0 and _start_time(p.pid) == p.start

    def _stop(self, p: Proc, grace: float = 5) -> None:
        if self.alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.alive(p) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
        p.pid = 0
        self._save()

    def down(self) -> list[str]:
        """Stop every process, kill whatever else still runs in the namespaces, delete them; what was left over."""
        for p in list(self.procs.values()):
            self._stop(p)
        leftovers: list[str] = []
        for ns in (self.name, self.idp_netns):
            if not self.name or not Path(f"/run/netns/{ns}").exists():
                continue
            pids = [int(x) for x in _run(["ip", "netns", "pids", ns], check=False).stdout.split()]
            for pid in pids:  # started in there by someone else (a chaos run's k6 ...): nothing may outlive it
                leftovers.append(f"pid {pid} in {ns}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _run(["ip", "netns", "del", ns], check=False)
        (self.home / "state.json").unlink(missing_ok=True)
        return leftovers


# ------------------------------------------------------------------------------------------------- command line
def _dest(variant: str) -> str:
    return variant.lstrip("-").replace("-", "_")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("./.shop-target"), help="where the target's files live")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the target; prints TARGET_FILE")
    up.add_argument("--name", default="shop", help="the apps' network namespace (the IdP's: <name>-idp)")
    for v in VARIANTS:
        up.add_argument(v, action="append", default=[], metavar="SERVICE", help=f"start SERVICE with {v}")
    restart = sub.add_parser("restart", help="restart one service (its counters start at 0)")
    restart.add_argument("service", choices=sorted(SERVICES))
    for v in VARIANTS:
        restart.add_argument(v, action="store_true", help=f"restart it with {v}")
    sub.add_parser("rotate", help="a new IdP signing key (the previous one stays published)")
    sub.add_parser("status", help="the processes and their switches")
    sub.add_parser("down", help="stop everything and delete the namespaces")
    args = parser.parse_args(argv)
    home = args.dir.resolve()
    try:
        if args.command == "up":
            flags = {n: [v for v in VARIANTS if n in getattr(args, _dest(v))] for n in SERVICES}
            started = time.monotonic()
            t = Target(home, name=args.name).up(flags)
            print(f"up in {time.monotonic() - started:.1f}s: namespace {t.name} (IdP in {t.idp_netns})")
            print(f"TARGET_FILE={t.description_file}")
            print(f"secrets (TOKEN_CLIENTS, mode 0600): {t.secrets_file}")
            print(f"run chaosext there: ip netns exec {t.name} <command>")
            return 0
        t = Target.load(home)
        if args.command == "down":
            left = t.down()
            print("down" + (f" (killed what else ran there: {', '.join(left)})" if left else ""))
        elif args.command == "restart":
            wanted = [v for v in VARIANTS if getattr(args, _dest(v))]
            t.restart(args.service, wanted)
            print(f"{args.service} restarted {' '.join(wanted)}".rstrip())
        elif args.command == "rotate":
            print(json.dumps(t.rotate()))
        else:
            print(json.dumps({"namespace": t.name, "processes": {
                n: {"pid": p.pid, "alive": t.alive(p), "switches": t.flags.get(n, [])} for n, p in t.procs.items()}},
                indent=1))
    except (TargetError, FileNotFoundError) as exc:
        print(f"target: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
