"""Start, check and stop the lab's processes.

``up(config)`` checks everything it can before starting anything (flag values, free ports, binaries, the generated
Prometheus config), then starts the Authority, the tenant services, Alertmanager and Prometheus detached (new
session, output to ``<state>/logs/<name>.log``), waits until each answers its health URL and records them in
``state.json``. If any component fails, the ones already started are stopped again. ``down(state_dir)`` stops every
process of that lab (found through state.json and, as a fallback, by command line) and only ever signals a pid whose
command line still names the lab's state directory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosext.core.labstate import STATE_VERSION, StateError, clear_state, load_state, resolve_state_dir, save_state
from chaosext.core.names import JWKS_CACHE_MODES, LAB_SERVICES
from chaosext.lab import envoy as lab_envoy
from chaosext.lab import promconfig

__all__ = [
    "SERVICES",
    "CACHE_MODES",
    "APT_HINT",
    "LabConfig",
    "LabError",
    "Component",
    "plan",
    "up",
    "down",
    "status",
    "find_lab_processes",
    "to_json",
]

SERVICES = LAB_SERVICES
CACHE_MODES = JWKS_CACHE_MODES
#: chaosext.lab.service.HOLES (kept here so the CLI needs no service import)
HOLES = ("accept-alg-none", "alg-confusion", "ignore-exp", "trust-token-key", "ignore-tenant", "skip-signature-404")
APT_HINT = "install it with `apt-get install prometheus prometheus-alertmanager`, or run `chaosext lab up --no-prometheus`"
#: config fields that do not change what the running lab is (ignored when `up` finds a lab already running)
_RUNTIME_ONLY = ("state_dir", "ready_timeout")
#: the lab's OAuth2 client (id + secret, made at `lab up`, mode 0600): lab-only test credentials
CLIENTS_FILE = "clients.json"
LAB_CLIENT_ID = "chaosext-lab"


def _new_client(state_dir: Path) -> dict[str, str]:
    """Create the lab's client credentials in ``clients.json`` (0600) and return ``{client_id, client_secret}``."""
    import secrets

    client = {"client_id": LAB_CLIENT_ID, "client_secret": secrets.token_urlsafe(32)}
    path = state_dir / CLIENTS_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"clients": [client]}, fh)
    return client


class LabError(RuntimeError):
    """A user-facing failure: the message says what went wrong and what to do."""


