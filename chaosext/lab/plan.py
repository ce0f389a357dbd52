"""From `chaosext lab up`'s settings to the lab's processes: :class:`LabConfig` (every flag, validated before anything
starts), :func:`plan` (the components in start order: command line, listen addresses, health URL) and
:func:`preflight` (what this host must offer: the binaries and free ports)."""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosext.core import procs
from chaosext.core.errors import ChaosextError
from chaosext.core.labstate import resolve_state_dir
from chaosext.core.names import JWKS_CACHE_MODES
from chaosext.lab import envoy as lab_envoy
from chaosext.lab.common import HOLES, base_url, find_binary

__all__ = ["SERVICES", "SERVICE_KNOBS", "CACHE_MODES", "HOLES", "APT_HINT", "CLIENTS_FILE", "LAB_CLIENT_ID",
           "FIRST_WAVE", "LabError",
           "flag", "LabConfig", "Component", "plan", "waves", "preflight"]

#: the lab's tenant services (a real target names its own in its target description)
SERVICES = ("policy", "vuln", "notify")
CACHE_MODES = JWKS_CACHE_MODES
APT_HINT = ("install it with `apt-get install prometheus prometheus-alertmanager`, or run "
            "`chaosext lab up --no-prometheus`")
#: the lab's OAuth2 client (id + secret, made at `lab up`, mode 0600): lab-only test credentials
CLIENTS_FILE = "clients.json"
LAB_CLIENT_ID = "chaosext-lab"
#: started and ready before the rest: the services fetch the JWKS (from the Authority, or through Envoy) at start
FIRST_WAVE = ("authority", "envoy")
#: misbehaviour knobs that name the services they apply to (a comma list, or ``all``); each is the service's flag
#: ``--<name with dashes>`` (chaosext.lab.service)
SERVICE_KNOBS = ("jwks_swap", "jwks_fetch_inline", "jwks_unknown_kid_storm", "jwks_pinned", "ready_without_keys")
#: the settings that must be TCP ports, as flags ``--<name with dashes>``
_PORT_FIELDS = ("authority_port", "ops_port", "prometheus_port", "alertmanager_port", "envoy_port", "envoy_admin_port",
                "envoy_jwt_port") + tuple(f"{s}_port" for s in SERVICES)


class LabError(ChaosextError, RuntimeError):
    """A user-facing failure of `chaosext lab`: the message says what went wrong and what to do."""


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    """A comma list (a flag's value) or names, as a tuple."""
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    return tuple(value)


def flag(default: Any, help: str = "", *, choices: Iterable[str] = (), minimum: float | None = None,
         maximum: float | None = None, metavar: str = "", show_default: bool = True) -> Any:
    """One `chaosext lab up` flag (``--<field with dashes>``): its default and what ``--help`` says; the command is
    built from these fields (``chaosext.lab.cli``), so a setting is declared once."""
    meta = {"help": help, "choices": tuple(choices), "min": minimum, "max": maximum, "metavar": metavar,
            "show_default": show_default}
    return field(default=default, metadata=meta)


