"""The run's settings: every setting chaosext reads, each parsed, defaulted and checked in one place.

Chaos Toolkit hands every activity the ``configuration`` mapping built from the experiment's ``configuration`` block
(env vars -> keys, see ``experiments/jwks-outage.json``). Keys are the env var names in lower case
(``OUTAGE_SECONDS`` -> ``outage_seconds``). Each field of :class:`ExperimentConfig` is one setting: its key, its
parser and its default are in the field's declaration (:func:`setting_field`), and :func:`load_config` reads them all
through the one resolver (``chaosext.core.settings``: the configuration, then the environment variable), then the
running lab's value where the setting has one (``lab=`` in the declaration; ``chaosext.core.labstate``), then the
default. An empty value means "the lab's value" (or the default).

``load_config`` never touches the network and runs once per experiment run: the safety control keeps the result in
the run record and every activity of the run reads it from there (``chaosext.run.context``). ``validate(cfg)`` returns
a list of problems, each a sentence that says what to do.
"""
from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from chaosext.core import labid, safefs, urls
from chaosext.core.errors import ConfigError
from chaosext.core.faulttarget import FaultTarget, parse_fault_target
from chaosext.core.labstate import default_state_dir, load_state
from chaosext.core.limits import MAX_OUTAGE_SECONDS, check_outage, deadline_seconds
from chaosext.core.names import FAULT_MODES, FAULT_VIAS, LAB_SERVICES, check_run_id
from chaosext.core.settings import Configuration, raw_setting, setting_origin
from chaosext.core.target import METRIC_SETTINGS, TOKEN_SETTINGS, MetricContract, TokenConfig

__all__ = [
    "ExperimentConfig",
    "load_config",
    "validate",
    "parse_routes",
    "lab_state",
    "is_loopback_url",
    "setting_field",
    "SETTINGS",
    "FAULT_VIAS",
    "FAULT_MODES",
    "LAB_DEFAULTS",
    "DEFAULT_TENANTS",
    "DEFAULT_ALERTS",
    "BACKEND_NAMES",
]


#: The lab's documented defaults (docs/architecture.md), used when no lab state is found.
LAB_DEFAULTS: dict[str, Any] = {
    "jwks_url": "http://127.0.0.2:8440/.well-known/jwks.json",
    "authority_url": "http://127.0.0.2:8440",
    "services": {"policy": "http://127.0.0.1:8451", "vuln": "http://127.0.0.1:8452",
                 "notify": "http://127.0.0.1:8453"},
    "prometheus_url": "http://127.0.0.1:9490",
    "alertmanager_url": "http://127.0.0.1:9493",
    "audit_file": ".chaosext-lab/audit.jsonl",
    "jwks_ttl": 300.0,
    "jwks_max_stale": 3600.0,
}
DEFAULT_TENANTS = tuple(f"t{i:02d}" for i in range(1, 13))
#: Alerts that fire when a JWKS cache expires and never otherwise (D1: 401s of an expired cache are no_keys errors of
#: real tenants; tenant_auth_failures_spike is the tenant's own client and stays silent on expiry).
DEFAULT_ALERTS = ("jwks_cache_miss_spike", "tenant_error_rate_gt_0_5pct")
#: the backends whose TLS settings (``<NAME>_CA_BUNDLE``, ``<NAME>_INSECURE``) are part of the run's settings
BACKEND_NAMES = ("prometheus", "alertmanager", "loki", "clickhouse")
logger = logging.getLogger("chaostoolkit")

#: a value straight from the resolver (configuration, environment, lab state or default), before parsing
Raw = Any
#: the lab state's values of the settings that have one (``lab=`` of :func:`setting_field`)
LabValues = dict[str, Any]


def setting_field(default: Any, *, key: str = "", parse: Callable[[str, Raw], Any] | None = None,
                  lab: Callable[[LabValues], Any] | None = None, doc: str = "") -> Any:
    """Declare one setting of :class:`ExperimentConfig`: its default, its configuration key (default: the field's
    name; the environment variable is the key in upper case), how to parse the raw value, and where the running lab
    holds its value."""
    factory = (lambda: type(default)(default)) if isinstance(default, (dict, list)) else None
    meta = {"key": key, "parse": parse, "lab": lab, "doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _int(key: str, value: Raw) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key.upper()}={value!r} is not a whole number; set it to e.g. 1") from None


def _float(key: str, value: Raw) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key.upper()}={value!r} is not a number; set it to e.g. 1.0") from None