@dataclass
class LabConfig:
    """Every `chaosext lab up` setting (field ``x_y`` is flag ``--x-y``). Defaults are docs/architecture.md's."""

    state_dir: str = ""
    authority_host: str = "127.0.0.2"
    authority_port: int = 8440
    ops_host: str = "127.0.0.1"
    ops_port: int = 8441
    host: str = "127.0.0.1"
    policy_port: int = 8451
    vuln_port: int = 8452
    notify_port: int = 8453
    prometheus_port: int = 9490
    alertmanager_port: int = 9493
    services: tuple[str, ...] = SERVICES
    audience: str = "stellaops-api"
    tenants: str = ""
    rotate_overlap: int = 600
    jwks_ttl: int = 300
    jwks_max_stale: int = 3600
    cache_mode: str = "lkg"
    no_audit: bool = False
    fail_open: bool = False
    #: JWT validation holes on purpose (chaosext.lab.service.HOLES), one per forgery class family
    holes: tuple[str, ...] = ()
    no_refetch_after_failure: bool = False
    audit_drop: str = ""
    inject_5xx: float = 0.0
    rate_limit: int = 500
    rate_burst: int = 1000
    tenant_header: str = "X-StellaOps-Tenant"
    tenant_cap: int = 1000
    alert_for: int = 10
    scrape_interval: int = 2
    no_prometheus: bool = False
    rules_dir: str = ""
    prometheus_bin: str = "prometheus"
    promtool_bin: str = "promtool"
    alertmanager_bin: str = "prometheus-alertmanager"
    ready_timeout: float = 60.0
    #: iptables: services fetch the Authority directly; envoy: through a real Envoy (listener envoy_port, admin
    #: envoy_admin_port, both on host) whose route carries the fault filter (chaosext.lab.envoy)
    egress: str = "iptables"
    envoy_port: int = 8444
    envoy_admin_port: int = 9901
    envoy_bin: str = "envoy"
    #: with egress envoy: this service is reached through an Envoy jwt_authn gateway on envoy_jwt_port
    envoy_jwt_service: str = ""
    envoy_jwt_port: int = 8454

    def __post_init__(self) -> None:
        self.state_dir = str(resolve_state_dir(self.state_dir or None))
        if isinstance(self.services, str):
            self.services = tuple(s.strip() for s in self.services.split(",") if s.strip())
        self.services = tuple(self.services)
        if isinstance(self.holes, str):
            self.holes = tuple(h.strip() for h in self.holes.split(",") if h.strip())
        self.holes = tuple(self.holes)

    @property
    def issuer(self) -> str:
        """The Authority's public base URL, which is also the token issuer."""
        return f"http://{self.authority_host}:{self.authority_port}"

    @property
    def jwks_url(self) -> str:
        """Where the services fetch the JWKS: the one address the egress fault blocks (the Envoy listener with
        ``--egress envoy``)."""
        if self.egress == "envoy":
            return f"{_url(self.host, self.envoy_port)}/.well-known/jwks.json"
        return f"{self.issuer}/.well-known/jwks.json"

    def service_port(self, name: str) -> int:
        """Listen port of a tenant service."""
        return int(getattr(self, f"{name}_port"))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings, recorded in state.json under ``config``."""
        data = dataclasses.asdict(self)
        data["services"] = list(self.services)
        data["holes"] = list(self.holes)
        return data

    def validate(self) -> None:
        """Raise LabError naming the flag for every value that cannot work (before anything is started)."""
        problems = []
        unknown = [s for s in self.services if s not in SERVICES]
        if unknown or not self.services or len(set(self.services)) != len(self.services):
            problems.append(f"--services {','.join(self.services) or '(empty)'}: give a comma list of distinct "
                            f"names from {','.join(SERVICES)}")
        if self.egress not in lab_envoy.EGRESS_MODES:
            problems.append(f"--egress {self.egress}: use one of {', '.join(lab_envoy.EGRESS_MODES)}")
        if self.envoy_jwt_service and (self.egress != "envoy" or self.envoy_jwt_service not in self.services):
            problems.append(f"--envoy-jwt-service {self.envoy_jwt_service}: needs --egress envoy and one of the "
                            f"running --services")
        if self.cache_mode not in CACHE_MODES:
            problems.append(f"--cache-mode {self.cache_mode}: use one of {', '.join(CACHE_MODES)}")
        ports = ["authority_port", "ops_port", "prometheus_port", "alertmanager_port", "envoy_port",
                 "envoy_admin_port", "envoy_jwt_port"] + [
            f"{s}_port" for s in SERVICES]
        for name in ports:
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= 65535:
                problems.append(f"--{name.replace('_', '-')} {value}: use a TCP port 1-65535")
        for name in ("jwks_ttl", "rate_limit", "rate_burst", "tenant_cap", "scrape_interval"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        for name in ("alert_for", "rotate_overlap"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')} {getattr(self, name)}: must be 0 or more")
        if self.jwks_max_stale < self.jwks_ttl:
            problems.append(f"--jwks-max-stale {self.jwks_max_stale} is below --jwks-ttl {self.jwks_ttl}: the hard "
                            f"limit must be at least the soft TTL")
        if not self.tenant_header or any(c in self.tenant_header for c in " :\r\n"):
            problems.append(f"--tenant-header {self.tenant_header!r}: must be a plain HTTP header name")
        if self.ready_timeout <= 0:
            problems.append(f"--ready-timeout {self.ready_timeout}: must be positive")
        if problems:
            raise LabError("bad lab settings:\n  " + "\n  ".join(problems))


@dataclass
class Component:
    """One lab process: how to start it and how to tell it is ready."""

    name: str
    argv: list[str]
    binds: list[tuple[str, int]]
    url: str
    health: str
    port: int
    extra: dict[str, Any] = field(default_factory=dict)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _which(binary: str) -> str | None:
    if os.sep in binary:
        return binary if os.access(binary, os.X_OK) and Path(binary).is_file() else None
    return shutil.which(binary)


def plan(cfg: LabConfig) -> list[Component]:
    """The lab's processes in start order: authority, services, then alertmanager and prometheus."""
    state = Path(cfg.state_dir)
    py = sys.executable
    authority_argv = [py, "-m", "chaosext.lab.authority", "--host", cfg.authority_host,
                      "--port", str(cfg.authority_port), "--ops-host", cfg.ops_host, "--ops-port", str(cfg.ops_port),
                      "--issuer", cfg.issuer, "--audience", cfg.audience, "--key-dir", str(state / "keys"),
                      "--rotate-overlap", str(cfg.rotate_overlap), "--clients-file", str(state / CLIENTS_FILE)]
    if cfg.tenants:
        authority_argv += ["--tenants", cfg.tenants]
    ops = _url(cfg.ops_host, cfg.ops_port)
    comps = [Component("authority", authority_argv, [(cfg.authority_host, cfg.authority_port),
                                                     (cfg.ops_host, cfg.ops_port)],
                       url=cfg.issuer, health=f"{ops}/healthz", port=cfg.authority_port,
                       extra={"ops_url": ops, "ops_port": cfg.ops_port, "metrics": f"{ops}/metrics",
                              "token_url": f"{cfg.issuer}/token", "jwks_url": f"{cfg.issuer}/.well-known/jwks.json"})]
    if cfg.egress == "envoy":
        comps.append(Component(**lab_envoy.lab_component(cfg)))
    for name in cfg.services:
        port = cfg.service_port(name)
        argv = [py, "-m", "chaosext.lab.service", "--service", name, "--host", cfg.host, "--port", str(port),
                "--jwks-url", cfg.jwks_url, "--issuer", cfg.issuer, "--audience", cfg.audience,
                "--tenant-header", cfg.tenant_header, "--jwks-ttl", str(cfg.jwks_ttl),
                "--jwks-max-stale", str(cfg.jwks_max_stale), "--rate-limit", str(cfg.rate_limit),
                "--rate-burst", str(cfg.rate_burst), "--audit-file", str(state / "audit.jsonl"),
                "--cache-mode", cfg.cache_mode, "--tenant-cap", str(cfg.tenant_cap)]
        argv += ["--no-audit"] if cfg.no_audit else []
        argv += ["--fail-open"] if cfg.fail_open else []
        for hole in cfg.holes:
            argv += ["--hole", hole]
        argv += ["--no-refetch-after-failure"] if cfg.no_refetch_after_failure else []
        argv += ["--audit-drop", cfg.audit_drop] if cfg.audit_drop else []
        argv += ["--inject-5xx", str(cfg.inject_5xx)] if cfg.inject_5xx else []
        url = _url(cfg.host, port)
        comps.append(Component(name, argv, [(cfg.host, port)], url=lab_envoy.service_url(cfg, name, url),
                               health=f"{url}/healthz", port=port,
                               extra={"metrics": f"{url}/metrics"}))
    if not cfg.no_prometheus:
        am_url = _url(cfg.host, cfg.alertmanager_port)
        am_dir = state / "alertmanager"
        comps.append(Component("alertmanager", [
            cfg.alertmanager_bin, f"--config.file={am_dir / 'alertmanager.yml'}", f"--storage.path={am_dir / 'data'}",
            f"--web.listen-address={cfg.host}:{cfg.alertmanager_port}", "--cluster.listen-address=",
            "--data.retention=24h"], [(cfg.host, cfg.alertmanager_port)], url=am_url, health=f"{am_url}/-/ready",
            port=cfg.alertmanager_port, extra={"metrics": f"{am_url}/metrics"}))
        prom_url = _url(cfg.host, cfg.prometheus_port)
        prom_dir = state / "prometheus"
        comps.append(Component("prometheus", [
            cfg.prometheus_bin, f"--config.file={prom_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={prom_dir / 'data'}", "--storage.tsdb.retention.time=1d",
            f"--web.listen-address={cfg.host}:{cfg.prometheus_port}",
            # resend firing alerts every evaluation, not every minute: an alert that fired before Prometheus had
            # found the Alertmanager (dropped) reaches it one evaluation later
            f"--rules.alert.resend-delay={cfg.scrape_interval}s"], [(cfg.host, cfg.prometheus_port)],
            url=prom_url, health=f"{prom_url}/-/ready", port=cfg.prometheus_port,
            extra={"metrics": f"{prom_url}/metrics"}))
    return comps