@dataclass
class LabConfig:
    """Every `chaosext lab up` setting (field ``x_y`` is flag ``--x-y``). Defaults are docs/architecture.md's."""

    state_dir: str = flag("", "Lab state directory (state.json, logs/, audit.jsonl, prometheus/) "
                              "[default: ./.chaosext-lab; as root /var/lib/chaosext/lab]. It must belong to you and "
                              "nobody else may write it or any directory above it", show_default=False)
    authority_host: str = flag("127.0.0.2", "Authority public listener (JWKS, token): the address the egress fault "
                                            "blocks")
    authority_port: int = flag(8440)
    ops_host: str = flag("127.0.0.1", "Authority ops listener (/metrics, /healthz, /admin/rotate); stays reachable "
                                      "during the fault")
    ops_port: int = flag(8441)
    host: str = flag("127.0.0.1", "Listen address of the services, Prometheus and Alertmanager")
    policy_port: int = flag(8451)
    vuln_port: int = flag(8452)
    notify_port: int = flag(8453)
    prometheus_port: int = flag(9490)
    alertmanager_port: int = flag(9493)
    #: a tuple of names from SERVICES (a comma list is accepted and split)
    services: tuple[str, ...] = flag(SERVICES, "Tenant services to run (comma list)", metavar="LIST")
    audience: str = flag("stellaops-api")
    tenants: str = flag("", "Authority's tenant list, e.g. t01,t02 (default: the Authority's own)",
                        show_default=False)
    rotate_overlap: int = flag(600, "Seconds an old signing key stays published after a rotation", minimum=0)
    jwks_ttl: int = flag(300, "Services' JWKS cache soft TTL, seconds", minimum=1)
    jwks_max_stale: int = flag(3600, "Hard limit, seconds: after it the services fail closed (401)", minimum=1)
    cache_mode: str = flag("lkg", "lkg = last known good (production-like); hard-ttl / none = misbehaviour knobs",
                           choices=JWKS_CACHE_MODES)
    no_audit: bool = flag(False, "Misbehaviour knob: write no audit events")
    fail_open: bool = flag(False, "Misbehaviour knob: accept tokens it cannot verify while the JWKS is unreachable "
                                  "(a security bug)")
    #: JWT validation holes on purpose (chaosext.lab.common.HOLES), one per forgery class family (a comma list is
    #: accepted and split)
    holes: tuple[str, ...] = flag((), "Misbehaviour knobs: JWT validation holes on purpose, one per forgery class "
                                      f"family (comma list of {', '.join(HOLES)}); the no-fail-open check must catch "
                                      f"each", metavar="LIST", show_default=False)
    #: the holes and fail_open apply to these tenants only (the token's tenant claim); empty: every tenant
    hole_tenants: tuple[str, ...] = flag((), "Misbehaviour knob: the --holes and --fail-open apply to these tenants "
                                             "only (comma list of the token's tenant claim, e.g. t03); the forgery "
                                             "catalogue attacks every tenant and must catch it", metavar="LIST",
                                         show_default=False)
    no_refetch_after_failure: bool = flag(False, "Misbehaviour knob: after a failed JWKS fetch never fetch again (a "
                                                 "service that never recovers)")
    audit_drop: str = flag("", "Misbehaviour knob: never audit these actions, e.g. auth.degraded,auth.recovered (a "
                               "lossy pipeline)", metavar="ACTIONS", show_default=False)
    inject_5xx: float = flag(0.0, "Misbehaviour knob: answer this fraction of authenticated requests with 503 (an "
                                  "unhealthy service)", minimum=0, maximum=1)
    #: JWKS_FAILURE knobs: each a comma list of services (or ``all``), each caught by its mode's run (docs/lab.md)
    jwks_swap: tuple[str, ...] = flag((), "Misbehaviour knob: these services (comma list, or all) replace their key "
                                          "cache with whatever the JWKS answered (an error page, an empty or foreign "
                                          "key set: every key lost at once)", metavar="SERVICES", show_default=False)
    jwks_fetch_inline: tuple[str, ...] = flag((), "Misbehaviour knob: these services fetch the JWKS on the request "
                                                  "path, without a timeout, once their keys are past the TTL (every "
                                                  "request waits for a slow JWKS)", metavar="SERVICES",
                                              show_default=False)
    jwks_unknown_kid_storm: tuple[str, ...] = flag((), "Misbehaviour knob: these services fetch the JWKS for every "
                                                       "token with an unknown kid, awaited, with no rate limit",
                                                   metavar="SERVICES", show_default=False)
    jwks_pinned: tuple[str, ...] = flag((), "Misbehaviour knob: these services keep the first key set they fetched "
                                            "for ever (a rotated signing key is never picked up)", metavar="SERVICES",
                                        show_default=False)
    ready_without_keys: tuple[str, ...] = flag((), "Misbehaviour knob: these services report ready (GET /ready 200) "
                                                   "while they hold no key", metavar="SERVICES", show_default=False)
    rate_limit: int = flag(500, "Per-tenant requests/s", minimum=1)
    rate_burst: int = flag(1000, minimum=1)
    tenant_header: str = flag("X-StellaOps-Tenant")
    tenant_cap: int = flag(1000, "Distinct tenant label values per service before folding into __overflow__",
                           minimum=1)
    alert_for: int = flag(10, "Lab override: cap every alert rule's for:/keep_firing_for: at this many seconds (a "
                              "rewritten copy in <state>/prometheus/rules; production values stay in alerts.yaml)",
                          minimum=0)
    scrape_interval: int = flag(2, "Prometheus scrape and rule evaluation interval, seconds", minimum=1)
    no_prometheus: bool = flag(False, "Run without Prometheus and Alertmanager")
    rules_dir: str = flag("", "Prometheus rule files to load [default: the repository's ops/devops/tenant/]",
                          show_default=False)
    prometheus_bin: str = flag("prometheus")
    promtool_bin: str = flag("promtool")
    alertmanager_bin: str = flag("prometheus-alertmanager")
    ready_timeout: float = flag(60.0, "Seconds to wait for all components to be ready", minimum=0.1)
    #: iptables: services fetch the Authority directly; envoy: through a real Envoy (listener envoy_port, admin
    #: envoy_admin_port, both on host) whose route carries the fault filter (chaosext.lab.envoy)
    egress: str = flag("iptables", "envoy: the services fetch the JWKS through a real Envoy whose route carries the "
                                   "fault filter (fault: FAULT_VIA=envoy FAULT_TARGET=<envoy admin URL>, see `lab "
                                   "status --json`)", choices=lab_envoy.EGRESS_MODES)
    envoy_port: int = flag(8444, "Envoy JWKS listener (--egress envoy)")
    envoy_admin_port: int = flag(9901, "Envoy admin (--egress envoy)")
    envoy_bin: str = flag("envoy")
    #: with egress envoy: this service is reached through an Envoy jwt_authn gateway on envoy_jwt_port
    envoy_jwt_service: str = flag("", "With --egress envoy: reach this service through an Envoy that validates "
                                      "tokens itself (jwt_authn, remote_jwks through the faulted listener, "
                                      "cache_duration = --jwks-ttl)", show_default=False)
    envoy_jwt_port: int = flag(8454, "Envoy jwt gateway listener")

    #: fields that do not change what the running lab is (ignored when `up` finds a lab already running)
    RUNTIME_ONLY = ("state_dir", "ready_timeout")

    def __post_init__(self) -> None:
        self.state_dir = str(resolve_state_dir(self.state_dir or None))
        self.services = _names(self.services)
        self.holes = _names(self.holes)
        self.hole_tenants = _names(self.hole_tenants)
        for name in SERVICE_KNOBS:
            value = _names(getattr(self, name))
            setattr(self, name, tuple(self.services) if value == ("all",) else value)

    @property
    def state_path(self) -> Path:
        """The (absolute) state directory."""
        return Path(self.state_dir)

    @property
    def issuer(self) -> str:
        """The Authority's public base URL, which is also the token issuer."""
        return f"http://{self.authority_host}:{self.authority_port}"

    @property
    def jwks_url(self) -> str:
        """Where the services fetch the JWKS: the one address the egress fault blocks (the Envoy listener with
        ``--egress envoy``)."""
        if self.egress == "envoy":
            return f"{base_url(self.host, self.envoy_port)}/.well-known/jwks.json"
        return f"{self.issuer}/.well-known/jwks.json"

    def service_port(self, name: str) -> int:
        """Listen port of a tenant service."""
        return int(getattr(self, f"{name}_port"))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings, recorded in state.json under ``config``."""
        data = dataclasses.asdict(self)
        data["services"] = list(self.services)
        data["holes"] = list(self.holes)
        data["hole_tenants"] = list(self.hole_tenants)
        for name in SERVICE_KNOBS:
            data[name] = list(getattr(self, name))
        return data

    def identity(self) -> dict[str, Any]:
        """The settings that make a running lab what it is (:meth:`as_dict` without :attr:`RUNTIME_ONLY`)."""
        return {k: v for k, v in self.as_dict().items() if k not in self.RUNTIME_ONLY}

    def validate(self) -> None:
        """Raise LabError naming the flag for every value that cannot work (before anything is started)."""
        problems = self._choice_problems() + self._number_problems()
        if not self.tenant_header or any(c in self.tenant_header for c in " :\r\n"):
            problems.append(f"--tenant-header {self.tenant_header!r}: must be a plain HTTP header name")
        if self.ready_timeout <= 0:
            problems.append(f"--ready-timeout {self.ready_timeout}: must be positive")
        if problems:
            raise LabError("bad lab settings:\n  " + "\n  ".join(problems))

    def _choice_problems(self) -> list[str]:
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
        for name in SERVICE_KNOBS:
            wrong = [s for s in getattr(self, name) if s not in self.services]
            if wrong:
                problems.append(f"--{name.replace('_', '-')} {','.join(wrong)}: name running --services "
                                f"({','.join(self.services)}) or all")
        if self.cache_mode not in CACHE_MODES:
            problems.append(f"--cache-mode {self.cache_mode}: use one of {', '.join(CACHE_MODES)}")
        return problems

    def _number_problems(self) -> list[str]:
        problems = []
        for name in _PORT_FIELDS:
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
        return problems


@dataclass
class Component:
    """One lab process: how to start it and how to tell it is ready."""

    name: str
    argv: list[str]
    #: every (host, port) it listens on
    binds: list[tuple[str, int]]
    #: where clients reach it (recorded in state.json)
    url: str
    #: answers HTTP 200 once it is ready
    health: str
    port: int
    #: more fields for its state.json record (``metrics``: its /metrics URL, scraped by the lab's Prometheus)
    extra: dict[str, Any] = field(default_factory=dict)


def plan(cfg: LabConfig) -> list[Component]:
    """The lab's processes in start order: authority (and Envoy), services, then alertmanager and prometheus."""
    comps = [_authority(cfg)]
    if cfg.egress == "envoy":
        comps.append(Component(**lab_envoy.lab_component(cfg)))
    comps += [_service(cfg, name) for name in cfg.services]
    if not cfg.no_prometheus:
        comps += [_alertmanager(cfg), _prometheus(cfg)]
    return comps


