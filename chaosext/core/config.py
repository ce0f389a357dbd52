"""The run's settings: every setting chaosext reads, each parsed, defaulted and checked in one place.

Chaos Toolkit hands every activity the ``configuration`` mapping built from the experiment's ``configuration`` block
(env vars -> keys, see ``experiments/jwks-outage.json``). Keys are the env var names in lower case
(``OUTAGE_SECONDS`` -> ``outage_seconds``). Each field of :class:`ExperimentConfig` is one setting: its key, its
parser and its default are in the field's declaration (:func:`setting_field`), and :func:`load_config` reads them all
through the one resolver (``chaosext.core.settings``: the configuration, then the environment variable), then the
target description (``TARGET_FILE``, ``chaosext.core.target``: what the target is; with none given, the running lab's
own description, which ``chaosext lab up`` writes), then the default. An empty value means "not set here".

``load_config`` never touches the network and runs once per experiment run: the safety control keeps the result in
the run record and every activity of the run reads it from there (``chaosext.run.context``). ``validate(cfg)`` returns
a list of problems, each a sentence that says what to do.
"""
from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from chaosext.core import labid, safefs, urls
from chaosext.core.errors import ConfigError
from chaosext.core.failures import (
    DEFAULT_ERROR_STATUS,
    DEFAULT_SLOW_SECONDS,
    MALFORMED_KINDS,
    UNREACHABLE,
    failure_problem,
)
from chaosext.core.faulttarget import FaultTarget, parse_fault_target
from chaosext.core.labstate import default_state_dir, load_state
from chaosext.core.limits import MAX_OUTAGE_SECONDS, check_outage, deadline_seconds, k6_rate_problem
from chaosext.core.names import FAULT_MODES, FAULT_VIAS, check_run_id
from chaosext.core.settings import Configuration, raw_setting, setting_origin
from chaosext.core.target import (
    METRIC_SETTINGS,
    TOKEN_SETTINGS,
    AuditMapping,
    MetricContract,
    Service,
    TargetDoc,
    TokenConfig,
    parse_route,
    read_target,
)

__all__ = [
    "ExperimentConfig",
    "load_config",
    "validate",
    "failure_problems",
    "parse_routes",
    "lab_state",
    "is_loopback_url",
    "setting_field",
    "SETTINGS",
    "FAULT_VIAS",
    "FAULT_MODES",
    "DEFAULT_TENANTS",
    "DEFAULT_ALERTS",
    "BACKEND_NAMES",
]


DEFAULT_TENANTS: tuple[str, ...] = ()
#: Alerts that fire when a JWKS cache expires and never otherwise (D1: 401s of an expired cache are no_keys errors of
#: real tenants; tenant_auth_failures_spike is the tenant's own client and stays silent on expiry).
DEFAULT_ALERTS = ("jwks_cache_miss_spike", "tenant_error_rate_gt_0_5pct")
#: the p95 latency SLO (seconds; the lab's read SLO) where a mode judges latency without LATENCY_SLO_SECONDS: the JWKS
#: answers slowly (JWKS_FAILURE=slow), and the promptness of the rotation scenario's refusals
DEFAULT_LATENCY_SLO_SECONDS = 0.3
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


def _alerts(key: str, value: Raw) -> tuple[str, ...]:
    """EXPIRY_ALERTS: alert names; ``none`` = no alert is judged (the same as ``expiry_alerts: []`` in TARGET_FILE)."""
    names = _parse_list(value)
    return () if [n.lower() for n in names] == ["none"] else names


def _statuses(key: str, value: Raw) -> tuple[int, ...]:
    return tuple(_int(key, s) for s in _parse_list(value))