# ---------------------------------------------------------------------------------------------------- preflight

def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what the servers do; TIME_WAIT is fine
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _preflight(cfg: LabConfig, comps: list[Component]) -> None:
    """Everything checkable before any process starts: binaries, duplicate and busy ports."""
    if not cfg.no_prometheus:
        missing = [b for b in (cfg.prometheus_bin, cfg.promtool_bin, cfg.alertmanager_bin) if not _which(b)]
        if missing:
            raise LabError(f"{', '.join(missing)} not found: {APT_HINT}")
    if cfg.egress == "envoy" and not _which(cfg.envoy_bin):
        raise LabError(f"{cfg.envoy_bin} not found (--egress envoy): {lab_envoy.ENVOY_HINT}")
    seen: dict[tuple[str, int], str] = {}
    for comp in comps:
        for bind in comp.binds:
            if bind in seen:
                raise LabError(f"{comp.name} and {seen[bind]} are both set to listen on {bind[0]}:{bind[1]}; "
                               f"give them different ports")
            seen[bind] = comp.name
    busy = [f"{comp.name} {h}:{p}" for comp in comps for h, p in comp.binds if not _port_free(h, p)]
    if busy:
        raise LabError(f"port already in use: {', '.join(busy)}. Stop what listens there (`ss -ltnp`), or choose "
                       f"other ports (`chaosext lab up --help` lists a flag for each); nothing was started")