def waves(comps: list[Component]) -> list[list[Component]]:
    """The components in two start waves: :data:`FIRST_WAVE` (ready before the rest starts), then the rest."""
    return [[c for c in comps if c.name in FIRST_WAVE], [c for c in comps if c.name not in FIRST_WAVE]]


def _authority(cfg: LabConfig) -> Component:
    state = cfg.state_path
    argv = [sys.executable, "-m", "chaosext.lab.authority", "--host", cfg.authority_host,
            "--port", str(cfg.authority_port), "--ops-host", cfg.ops_host, "--ops-port", str(cfg.ops_port),
            "--issuer", cfg.issuer, "--audience", cfg.audience, "--key-dir", str(state / "keys"),
            "--rotate-overlap", str(cfg.rotate_overlap), "--clients-file", str(state / CLIENTS_FILE)]
    if cfg.tenants:
        argv += ["--tenants", cfg.tenants]
    ops = base_url(cfg.ops_host, cfg.ops_port)
    return Component("authority", argv, [(cfg.authority_host, cfg.authority_port), (cfg.ops_host, cfg.ops_port)],
                     url=cfg.issuer, health=f"{ops}/healthz", port=cfg.authority_port,
                     extra={"ops_url": ops, "ops_port": cfg.ops_port, "metrics": f"{ops}/metrics",
                            "token_url": f"{cfg.issuer}/token", "jwks_url": f"{cfg.issuer}/.well-known/jwks.json"})