def _header(key: str, value: Raw) -> str:
    """TENANT_HEADER: a header name; ``none`` = the tenant travels only in the token."""
    text = str(value).strip()
    return "" if text.lower() == "none" else text


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
    #: how the JWKS fails (docs/failure-modes.md; ``chaosext.core.failures``): unreachable (FAULT_MODE), slow,
    #: http-error, empty-keys, malformed, rotated, tls-untrusted, rotation-during-outage, cold-start-during-outage
    jwks_failure: str = setting_field(UNREACHABLE, parse=_str)
    #: slow: every JWKS answer delayed this long (seconds)
    jwks_slow_seconds: float = setting_field(float(DEFAULT_SLOW_SECONDS), parse=_float)
    #: http-error: the status the JWKS answers
    jwks_error_status: int = setting_field(DEFAULT_ERROR_STATUS, parse=_int)
    #: malformed: not-json (an HTML page served as 200) or truncated (JSON cut in the middle of a key)
    jwks_malformed: str = setting_field("not-json", parse=_str)
    #: rotation-during-outage: POST here makes the IdP sign with a new key (the lab's Authority /admin/rotate)
    rotate_url: str = setting_field("", parse=_url, lab=lambda lab: lab.get("rotate_url") or None)
    #: cold-start-during-outage: POST here restarts one instance of a service cold ({service_url} is filled in)
    cold_start_url: str = setting_field("", parse=_str, lab=lambda lab: lab.get("cold_start_url") or None)
    #: cold-start-during-outage: the services one instance of which starts cold ('' = the first service)
    cold_start_service: tuple[str, ...] = setting_field((), parse=_list)
    # ---------------------------------------------------------------------------------------------- the target
    #: the target description (docs/target.md); empty: the running lab's
    target_file: str = setting_field("", parse=_str)
    jwks_url: str = setting_field("", parse=_str)
    authority_url: str = setting_field("", parse=_url)
    #: the tenant services: the description's, with SERVICE_URLS / FORGERY_ROUTES over it
    services: dict[str, Service] = setting_field({})
    #: the header carrying the tenant ('' = none: the tenant travels only in the token)
    tenant_header: str = setting_field("", parse=_header)
    tenants: tuple[str, ...] = setting_field(DEFAULT_TENANTS, parse=_list)
    audience: str = setting_field("", parse=_str)
    token: TokenConfig = setting_field(TokenConfig())
    metrics: MetricContract = setting_field(MetricContract())
    # ---------------------------------------------------------------------------------------------- observation
    prometheus_url: str = setting_field("", parse=_url)
    alertmanager_url: str = setting_field("", parse=_url)
    audit_source: str = setting_field("", parse=_str)
    #: how to read the target's audit events (field and action names: the description's ``audit``)
    audit: AuditMapping = setting_field(AuditMapping())
    #: custom SQL for AUDIT_SOURCE=clickhouse:... ({since} and {until} are unix seconds)
    audit_sql: str = setting_field("", parse=_str)
    #: LogQL stream selector and pipeline for AUDIT_SOURCE=loki:... ({services} and {action} are filled in)
    audit_logql: str = setting_field("", parse=_str)
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
    jwks_ttl: float = setting_field(300.0, parse=_float)
    jwks_max_stale: float = setting_field(3600.0, parse=_float)
    #: alerts that must fire if and only if the cache expired
    expiry_alerts: tuple[str, ...] = setting_field(DEFAULT_ALERTS, parse=_alerts)
    #: seconds the alert probe waits for the expiry alerts to show up after the outage
    alert_wait_seconds: int = setting_field(45, parse=_int)
    #: p95 latency the services must keep during the outage (seconds). 0 = none declared: latency-within-slo is
    #: judged only where it is the mode's point (``slow``, at DEFAULT_LATENCY_SLO_SECONDS); see ``latency_slo``
    latency_slo_seconds: float = setting_field(0.0, parse=_float)
    #: seconds between progress lines / checks of the watch step
    watch_interval: float = setting_field(5.0, parse=_float)
    #: statuses that count as a service refusing a forged token (anything else but 2xx is inconclusive)
    refused_statuses: tuple[int, ...] = setting_field((401, 403), parse=_statuses)
    #: forgery classes switched off by name (shown as skipped in the verdict)
    forgery_skip: tuple[str, ...] = setting_field((), parse=_list)
    #: JSON {tenant: {class: token}} of IdP-signed tokens with one bad claim each, for the classes a real IdP will
    #: not sign on request (``chaosext.auth.idptokens``; mode 0600)
    forgery_tokens_file: str = setting_field("", parse=_str)
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
    def cold_started(self) -> tuple[str, ...]:
        """The services one instance of which cold-starts in ``cold-start-during-outage`` (COLD_START_SERVICE, else
        the first service); () in every other mode."""
        if self.jwks_failure != "cold-start-during-outage":
            return ()
        return self.cold_start_service or tuple(self.services)[:1]

    @property
    def latency_slo(self) -> float:
        """The p95 latency SLO the latency checks use: LATENCY_SLO_SECONDS, else DEFAULT_LATENCY_SLO_SECONDS."""
        return self.latency_slo_seconds or DEFAULT_LATENCY_SLO_SECONDS

    @property
    def latency_judged(self) -> bool:
        """Whether latency-within-slo is one of the outage checks: an SLO was declared (LATENCY_SLO_SECONDS), or the
        JWKS answers slowly (``slow``: latency is that mode's point). A JWKS library that fetches on the request
        path also stacks its timeout onto requests in the other modes (``unreachable`` with drop): declare the SLO
        to judge that too."""
        return self.latency_slo_seconds > 0 or self.jwks_failure == "slow"

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

    @property
    def service_urls(self) -> dict[str, str]:
        """name -> base URL of every service."""
        return {name: s.url for name, s in self.services.items()}

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able) of the resolved settings."""
        return self.to_json()

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
    """Plain JSON values: dataclasses as objects, tuples as lists, at any depth."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _typed(hint: Any, value: Any) -> Any:
    """``value`` (JSON) as the type ``hint`` names: tuples from lists, dataclasses (nested) from objects."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _typed(options[0], value) if options else value
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        hints = typing.get_type_hints(hint)
        make: Any = hint
        return make(**{f.name: _typed(hints[f.name], value[f.name]) for f in dataclasses.fields(hint)
                       if f.name in value and f.init})
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        item: Any = args[0] if args else Any
        return tuple(_typed(item, v) for v in value)
    if origin is dict and isinstance(value, Mapping):
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        return {str(k): _typed(item, v) for k, v in value.items()}
    return value


def _default(f: dataclasses.Field[Any]) -> Any:
    factory: Any = f.default_factory
    return f.default if f.default is not dataclasses.MISSING else factory()


def _key(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("key") or f.name)


#: configuration key -> field of every plain setting (the sub-settings of ``metrics`` and ``token`` have their own)
SETTINGS: dict[str, str] = {_key(f): f.name for f in dataclasses.fields(ExperimentConfig) if f.metadata.get("parse")}


#: a setting's value that says "explicitly nothing" where an empty value would mean "not set" (TOKEN_TENANT_PARAM,
#: METRIC_TENANT_LABEL, TENANT_HEADER, METRIC_UNVERIFIED_ACCEPTS take it)
NONE_WORDS = ("none", "off")


def _from_target(configuration: Configuration, key: str, doc: TargetDoc, origin: str) -> tuple[Any, str]:
    """(raw value, origin) of setting ``key``: the configuration / environment, else the target description (where a
    present empty value counts: the description says "none"), else ('', '')."""
    raw = raw_setting(configuration, key, "")
    if raw != "":
        return raw, setting_origin(configuration, key)
    if key in doc.settings:
        return doc.settings[key], origin
    return "", ""


def _services(configuration: Configuration, doc: TargetDoc) -> dict[str, Service]:
    """The description's services; SERVICE_URLS names the services to drive (the description's routes and signals
    for the names it knows, a bare service for a new name), FORGERY_ROUTES sets where forged tokens go."""
    services = dict(doc.services)
    urls = raw_setting(configuration, "service_urls", "")
    if urls != "":
        given = _parse_services(urls)
        services = {name: dataclasses.replace(services[name], url=url) if name in services else Service(name, url)
                    for name, url in given.items()}
    routes = raw_setting(configuration, "forgery_routes", "")
    for name, pairs in parse_routes(routes).items() if routes != "" else ():
        if name not in services:
            raise ConfigError(f"FORGERY_ROUTES names service {name!r}, which the target does not have; use one of "
                              f"{', '.join(services) or '(no service described)'}")
        services[name] = dataclasses.replace(services[name], forgery=tuple(
            parse_route(f"{m} {p}", f"FORGERY_ROUTES[{name}]") for m, p in pairs))
    return services


def load_config(configuration: Configuration = None) -> ExperimentConfig:
    """Resolve the Chaos Toolkit configuration (+ env vars, + the target description, + lab state) into an
    ExperimentConfig.

    Raises ConfigError (a ValueError) with a clear message on values that cannot even be parsed (not a number, bad
    SERVICE_URLS, a target description that does not read, a malformed run id or metric name). The safety control
    calls it once per run.
    """
    lab_dir = str(raw_setting(configuration, "chaosext_lab_dir", default_state_dir()))
    state: LabValues = lab_state(lab_dir) or {}
    given_file = str(raw_setting(configuration, "target_file", ""))
    target_file = given_file or str(state.get("target_file") or "")
    doc = read_target(target_file) if target_file else TargetDoc()
    doc_origin = "target file" if given_file else "lab"
    logger.debug("chaosext: resolving the run's settings (target %s)", target_file or "none")
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for f in dataclasses.fields(ExperimentConfig):
        parse = f.metadata.get("parse")
        if parse is None:
            continue
        key = _key(f)
        raw, origin = _from_target(configuration, key, doc, doc_origin)
        lab = f.metadata.get("lab")
        if raw == "" and lab is not None and state and (lab_value := lab(state)) is not None:
            raw, origin = lab_value, "lab"
        values[f.name] = _default(f) if raw == "" and origin == "" else parse(key, raw)
        origins[key] = origin or "default"
    # the defaults that depend on who runs chaosext: root's state is root-private (chaosext.core.safefs)
    if origins.get("chaosext_lab_dir") == "default":
        values["lab_dir"] = lab_dir
    if origins.get("chaosext_run_dir") == "default":
        values["run_base"] = safefs.default_dir(".chaosext-run", "run")
    values["target_file"] = target_file
    values["lab_running"] = bool(state)
    values["origins"] = origins

    def sub_settings(names: dict[str, str], defaults: Any) -> dict[str, str]:
        out = {}
        for name, key in names.items():
            raw, origin = _from_target(configuration, key, doc, doc_origin)
            out[name] = str(getattr(defaults, name) if raw == "" and origin == "" else raw)
            origins[key] = origin or "default"
        return out

    values["metrics"] = MetricContract.parse(sub_settings(METRIC_SETTINGS, MetricContract()))
    token = sub_settings(TOKEN_SETTINGS, TokenConfig())
    if token["tenant_param"].strip().lower() in NONE_WORDS:
        token["tenant_param"] = ""
    values["token"] = TokenConfig.parse(token)
    values["services"] = _services(configuration, doc)
    if doc.audit is not None:
        values["audit"] = doc.audit
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
    """``orders=http://...,billing=http://...`` (or a dict) -> {name: url}."""
    if isinstance(value, dict):
        return {str(k): str(v).rstrip("/") for k, v in value.items()}
    out: dict[str, str] = {}
    for part in str(value).split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise ConfigError(f"SERVICE_URLS entry {part!r} is not name=url (e.g. orders=http://10.0.0.5:8080)")
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
    example = "orders=GET /v2/orders|POST /v2/orders;billing=GET /invoices|POST /invoices"
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