def _write_configs(cfg: LabConfig, comps: list[Component]) -> list[Path]:
    """Generate prometheus.yml / alertmanager.yml and the capped rule copies, and check them with the tools."""
    state = Path(cfg.state_dir)
    rules_dir = Path(cfg.rules_dir) if cfg.rules_dir else promconfig.default_rules_dir()
    if cfg.rules_dir and not rules_dir.is_dir():
        raise LabError(f"--rules-dir {rules_dir} is not a directory")
    try:
        sources = promconfig.find_rule_files(rules_dir)
        rules = promconfig.write_rule_copies(sources, state / "prometheus" / "rules", cfg.alert_for)
    except promconfig.PromConfigError as exc:
        raise LabError(str(exc)) from exc
    targets = {c.name: c.extra["metrics"].split("//", 1)[1].split("/", 1)[0] for c in comps if "metrics" in c.extra}
    prom = promconfig.prometheus_config(targets, rules, f"{cfg.host}:{cfg.alertmanager_port}", cfg.scrape_interval)
    prom_file = promconfig.write_yaml(state / "prometheus" / "prometheus.yml", prom, "generated by chaosext lab up")
    am_file = promconfig.write_yaml(state / "alertmanager" / "alertmanager.yml", promconfig.alertmanager_config(),
                                    "generated by chaosext lab up")
    try:
        promconfig.check_config([cfg.promtool_bin, "check", "config", str(prom_file)], "Prometheus config")
        amtool = shutil.which("amtool")
        if amtool:
            promconfig.check_config([amtool, "check-config", str(am_file)], "Alertmanager config")
    except promconfig.PromConfigError as exc:
        raise LabError(str(exc)) from exc
    return sources