def _service(cfg: LabConfig, name: str) -> Component:
    port = cfg.service_port(name)
    argv = [sys.executable, "-m", "chaosext.lab.service", "--service", name, "--host", cfg.host, "--port", str(port),
            "--jwks-url", cfg.jwks_url, "--issuer", cfg.issuer, "--audience", cfg.audience,
            "--tenant-header", cfg.tenant_header, "--jwks-ttl", str(cfg.jwks_ttl),
            "--jwks-max-stale", str(cfg.jwks_max_stale), "--rate-limit", str(cfg.rate_limit),
            "--rate-burst", str(cfg.rate_burst), "--audit-file", str(cfg.state_path / "audit.jsonl"),
            "--cache-mode", cfg.cache_mode, "--tenant-cap", str(cfg.tenant_cap)]
    argv += ["--no-audit"] if cfg.no_audit else []
    argv += ["--fail-open"] if cfg.fail_open else []
    for hole in cfg.holes:
        argv += ["--hole", hole]
    for tenant in cfg.hole_tenants:
        argv += ["--hole-tenant", tenant]
    argv += ["--no-refetch-after-failure"] if cfg.no_refetch_after_failure else []
    argv += ["--audit-drop", cfg.audit_drop] if cfg.audit_drop else []
    argv += ["--inject-5xx", str(cfg.inject_5xx)] if cfg.inject_5xx else []
    argv += ["--" + knob.replace("_", "-") for knob in SERVICE_KNOBS if name in getattr(cfg, knob)]
    url = base_url(cfg.host, port)
    return Component(name, argv, [(cfg.host, port)], url=lab_envoy.service_url(cfg, name, url),
                     health=f"{url}/healthz", port=port, extra={"metrics": f"{url}/metrics"})