def _str(key: str, value: Raw) -> str:
    return str(value).strip()


def _url(key: str, value: Raw) -> str:
    return str(value).strip().rstrip("/")


def _flag(key: str, value: Raw) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _list(key: str, value: Raw) -> tuple[str, ...]:
    return _parse_list(value)


def _statuses(key: str, value: Raw) -> tuple[int, ...]:
    return tuple(_int(key, s) for s in _parse_list(value))


def _services(key: str, value: Raw) -> dict[str, str]:
    return _parse_services(value)


def _routes(key: str, value: Raw) -> dict[str, tuple[tuple[str, str], ...]]:
    return parse_routes(value)


def _lab_services(lab: LabValues) -> str | None:
    comps = lab.get("components") or {}
    found = {n: c["url"].rstrip("/") for n, c in comps.items() if n in LAB_SERVICES and c.get("url")}
    return ",".join(f"{n}={u}" for n, u in found.items()) or None


def _lab_cfg(name: str) -> Callable[[LabValues], Any]:
    return lambda lab: (lab.get("config") or {}).get(name)


def _lab(name: str) -> Callable[[LabValues], Any]:
    return lambda lab: lab.get(name)


def _lab_audit(lab: LabValues) -> str | None:
    return f"file:{lab['audit_file']}" if lab.get("audit_file") else None


@dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of a run, resolved and typed (one field = one setting; docs/experiment.md has the table)."""

    # ---------------------------------------------------------------------------------------------- the fault
    outage_seconds: int = setting_field(300, parse=_int, doc="how long the JWKS is unreachable")
    #: OUTAGE_SECONDS may not exceed it; the fault's own deadline is the outage + its margin (``deadline_seconds``)
    max_outage_seconds: int = setting_field(MAX_OUTAGE_SECONDS, parse=_int)
    fault_via: str = setting_field("iptables", parse=_str)
    fault_target: str = setting_field("local", parse=_str)
    fault_mode: str = setting_field("drop", parse=_str)
    envoy_admin_url: str = setting_field("", parse=_url)
    kube_api_url: str = setting_field("", parse=_url)
    kube_context: str = setting_field("", parse=_str)
    #: targets a fleet fault applies to at once ('' = the driver's default)
    fault_parallelism: str = setting_field("", parse=_str)
    # ---------------------------------------------------------------------------------------------- the target
    jwks_url: str = setting_field(LAB_DEFAULTS["jwks_url"], parse=_str, lab=_lab("jwks_url"))
    authority_url: str = setting_field(LAB_DEFAULTS["authority_url"], parse=_url, lab=_lab("authority_url"))
    services: dict[str, str] = setting_field(dict(LAB_DEFAULTS["services"]), key="service_urls", parse=_services,
                                             lab=_lab_services)
    tenant_header: str = setting_field("X-StellaOps-Tenant", parse=_str)
    tenants: tuple[str, ...] = setting_field(DEFAULT_TENANTS, parse=_list)
    audience: str = setting_field("stellaops-api", parse=_str, lab=_lab_cfg("audience"))
    token: TokenConfig = setting_field(TokenConfig())
    metrics: MetricContract = setting_field(MetricContract())
    # ---------------------------------------------------------------------------------------------- observation
    prometheus_url: str = setting_field(LAB_DEFAULTS["prometheus_url"], parse=_url, lab=_lab("prometheus_url"))
    alertmanager_url: str = setting_field(LAB_DEFAULTS["alertmanager_url"], parse=_url,
                                          lab=_lab("alertmanager_url"))
    audit_source: str = setting_field("file:" + LAB_DEFAULTS["audit_file"], parse=_str, lab=_lab_audit)
    #: custom SQL for AUDIT_SOURCE=clickhouse:... ({since} and {until} are unix seconds)
    audit_sql: str = setting_field("", parse=_str)
    loki_tenant: str = setting_field("", parse=_str)
    clickhouse_database: str = setting_field("", parse=_str)
    #: per backend: the CA bundle of ``<NAME>_CA_BUNDLE`` ('' = the system's)
    backend_ca_bundles: dict[str, str] = setting_field({})
    #: backends whose TLS certificate is not verified (``<NAME>_INSECURE=true``; a lab with a self-signed one)
    backend_insecure: tuple[str, ...] = setting_field(())
    # ---------------------------------------------------------------------------------------------- judging
    k6_rate: int = setting_field(200, parse=_int)
    error_rate_max: float = setting_field(0.01, parse=_float)
    #: the abort guard restores early when the server-side error rate stays above this (> 1 disables it)
    abort_error_rate: float = setting_field(0.5, parse=_float)
    #: ... for this many consecutive seconds
    abort_after_seconds: int = setting_field(30, parse=_int)
    #: expected soft TTL / hard lifetime (max-stale) of the services' JWKS cache, seconds
    jwks_ttl: float = setting_field(LAB_DEFAULTS["jwks_ttl"], parse=_float, lab=_lab_cfg("jwks_ttl"))
    jwks_max_stale: float = setting_field(LAB_DEFAULTS["jwks_max_stale"], parse=_float, lab=_lab_cfg("jwks_max_stale"))
    #: alerts that must fire if and only if the cache expired
    expiry_alerts: tuple[str, ...] = setting_field(DEFAULT_ALERTS, parse=_list)
    #: seconds the alert probe waits for the expiry alerts to show up after the outage
    alert_wait_seconds: int = setting_field(45, parse=_int)
    #: seconds between progress lines / checks of the watch step
    watch_interval: float = setting_field(5.0, parse=_float)
    #: statuses that count as a service refusing a forged token (anything else but 2xx is inconclusive)
    refused_statuses: tuple[int, ...] = setting_field((401, 403), parse=_statuses)
    #: forgery classes switched off by name (shown as skipped in the verdict)
    forgery_skip: tuple[str, ...] = setting_field((), parse=_list)
    #: per service: the (method, path) routes forged tokens are sent to (default: the lab's read and write route)
    forgery_routes: dict[str, tuple[tuple[str, str], ...]] = setting_field({}, parse=_routes)
    #: forged requests in flight at once, and each one's timeout in seconds
    forgery_concurrency: int = setting_field(32, parse=_int)
    forgery_timeout: float = setting_field(5.0, parse=_float)
    #: live baseline before the fault: window (s) and the least requests it must hold
    baseline_seconds: int = setting_field(60, parse=_int)
    baseline_min_requests: int = setting_field(100, parse=_int)
    #: after the restore: how long the services may take to recover (s)
    recovery_seconds: int = setting_field(60, parse=_int)
    #: the dead-man switch lifts the fault this long after the run's heartbeat stops (s)
    heartbeat_grace: float = setting_field(10.0, parse=_float)
    # ---------------------------------------------------------------------------------------------- the run
    #: where run directories live (CHAOSEXT_RUN_DIR, else ``<lab state dir>/run``, else ``.chaosext-run``)
    run_base: str = setting_field(".chaosext-run", key="chaosext_run_dir", parse=_str,
                                  lab=lambda lab: str(Path(lab["state_dir"]) / "run") if lab.get("state_dir") else None)
    #: the experiment run's id (docs/architecture.md, "Runs"): set by the safety control, "" before it ran
    run_id: str = setting_field("", key="chaosext_run_id", parse=_str)
    lab_dir: str = setting_field(".chaosext-lab", key="chaosext_lab_dir", parse=_str)
    lab_running: bool = False
    approve: str = setting_field("", key="chaosext_approve", parse=_str)
    #: CHAOSEXT_ALLOW_HTTP: credentials may go over plain http to a target that is not the lab (docs/security.md)
    allow_http: bool = setting_field(False, key="chaosext_allow_http", parse=_flag)
    #: where the jku/x5u forgeries point (a URL of this machine the services reach), and where its listener binds
    forgery_key_url: str = setting_field("", parse=_url)
    forgery_key_listen: str = setting_field("", parse=_str)
    #: where each setting's value came from (configuration key -> configuration, env, lab or default), for
    #: messages such as doctor's
    origins: dict[str, str] = field(default_factory=dict, compare=False)

    # ---------------------------------------------------------------------------------------------- derived
    @property
    def run_dir(self) -> str:
        """This run's directory ``<run base>/<run id>`` ('' outside a run)."""
        return str(Path(self.run_base) / self.run_id) if self.run_id else ""

    @property
    def deadline_seconds(self) -> int:
        """The fault's own deadline: OUTAGE_SECONDS plus its safety margin (``chaosext.core.limits``)."""
        return deadline_seconds(self.outage_seconds)

    @cached_property
    def fault(self) -> FaultTarget:
        """FAULT_VIA / FAULT_TARGET parsed (``chaosext.core.faulttarget``); TargetError when they do not fit."""
        return parse_fault_target(self.fault_via, self.fault_target, self.envoy_admin_url)

    @property
    def audit_kind(self) -> str:
        """``file``, ``loki`` or ``clickhouse`` (the part of AUDIT_SOURCE before the first colon)."""
        return self.audit_source.split(":", 1)[0]

    @property
    def audit_location(self) -> str:
        """Path or URL of AUDIT_SOURCE (after the first colon)."""
        return self.audit_source.split(":", 1)[1] if ":" in self.audit_source else ""

    @property
    def is_lab_target(self) -> bool:
        """True when the running lab's state file names this very target (chaosext.core.labid: its URLs, its
        network namespace, its fault); an address on loopback alone is not the lab."""
        return labid.is_lab_target(self)

    @property
    def target_name(self) -> str:
        """The name CHAOSEXT_APPROVE must give to allow a non-lab target."""
        if self.fault_target != "local":
            return self.fault_target
        try:
            return urls.parse(self.jwks_url).host
        except urls.UrlError:
            return self.jwks_url

    # ---------------------------------------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        """Plain JSON of every setting (the run record keeps it; :meth:`from_json` reads it back). No secret."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able) of the resolved settings (routes as ``METHOD /path``, for people)."""
        d = self.to_json()
        d["forgery_routes"] = {k: [f"{m} {p}" for m, p in v] for k, v in self.forgery_routes.items()}
        return d

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ExperimentConfig:
        """The settings :meth:`to_json` wrote (unknown keys ignored, missing ones default)."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in doc:
                values[f.name] = _typed(hints[f.name], doc[f.name])
        return cls(**values)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _typed(hint: Any, value: Any) -> Any:
    """``value`` (JSON) as the type ``hint`` names: tuples from lists, dataclasses from objects."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        names = {f.name for f in dataclasses.fields(hint)}
        make: Any = hint
        return make(**{k: v for k, v in value.items() if k in names})
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if args else Any
        return tuple(_typed(inner, v) for v in value)
    if origin is dict and isinstance(value, Mapping):
        args = typing.get_args(hint)
        inner = args[1] if len(args) == 2 else Any
        return {str(k): _typed(inner, v) for k, v in value.items()}
    return value