def failure_problems(cfg: ExperimentConfig) -> list[str]:
    """JWKS_FAILURE and its parameters: a mode the driver can make against this target, parameters in range, what a
    scenario needs (no network)."""
    problem = failure_problem(cfg.jwks_failure, cfg.fault_via, cfg.fault_target, cfg.jwks_url)
    if problem:
        return [problem]
    problems = []
    mode = cfg.jwks_failure
    if mode == "slow" and cfg.jwks_slow_seconds <= 0:
        problems.append(f"JWKS_SLOW_SECONDS={cfg.jwks_slow_seconds:g} must be > 0 (default {DEFAULT_SLOW_SECONDS})")
    if mode == "slow" and cfg.jwks_slow_seconds >= cfg.outage_seconds:
        problems.append(f"JWKS_SLOW_SECONDS={cfg.jwks_slow_seconds:g} is not shorter than OUTAGE_SECONDS="
                        f"{cfg.outage_seconds}: no delayed answer would arrive during the outage")
    if mode == "http-error" and not 400 <= cfg.jwks_error_status <= 599:
        problems.append(f"JWKS_ERROR_STATUS={cfg.jwks_error_status} must be an HTTP error status 400-599 (default "
                        f"{DEFAULT_ERROR_STATUS})")
    if mode == "malformed" and cfg.jwks_malformed not in MALFORMED_KINDS:
        problems.append(f"JWKS_MALFORMED={cfg.jwks_malformed!r}: use one of {', '.join(MALFORMED_KINDS)}")
    if mode == "rotation-during-outage" and (err := _check_url("ROTATE_URL", cfg.rotate_url)):
        problems.append(f"{err} (rotation-during-outage: the URL a POST to makes the IdP sign with a new key; the "
                        f"lab gives its own)")
    if mode == "cold-start-during-outage":
        if not cfg.cold_start_url or ("{service_url}" not in cfg.cold_start_url and \
                _check_url("COLD_START_URL", cfg.cold_start_url)):
            problems.append(f"COLD_START_URL={cfg.cold_start_url!r}: give the URL a POST to restarts one instance "
                            f"of a service cold (may hold {{service_url}}; the lab gives its own)")
        unknown = [s for s in cfg.cold_start_service if cfg.services and s not in cfg.services]
        if unknown:
            problems.append(f"COLD_START_SERVICE names {', '.join(unknown)}, which the target does not have; use "
                            f"{', '.join(cfg.services)}")
    if cfg.latency_slo_seconds < 0:
        problems.append(f"LATENCY_SLO_SECONDS={cfg.latency_slo_seconds:g} must be > 0 (or unset: latency is then "
                        f"judged in JWKS_FAILURE=slow only, at {DEFAULT_LATENCY_SLO_SECONDS:g} s)")
    return problems


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
    problems += failure_problems(cfg)
    for name, url in (("JWKS_URL", cfg.jwks_url), ("AUTHORITY_URL", cfg.authority_url),
                      ("PROMETHEUS_URL", cfg.prometheus_url), ("ALERTMANAGER_URL", cfg.alertmanager_url)):
        if err := _check_url(name, url):
            problems.append(err)
    if not cfg.services:
        problems.append("no service to drive: describe the target's services in TARGET_FILE (docs/target.md), or "
                        "start the lab (chaosext lab up)")
    for name, svc in cfg.services.items():
        if err := _check_url(f"SERVICE_URLS[{name}]", svc.url):
            problems.append(err)
        if not svc.routes:
            problems.append(f"service {name} has no routes: describe what to drive in TARGET_FILE's "
                            f"services.{name}.routes (docs/target.md)")
        elif svc.probe_route is None:
            problems.append(f"service {name} has no read route for the valid-token probe: add a GET route or "
                            f"services.{name}.probe in TARGET_FILE")
    if len(cfg.tenants) < 1:
        problems.append("TENANTS is empty; give at least one tenant id (e.g. t01,t02,t03), or tenants in TARGET_FILE")
    if not 0 < cfg.error_rate_max < 1:
        problems.append(f"ERROR_RATE_MAX={cfg.error_rate_max} must be a fraction between 0 and 1 (default 0.01)")
    if rate := k6_rate_problem(cfg.k6_rate):
        problems.append(rate)
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
    if cfg.token.tokens_file and not Path(cfg.token.tokens_file).is_file():
        problems.append(f"TOKENS_FILE={cfg.token.tokens_file!r} does not exist; give a JSON file {{tenant: token}}")
    return problems