def _alertmanager(cfg: LabConfig) -> Component:
    url = base_url(cfg.host, cfg.alertmanager_port)
    home = cfg.state_path / "alertmanager"
    argv = [cfg.alertmanager_bin, f"--config.file={home / 'alertmanager.yml'}", f"--storage.path={home / 'data'}",
            f"--web.listen-address={cfg.host}:{cfg.alertmanager_port}", "--cluster.listen-address=",
            "--data.retention=24h"]
    return Component("alertmanager", argv, [(cfg.host, cfg.alertmanager_port)], url=url, health=f"{url}/-/ready",
                     port=cfg.alertmanager_port, extra={"metrics": f"{url}/metrics"})


def _prometheus(cfg: LabConfig) -> Component:
    url = base_url(cfg.host, cfg.prometheus_port)
    home = cfg.state_path / "prometheus"
    argv = [cfg.prometheus_bin, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
            "--storage.tsdb.retention.time=1d", f"--web.listen-address={cfg.host}:{cfg.prometheus_port}",
            # resend firing alerts every evaluation, not every minute: an alert that fired before Prometheus had
            # found the Alertmanager (dropped) reaches it one evaluation later
            f"--rules.alert.resend-delay={cfg.scrape_interval}s"]
    return Component("prometheus", argv, [(cfg.host, cfg.prometheus_port)], url=url, health=f"{url}/-/ready",
                     port=cfg.prometheus_port, extra={"metrics": f"{url}/metrics"})


def preflight(cfg: LabConfig, comps: list[Component]) -> None:
    """Everything checkable on this host before any process starts: binaries, duplicate and busy ports."""
    if not cfg.no_prometheus:
        missing = [b for b in (cfg.prometheus_bin, cfg.promtool_bin, cfg.alertmanager_bin) if not find_binary(b)]
        if missing:
            raise LabError(f"{', '.join(missing)} not found: {APT_HINT}")
    if cfg.egress == "envoy" and not find_binary(cfg.envoy_bin):
        raise LabError(f"{cfg.envoy_bin} not found (--egress envoy): {lab_envoy.ENVOY_HINT}")
    seen: dict[tuple[str, int], str] = {}
    for comp in comps:
        for bind in comp.binds:
            if bind in seen:
                raise LabError(f"{comp.name} and {seen[bind]} are both set to listen on {bind[0]}:{bind[1]}; "
                               f"give them different ports")
            seen[bind] = comp.name
    busy = [f"{comp.name} {h}:{p}" for comp in comps for h, p in comp.binds if not procs.port_free(h, p)]
    if busy:
        raise LabError(f"port already in use: {', '.join(busy)}. Stop what listens there (`ss -ltnp`), or choose "
                       f"other ports (`chaosext lab up --help` lists a flag for each); nothing was started")