def _default(f: dataclasses.Field[Any]) -> Any:
    factory: Any = f.default_factory
    return f.default if f.default is not dataclasses.MISSING else factory()


def _key(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("key") or f.name)


#: configuration key -> field of every plain setting (the sub-settings of ``metrics`` and ``token`` have their own)
SETTINGS: dict[str, str] = {_key(f): f.name for f in dataclasses.fields(ExperimentConfig) if f.metadata.get("parse")}


def load_config(configuration: Configuration = None) -> ExperimentConfig:
    """Resolve the Chaos Toolkit configuration (+ env vars, + lab state) into an ExperimentConfig.

    Raises ConfigError (a ValueError) with a clear message on values that cannot even be parsed (not a number, bad
    SERVICE_URLS, a malformed run id or metric name). Outside the lab CLI, the safety control calls it once per run.
    """
    lab_dir = str(raw_setting(configuration, "chaosext_lab_dir", default_state_dir()))
    state: LabValues = lab_state(lab_dir) or {}
    logger.debug("chaosext: resolving the run's settings (lab state %s)", "found" if state else "none")
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for f in dataclasses.fields(ExperimentConfig):
        parse = f.metadata.get("parse")
        if parse is None:
            continue
        default = _default(f)
        lab = f.metadata.get("lab")
        lab_value = lab(state) if lab is not None and state else None
        key = _key(f)
        raw = raw_setting(configuration, key, "")
        origin = setting_origin(configuration, key) if raw != "" else ""
        if raw == "" and lab_value is not None:
            raw, origin = lab_value, "lab"
        values[f.name] = default if raw == "" else parse(key, raw)
        origins[key] = origin or "default"
    # the defaults that depend on who runs chaosext: root's state is root-private (chaosext.core.safefs)
    if origins.get("chaosext_lab_dir") == "default":
        values["lab_dir"] = lab_dir
    if origins.get("chaosext_run_dir") == "default":
        values["run_base"] = safefs.default_dir(".chaosext-run", "run")
    values["lab_running"] = bool(state)
    values["origins"] = origins
    values["metrics"] = MetricContract.parse({name: str(raw_setting(configuration, key, getattr(MetricContract(),
                                                                                               name)))
                                              for name, key in METRIC_SETTINGS.items()})
    values["token"] = TokenConfig.parse({name: str(raw_setting(configuration, key, getattr(TokenConfig(), name)))
                                         for name, key in TOKEN_SETTINGS.items()})
    values["backend_ca_bundles"] = {n: str(raw_setting(configuration, f"{n}_ca_bundle", "")).strip()
                                    for n in BACKEND_NAMES if str(raw_setting(configuration, f"{n}_ca_bundle", ""))}
    values["backend_insecure"] = tuple(n for n in BACKEND_NAMES
                                       if _flag(n, raw_setting(configuration, f"{n}_insecure", "")))
    if values["run_id"]:
        check_run_id(values["run_id"])  # it names a directory: nothing else may reach the file system
    return ExperimentConfig(**values)