# ---------------------------------------------------------------------------------------------------- processes

def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a pid, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    if stat is None or stat[0] in "ZX":
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        return False
    return True


def _marker(state_dir: str) -> str:
    return state_dir.rstrip("/") + "/"


def _is_lab_cmdline(argv: list[str], state_dir: str) -> bool:
    """True for a lab component whose arguments name this state directory."""
    if not any(_marker(state_dir) in a for a in argv):
        return False
    joined = " ".join(argv)
    return ("chaosext.lab.authority" in joined or "chaosext.lab.service" in joined
            or any("--config.file=" in a for a in argv) or "--config-path" in argv)


def _is_ours(pid: int, state_dir: str, start_ticks: int | None = None) -> bool:
    """The pid is alive and is still the process we started (pids get reused)."""
    if not pid or not _alive(pid):
        return False
    if start_ticks is not None:
        stat = _proc_stat(pid)
        if stat is None or stat[1] != start_ticks:
            return False
    return _is_lab_cmdline(_cmdline(pid), state_dir)


def find_lab_processes(state_dir: str | os.PathLike[str]) -> list[int]:
    """Pids of every live process whose command line makes it a component of the lab in state_dir."""
    sd = str(resolve_state_dir(state_dir))
    me = os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and _is_ours(int(entry.name), sd):
            pids.append(int(entry.name))
    return sorted(pids)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join("    | " + line for line in text) or "    | (empty log)"


def _start(comp: Component, state_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{comp.name}.log"
    if log.exists():
        log.replace(logs / f"{comp.name}.log.1")  # keep the previous run's log for post-mortems
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH", "")) if p)
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(comp.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=state_dir, env=env, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise LabError(f"cannot start {comp.name} ({comp.argv[0]}): {exc}") from exc
    return proc, log


def _http_ok(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """(healthy, detail) of a health URL: healthy only on HTTP 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"unreachable ({reason})"


def _wait_ready(started: dict[str, tuple[Component, subprocess.Popen[bytes], Path]], deadline: float) -> None:
    pending = dict(started)
    while pending:
        for name, (comp, proc, log) in list(pending.items()):
            code = proc.poll()
            if code is not None:
                raise LabError(f"{name} exited with code {code} while starting; last lines of {log}:\n"
                               f"{_log_tail(log)}")
            if _http_ok(comp.health, timeout=1.0)[0]:
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            name, (comp, _, log) = next(iter(pending.items()))
            raise LabError(f"{name} not ready: {comp.health} did not answer 200 in time (--ready-timeout); "
                           f"last lines of {log}:\n{_log_tail(log)}")
        time.sleep(0.2)


def _terminate(pids: list[int], state_dir: str, grace: float) -> list[int]:
    """SIGTERM (process group), then SIGKILL after grace; only our pids. Returns pids still alive."""
    def signal_all(sig: int, targets: list[int]) -> None:
        for pid in targets:
            if not _is_ours(pid, state_dir):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)

    def wait(targets: list[int], seconds: float) -> list[int]:
        end = time.monotonic() + seconds
        while True:
            left = [p for p in targets if _alive(p)]
            if not left or time.monotonic() > end:
                return left
            time.sleep(0.1)

    targets = [p for p in pids if _is_ours(p, state_dir)]
    signal_all(signal.SIGTERM, targets)
    left = wait(targets, grace)
    if left:
        signal_all(signal.SIGKILL, left)
        left = wait(left, 5.0)
    return left


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One `up`/`down` at a time per state directory."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        lock = open(state_dir / ".lock", "w")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise LabError(f"cannot use {state_dir} as the lab state directory ({exc}); pick another with "
                       f"--state-dir or CHAOSEXT_LAB_DIR") from exc
    with lock as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise LabError(f"another `chaosext lab` command is working on {state_dir}; wait for it to finish") \
                from exc
        yield


# ---------------------------------------------------------------------------------------------------- commands

def _state_for(cfg: LabConfig, records: dict[str, dict[str, Any]], client: dict[str, str]) -> dict[str, Any]:
    state_dir = Path(cfg.state_dir)
    comps = records
    return {
        "version": STATE_VERSION,
        "started_at": time.time(),
        "state_dir": str(state_dir),
        "config": cfg.as_dict(),
        "components": comps,
        "jwks_url": cfg.jwks_url,
        "authority_url": cfg.issuer,
        "token_url": f"{cfg.issuer}/token",
        **client,  # client_id / client_secret: the lab's test client (state.json is 0600)
        "service_urls": {name: comps[name]["url"] for name in cfg.services},
        "tenant_header": cfg.tenant_header,
        "audience": cfg.audience,
        "audit_file": str(state_dir / "audit.jsonl"),
        "prometheus_url": comps["prometheus"]["url"] if "prometheus" in comps else None,
        "alertmanager_url": comps["alertmanager"]["url"] if "alertmanager" in comps else None,
        "fault": {"via": "iptables", "target": "local", "host": cfg.authority_host, "port": cfg.authority_port},
        **_envoy_state(comps, cfg),
    }


def _envoy_state(comps: dict[str, dict[str, Any]], cfg: LabConfig) -> dict[str, Any]:
    """With ``--egress envoy``: the admin URL and the fault hint (the fault goes to Envoy's admin API)."""
    if cfg.egress != "envoy" or "envoy" not in comps:
        return {}
    admin = comps["envoy"]["admin_url"]
    return {"envoy_admin_url": admin, "fault": {"via": "envoy", "target": admin, "host": cfg.host,
                                                  "port": cfg.envoy_port}}


def _health_of(state: dict[str, Any], state_dir: Path) -> dict[str, dict[str, Any]]:
    result = {}
    for name, comp in state["components"].items():
        pid = int(comp.get("pid") or 0) if isinstance(comp, dict) else 0
        comp = comp if isinstance(comp, dict) else {}
        alive = _is_ours(pid, str(state_dir), comp.get("start_ticks"))
        if not alive:
            healthy, detail = False, "process not running"
        elif not comp.get("health"):
            healthy, detail = False, "no health URL in state.json"
        else:
            healthy, detail = _http_ok(comp["health"])
        result[name] = {"pid": pid, "alive": alive, "healthy": healthy, "detail": detail, "url": comp.get("url"),
                        "health": comp.get("health"), "log": comp.get("log")}
    return result


def up(cfg: LabConfig, echo: Any = print) -> dict[str, Any]:
    """Start the lab described by cfg (or find it already running); returns the state dict.

    Raises LabError, with nothing of this attempt left running, when anything is wrong.
    """
    cfg.validate()
    state_dir = Path(cfg.state_dir)
    with _locked(state_dir):
        previous = load_state(state_dir)  # StateError (corrupt) propagates: the message says to run `down`
        if previous is not None:
            health = _health_of(previous, state_dir)
            for _ in range(3):  # a busy service may miss one health check: do not restart a lab for that
                if all(h["healthy"] for h in health.values()) or not all(h["alive"] for h in health.values()):
                    break
                time.sleep(1.0)
                health = _health_of(previous, state_dir)
            if all(h["healthy"] for h in health.values()):
                wanted = {k: v for k, v in cfg.as_dict().items() if k not in _RUNTIME_ONLY}
                running = {k: v for k, v in previous.get("config", {}).items() if k not in _RUNTIME_ONLY}
                diff = [k for k in wanted if wanted[k] != running.get(k)]
                if diff:
                    details = ", ".join(f"{k}: running {running.get(k)!r}, asked {wanted[k]!r}" for k in diff)
                    raise LabError(f"a lab is already running in {state_dir} with other settings ({details}); "
                                   f"run `chaosext lab down --state-dir {state_dir}` first")
                previous["already_running"] = True
                return previous
            if any(h["alive"] for h in health.values()):
                bad = ", ".join(f"{n} ({h['detail']})" for n, h in health.items() if not h["healthy"])
                echo(f"lab in {state_dir} is only partly running ({bad}); restarting it cleanly")
            else:
                echo(f"state in {state_dir} is left over from a lab that no longer runs; starting afresh")
        leftovers = find_lab_processes(state_dir)
        if leftovers:
            still = _terminate(leftovers, str(state_dir), grace=10.0)
            if still:
                raise LabError(f"cannot stop old lab processes {still} of {state_dir}; stop them by hand")
        clear_state(state_dir)

        comps = plan(cfg)
        _preflight(cfg, comps)
        if not cfg.no_prometheus:
            _write_configs(cfg, comps)
        (state_dir / "keys").mkdir(parents=True, exist_ok=True)
        client = _new_client(state_dir)
        if cfg.egress == "envoy":
            lab_envoy.write_lab_bootstrap(cfg)

        started: dict[str, tuple[Component, subprocess.Popen[bytes], Path]] = {}
        deadline = time.monotonic() + cfg.ready_timeout
        try:
            # the authority (and the Envoy in front of it) first: services fetch the JWKS when they start
            first = 2 if cfg.egress == "envoy" else 1
            for wave in (comps[:first], comps[first:]):
                batch = {}
                for comp in wave:
                    proc, log = _start(comp, state_dir)
                    started[comp.name] = batch[comp.name] = (comp, proc, log)
                _wait_ready(batch, deadline)
        except BaseException:
            left = _terminate([p.pid for _, p, _ in started.values()], str(state_dir), grace=5.0)
            for _, proc, _ in started.values():
                with contextlib.suppress(Exception):
                    proc.wait(timeout=1)
            if left:
                echo(f"warning: could not stop {left}")
            raise

        records = {}
        for name, (comp, proc, log) in started.items():
            stat = _proc_stat(proc.pid)
            records[name] = {"pid": proc.pid, "start_ticks": stat[1] if stat else None, "url": comp.url,
                             "health": comp.health, "log": str(log), "port": comp.port,
                             "argv": comp.argv, **comp.extra}
        state = _state_for(cfg, records, client)
        save_state(state_dir, state)
        return state


def down(state_dir: str | os.PathLike[str] | None = None, grace: float = 10.0) -> dict[str, Any]:
    """Stop every process of the lab in state_dir and clear state.json.

    Works with a missing or corrupt state.json too (finds the processes by command line). Returns
    ``{"stopped": [names/pids], "left": [pids]}``; ``left`` is non-empty only if a process would not die.
    """
    sd = resolve_state_dir(state_dir)
    with _locked(sd):
        try:
            state = load_state(sd)
        except StateError:
            state = None
        pids: dict[int, str] = {}
        for name, comp in ((state or {}).get("components") or {}).items():
            pid = int(comp.get("pid") or 0) if isinstance(comp, dict) else 0
            if _is_ours(pid, str(sd), comp.get("start_ticks")):
                pids[pid] = name
        for pid in find_lab_processes(sd):
            pids.setdefault(pid, f"pid {pid}")
        order = list(reversed(pids))  # reverse start order: prometheus first, the authority last
        left = _terminate(order, str(sd), grace) if order else []
        if not left:
            clear_state(sd)
        return {"state_dir": str(sd), "stopped": [pids[p] for p in order if p not in left], "left": left}


def status(state_dir: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """state.json plus each component's live health (``components.<name>.alive/healthy/detail``); None if no lab.

    Raises StateError when state.json is corrupt.
    """
    sd = resolve_state_dir(state_dir)
    state = load_state(sd)
    if state is None:
        return None
    health = _health_of(state, sd)
    for name, h in health.items():
        if not isinstance(state["components"][name], dict):
            state["components"][name] = {}
        state["components"][name].update(alive=h["alive"], healthy=h["healthy"], detail=h["detail"])
    state["healthy"] = all(h["healthy"] for h in health.values())
    return state


def to_json(data: dict[str, Any]) -> str:
    """Pretty JSON for the CLI."""
    return json.dumps(data, indent=2, sort_keys=False)