def lab_state(lab_dir: str) -> dict[str, Any] | None:
    """The running lab's state.json (``chaosext.core.labstate.load_state``), or None when there is no lab.

    Raises StateError (a ConfigError) when a state file exists but is broken; its message says how to fix it.
    """
    return load_state(lab_dir)


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is localhost or a loopback address (127.0.0.0/8, ::1). Loopback is not the lab
    (see ``ExperimentConfig.is_lab_target``)."""
    return urls.is_loopback(url)


def _parse_services(value: Any) -> dict[str, str]:
    """``policy=http://...,vuln=http://...`` (or a dict) -> {name: url}."""
    if isinstance(value, dict):
        return {str(k): str(v).rstrip("/") for k, v in value.items()}
    out: dict[str, str] = {}
    for part in str(value).split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise ConfigError(f"SERVICE_URLS entry {part!r} is not name=url (e.g. policy=http://127.0.0.1:8451)")
        if name.strip() in out:
            raise ConfigError(f"SERVICE_URLS names {name.strip()!r} twice; every service needs its own name")
        out[name.strip()] = url.strip().rstrip("/")
    return out


def _parse_list(value: Any) -> tuple[str, ...]:
    """Comma-separated string or list -> tuple of non-empty stripped strings; ``t01..t12`` expands ranges."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out: list[str] = []
    for item in (str(i).strip() for i in items):
        if ".." in item:  # t01..t12
            lo, hi = item.split("..", 1)
            prefix = lo.rstrip("0123456789")
            width = len(lo) - len(prefix)
            out.extend(f"{prefix}{n:0{width}d}" for n in range(int(lo[len(prefix):]), int(hi[len(prefix):]) + 1))
        elif item:
            out.append(item)
    return tuple(out)


def parse_routes(value: Any) -> dict[str, tuple[tuple[str, str], ...]]:
    """``FORGERY_ROUTES``: ``service=METHOD /path|METHOD /path;service2=...`` (or a dict of lists) -> routes.

    Raises ConfigError with an example when an entry cannot be read."""
    if not value:
        return {}
    example = "policy=GET /api/v1/policies|POST /api/v1/policies;vuln=GET /api/v1/findings|POST /api/v1/findings"
    if isinstance(value, dict):
        entries = {str(k): v if isinstance(v, (list, tuple)) else str(v).split("|") for k, v in value.items()}
    else:
        entries = {}
        for part in str(value).split(";"):
            if not part.strip():
                continue
            name, sep, rest = part.partition("=")
            if not sep or not name.strip():
                raise ConfigError(f"FORGERY_ROUTES entry {part!r} is not service=METHOD /path|...; e.g. {example}")
            entries[name.strip()] = rest.split("|")
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for name, routes in entries.items():
        parsed = []
        for r in routes:
            method, _, path = str(r).strip().partition(" ")
            if method.upper() not in ("GET", "POST", "PUT", "PATCH", "DELETE") or not path.strip().startswith("/"):
                raise ConfigError(f"FORGERY_ROUTES route {r!r} of {name} is not 'METHOD /path'; e.g. {example}")
            parsed.append((method.upper(), path.strip()))
        if not parsed:
            raise ConfigError(f"FORGERY_ROUTES gives {name} no route; e.g. {example}")
        out[name] = tuple(parsed)
    return out


def _check_url(name: str, url: str) -> str | None:
    # one parser decides and sends (chaosext.core.urls): no user info, backslash or parser disagreement
    return urls.problem(url, name) or None


def validate(cfg: ExperimentConfig) -> list[str]:
    """Problems with the configuration (no network), each a sentence saying what to fix. Empty list = fine."""
    problems: list[str] = []
    if cfg.outage_seconds <= 0:
        problems.append(f"OUTAGE_SECONDS={cfg.outage_seconds} must be a positive number of seconds (default 300)")
    else:
        try:
            check_outage(cfg.outage_seconds, cfg.max_outage_seconds)
        except ConfigError as exc:
            problems.append(str(exc))
    if cfg.baseline_seconds < 5:
        problems.append(f"BASELINE_SECONDS={cfg.baseline_seconds} is too short to judge a baseline; use 5 or more "
                        f"(default 60)")
    if cfg.baseline_min_requests < 1:
        problems.append(f"BASELINE_MIN_REQUESTS={cfg.baseline_min_requests} must be at least 1 (default 100)")
    if cfg.recovery_seconds < 1:
        problems.append(f"RECOVERY_SECONDS={cfg.recovery_seconds} must be at least 1 (default 60)")
    if cfg.heartbeat_grace < 4:
        problems.append(f"HEARTBEAT_GRACE={cfg.heartbeat_grace} must be at least 4 s (the heartbeat is renewed every "
                        f"2 s; default 10)")
    try:
        _ = cfg.fault  # FAULT_VIA and FAULT_TARGET, parsed by the one parser
    except ConfigError as exc:
        problems.append(str(exc))
    if cfg.fault_mode not in FAULT_MODES:
        problems.append(f"FAULT_MODE={cfg.fault_mode!r} is unknown; use one of {', '.join(FAULT_MODES)}")
    for name, url in (("JWKS_URL", cfg.jwks_url), ("AUTHORITY_URL", cfg.authority_url),
                      ("PROMETHEUS_URL", cfg.prometheus_url), ("ALERTMANAGER_URL", cfg.alertmanager_url)):
        if err := _check_url(name, url):
            problems.append(err)
    if not cfg.services:
        problems.append("SERVICE_URLS is empty; give name=url pairs, e.g. policy=http://127.0.0.1:8451")
    for svc, url in cfg.services.items():
        if err := _check_url(f"SERVICE_URLS[{svc}]", url):
            problems.append(err)
    if not cfg.tenant_header:
        problems.append("TENANT_HEADER is empty; the services read the tenant from it (default X-StellaOps-Tenant)")
    if len(cfg.tenants) < 1:
        problems.append("TENANTS is empty; give at least one tenant id (e.g. t01,t02,t03)")
    if not 0 < cfg.error_rate_max < 1:
        problems.append(f"ERROR_RATE_MAX={cfg.error_rate_max} must be a fraction between 0 and 1 (default 0.01)")
    if cfg.k6_rate <= 0:
        problems.append(f"K6_RATE={cfg.k6_rate} must be a positive number of requests per second")
    if cfg.abort_error_rate <= 0:
        problems.append(f"ABORT_ERROR_RATE={cfg.abort_error_rate} must be > 0 (a value above 1 disables the guard)")
    if cfg.jwks_max_stale < cfg.jwks_ttl:
        problems.append(f"JWKS_MAX_STALE={cfg.jwks_max_stale} is below JWKS_TTL={cfg.jwks_ttl}; max-stale is the "
                        f"hard lifetime and cannot be shorter than the soft TTL")
    kind = cfg.audit_kind
    if kind not in ("file", "loki", "clickhouse") or not cfg.audit_location:
        problems.append(f"AUDIT_SOURCE={cfg.audit_source!r} must be file:<path>, loki:<url> or clickhouse:<url>")
    elif kind in ("loki", "clickhouse") and (err := _check_url("AUDIT_SOURCE", cfg.audit_location)):
        problems.append(err)
    if not cfg.refused_statuses or any(200 <= s < 300 or not 100 <= s <= 599 for s in cfg.refused_statuses):
        problems.append(f"REFUSED_STATUSES={','.join(map(str, cfg.refused_statuses))} must list HTTP statuses "
                        f"outside 2xx that the services answer a bad token with (default 401,403)")
    if cfg.forgery_concurrency < 1:
        problems.append(f"FORGERY_CONCURRENCY={cfg.forgery_concurrency} must be >= 1 (default 32)")
    if cfg.forgery_timeout <= 0:
        problems.append(f"FORGERY_TIMEOUT={cfg.forgery_timeout} must be > 0 seconds (default 5)")
    for svc in sorted(set(cfg.forgery_routes) - set(cfg.services)):
        problems.append(f"FORGERY_ROUTES names service {svc!r}, which SERVICE_URLS does not; use one of "
                        f"{', '.join(cfg.services)}")
    if cfg.token.tokens_file and not Path(cfg.token.tokens_file).is_file():
        problems.append(f"TOKENS_FILE={cfg.token.tokens_file!r} does not exist; give a JSON file {{tenant: token}}")
    return problems
