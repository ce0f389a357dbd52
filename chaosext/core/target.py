"""How chaosext reads the target's own signals: its metric names (the metric contract) and its token settings.

Both are parts of the run's settings (:class:`chaosext.core.config.ExperimentConfig` ``.metrics`` and ``.token``),
parsed and checked once by ``load_config``; the defaults are what the embedded lab exports and needs.

The metric contract: every series chaosext reads from Prometheus. A service that exports other names (e.g. Spring
Boot's ``http_server_requests_seconds_count{status,application}``) is judged by overriding these settings
(docs/experiment.md, "Adapting to your services' metrics"):

=============================  ===============================================  ====================================
setting                        default                                          what it is
=============================  ===============================================  ====================================
``METRIC_REQUESTS``            ``tenant_requests_total``                        request counter
``METRIC_REQUESTS_MATCHERS``   (empty)                                          extra label matchers, e.g.
                                                                                ``job="api",uri!~"/actuator.*"``
``METRIC_STATUS_LABEL``        ``status``                                       its HTTP status label
``METRIC_ERROR_STATUS``        ``5..|401``                                      statuses that are errors (regex, D1)
``METRIC_TENANT_LABEL``        ``tenant``                                       its tenant label (``none``: none)
``METRIC_SERVICE_LABEL``       ``service``                                      label naming the service, on every
                                                                                series below
``METRIC_CACHE_FRESH``         ``jwks_cache_state{state="fresh"}``              1 while a service's key cache is
                                                                                fresh (a positive signal: no series
                                                                                is "unknown", never "fresh")
``METRIC_CACHE_EXPIRED``       ``jwks_cache_state{state="expired"}``            1 while it is expired (failing
                                                                                closed)
``METRIC_CACHE_STALE``         ``jwks_cache_state{state="stale"}``              1 while it serves stale keys
``METRIC_CACHE_EMPTY``         ``jwks_cache_state{state="empty"}``              1 while it holds no key at all (a
                                                                                cold start)
``METRIC_CACHE_LOOKUPS``       ``jwks_cache_lookups_total``                     key lookups (label ``result``)
``METRIC_LATENCY_HISTOGRAM``   ``tenant_request_duration_seconds``              request-duration histogram (base
                                                                                name, without ``_bucket``)
``METRIC_UNVERIFIED_ACCEPTS``  ``jwt_validations_total{result="valid",``        tokens accepted without a verified
                               ``key_source="none"}``                           signature (fail-open; ``off``: the
                                                                                backstop is switched off)
=============================  ===============================================  ====================================

The ``METRIC_CACHE_*`` settings may be any PromQL expression whose series carry the service label (e.g.
``max by (app) (keys_cached) == 0``). A service the target description gives a cache signal of its own
(``services.<name>.cache``) is read through that instead.

Errors follow D1: status matches ``METRIC_ERROR_STATUS`` and the tenant is neither ``__unauthenticated__`` (the
client's own token failed) nor chaosext's forged-probe tenant. Without a tenant label 401s cannot be attributed:
set ``METRIC_ERROR_STATUS=5..`` then.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from chaosext.core.errors import ConfigError
from chaosext.core.names import UNAUTHENTICATED_TENANT

__all__ = ["MetricContract", "ContractError", "TokenConfig", "PROBE_TENANT", "DEFAULT_UNVERIFIED_ACCEPTS",
           "AUTH_METHODS", "METRIC_SETTINGS", "TOKEN_SETTINGS", "READ_METHODS", "METHODS", "CACHE_STATES",
           "AUDIT_ROLES", "AUDIT_FIELDS", "TargetError", "Route", "CacheSignal", "Service", "AuditMapping", "TargetDoc",
           "parse_route", "parse_cache", "parse_services", "parse_audit_mapping", "read_target"]

#: Tenant (header and claim) of chaosext's own forged-token requests in older services, excluded from every error rate
PROBE_TENANT = "chaosext-probe"
#: the lab's counter of tokens accepted without a verified signature (METRIC_UNVERIFIED_ACCEPTS' default)
DEFAULT_UNVERIFIED_ACCEPTS = 'jwt_validations_total{result="valid",key_source="none"}'
#: OAuth2 client authentication methods (RFC 6749 §2.3.1)
AUTH_METHODS = ("client_secret_basic", "client_secret_post")

_METRIC_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SELECTOR_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^{}]*\})?$")


class ContractError(ConfigError):
    """A metric setting is not a valid name/selector; the message names the setting and shows a valid value."""


@dataclass(frozen=True)
class MetricContract:
    """The series names and labels the probes read (defaults: what the lab's services export)."""

    requests: str = "tenant_requests_total"
    requests_matchers: str = ""
    status_label: str = "status"
    error_status: str = "5..|401"
    #: '' when the counter has no tenant label (METRIC_TENANT_LABEL=none)
    tenant_label: str = "tenant"
    service_label: str = "service"
    cache_fresh: str = 'jwks_cache_state{state="fresh"}'
    cache_stale: str = 'jwks_cache_state{state="stale"}'
    cache_expired: str = 'jwks_cache_state{state="expired"}'
    cache_empty: str = 'jwks_cache_state{state="empty"}'
    cache_lookups: str = "jwks_cache_lookups_total"
    #: the services' request-duration histogram (base name, without ``_bucket``): the report's latency plot, the rules
    #: ('' when METRIC_LATENCY_HISTOGRAM=off: the target has none)
    latency_histogram: str = "tenant_request_duration_seconds"
    #: '' when METRIC_UNVERIFIED_ACCEPTS=off
    unverified_accepts: str = DEFAULT_UNVERIFIED_ACCEPTS

    @property
    def is_lab(self) -> bool:
        """True when every name is the lab's (the lab's richer ``jwks_cache_state{state}`` gauge can be read)."""
        return self == MetricContract()

    def requests_selector(self, *matchers: str) -> str:
        """The request counter with ``matchers``, the run's exclusions and METRIC_REQUESTS_MATCHERS."""
        parts = [m for m in matchers if m]
        if self.tenant_label:
            parts.append(f'{self.tenant_label}!~"{PROBE_TENANT}|{UNAUTHENTICATED_TENANT}"')
        if self.requests_matchers:
            parts.append(self.requests_matchers)
        return f"{self.requests}{{{','.join(parts)}}}"

    def error_selector(self) -> str:
        """Requests that are errors (D1)."""
        return self.requests_selector(f'{self.status_label}=~"{self.error_status}"')

    def total_selector(self) -> str:
        """Every request the error rate is a share of (same tenant exclusions as the errors)."""
        return self.requests_selector()

    def by_service(self, selector: str, fn: str = "max") -> str:
        """``fn by (<service label>) (selector)``."""
        return f"{fn} by ({self.service_label}) ({selector})"

    def service_of(self, sample: dict[str, Any]) -> str:
        """The service a result sample belongs to ('?' when the label is missing)."""
        return str((sample.get("metric") or {}).get(self.service_label, "?"))

    @classmethod
    def parse(cls, values: dict[str, str]) -> MetricContract:
        """The contract from raw setting values (field name -> text); ContractError naming every bad setting."""
        values = {k: v.strip() for k, v in values.items()}
        if values.get("tenant_label") == "none":  # a request counter without a tenant label
            values["tenant_label"] = ""
        if values.get("unverified_accepts") == "off":
            values["unverified_accepts"] = ""
        if values.get("latency_histogram") in ("off", "none"):
            values["latency_histogram"] = ""
        c = cls(**values)
        problems = []
        if not _METRIC_RE.match(c.requests):
            problems.append(f"METRIC_REQUESTS={c.requests!r} is not a metric name "
                            f"(e.g. http_server_requests_seconds_count)")
        if c.latency_histogram and not _METRIC_RE.match(c.latency_histogram):
            problems.append(f"METRIC_LATENCY_HISTOGRAM={c.latency_histogram!r} is not a metric name (the histogram's "
                            f"base name, e.g. http_request_duration_seconds)")
        for name in ("status_label", "service_label") + (("tenant_label",) if c.tenant_label else ()):
            if not _LABEL_RE.match(getattr(c, name)):
                problems.append(f"{METRIC_SETTINGS[name].upper()}={getattr(c, name)!r} is not a label name "
                                f"(e.g. status)")
        for name in ("cache_lookups", "unverified_accepts"):
            if name == "unverified_accepts" and not c.unverified_accepts:
                continue  # METRIC_UNVERIFIED_ACCEPTS=off
            if not _SELECTOR_RE.match(getattr(c, name).replace(" ", "")):
                problems.append(f"{METRIC_SETTINGS[name].upper()}={getattr(c, name)!r} is not a series selector "
                                f"(metric{{label=\"value\"}}, e.g. jwt_validations_total{{result=\"valid\"}})")
        for name in ("cache_fresh", "cache_stale", "cache_expired", "cache_empty"):
            expr = getattr(c, name)
            if not expr or expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                problems.append(f"{METRIC_SETTINGS[name].upper()}={expr!r} is not a PromQL expression whose series "
                                f"carry the service label (e.g. jwks_cache_state{{state=\"expired\"}})")
        if c.requests_matchers and ("{" in c.requests_matchers or "}" in c.requests_matchers):
            problems.append(f"METRIC_REQUESTS_MATCHERS={c.requests_matchers!r}: give matchers without braces, e.g. "
                            f'job="api"')
        try:
            re.compile(c.error_status)
        except re.error:
            problems.append(f"METRIC_ERROR_STATUS={c.error_status!r} is not a regular expression (e.g. 5..|401)")
        if problems:
            raise ContractError("; ".join(problems))
        return c


@dataclass(frozen=True)
class TokenConfig:
    """How chaosext gets a tenant's access token from the IdP (``chaosext.core.tokens``); the client credentials are
    secrets and never part of it."""

    #: skip OIDC discovery and use this token endpoint
    endpoint: str = ""
    auth_method: str = "client_secret_basic"
    #: form parameter naming the tenant ('' = none)
    tenant_param: str = "tenant"
    scope: str = ""
    audience: str = ""
    audience_param: str = "audience"
    #: another API this IdP issues the test client tokens for (sent as ``audience_param``): the ``wrong-aud``
    #: forgery is a real token for it ('' = not tried)
    other_audience: str = ""
    #: JSON file {tenant: token} for IdPs a client cannot ask
    tokens_file: str = field(default="")

    @classmethod
    def parse(cls, values: dict[str, str]) -> TokenConfig:
        """From raw setting values (field name -> text); ConfigError when the method is unknown."""
        t = cls(**{k: v.strip() for k, v in values.items()})
        if t.auth_method not in AUTH_METHODS:
            raise ConfigError(f"TOKEN_AUTH_METHOD={t.auth_method!r} is unknown; use {' or '.join(AUTH_METHODS)}")
        return t


#: MetricContract field -> its setting (configuration key)
METRIC_SETTINGS = {f.name: "metric_" + f.name for f in fields(MetricContract)}
#: TokenConfig field -> its setting
TOKEN_SETTINGS = {f.name: "tokens_file" if f.name == "tokens_file" else "token_" + f.name
                  for f in fields(TokenConfig)}


# ================================================================================================ the target file
#: HTTP methods a route may use; GET and HEAD are reads, the others writes
READ_METHODS = ("GET", "HEAD")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: the states a service's JWKS cache can be in (what a cache signal maps the target's words to)
CACHE_STATES = ("fresh", "stale", "expired", "empty")
#: what chaosext looks for in the audit trail (the target names each in ``audit.actions``)
AUDIT_ROLES = ("degraded", "recovered", "expired", "rejected")
#: the fields of one audit event chaosext reads (the target names each in ``audit.fields``)
AUDIT_FIELDS = ("time", "service", "action", "tenant")


class TargetError(ConfigError):
    """The target description cannot be used; the message names the key (``services.orders.routes[1].method``) and
    shows what to give."""


@dataclass(frozen=True)
class Route:
    """One HTTP route of a service: what k6 drives (``weight``: share within the service) and what the probes call."""

    method: str
    path: str
    body: str = ""
    weight: int = 1
    #: ``read`` or ``write`` (default: GET/HEAD are reads)
    kind: str = ""

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", "read" if self.method in READ_METHODS else "write")

    @property
    def text(self) -> str:
        """``METHOD /path``."""
        return f"{self.method} {self.path}"

    @property
    def templated(self) -> bool:
        """True when the path holds a placeholder (``{id}``: k6 fills in a number; the probes skip such routes)."""
        return "{" in self.path


@dataclass(frozen=True)
class CacheSignal:
    """How to read one service's JWKS cache state: ``prometheus`` (a PromQL expression per state, >= 1 while in it),
    ``http`` (a JSON endpoint's field, the target's words per state) or ``none`` (no signal: a gap, never "fresh")."""

    kind: str = "none"
    #: prometheus: state -> PromQL
    queries: dict[str, str] = field(default_factory=dict)
    #: http: the JSON document, the dotted path of the state, of the age in seconds (optional), words per state
    url: str = ""
    state_field: str = ""
    age_field: str = ""
    words: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def state_of(self, word: Any) -> str:
        """Our state for the target's word (``unknown`` when it names none)."""
        for state, words in self.words.items():
            if str(word) in words:
                return state
        return "unknown"


@dataclass(frozen=True)
class Service:
    """One tenant service of the target."""

    name: str
    url: str
    routes: tuple[Route, ...] = ()
    #: the valid-token probe's route (None: the first read route)
    probe: Route | None = None
    #: the routes forged tokens are sent to (empty: the first read and the first write route)
    forgery: tuple[Route, ...] = ()
    cache: CacheSignal = field(default_factory=CacheSignal)
    ready_url: str = ""

    @property
    def probe_route(self) -> Route | None:
        """The route a valid token is checked on: ``probe``, else the first read route without a placeholder (None
        when the service has none)."""
        return self.probe or next((r for r in self.routes if r.kind == "read" and not r.templated), None)

    @property
    def forgery_routes(self) -> tuple[Route, ...]:
        """The routes forged tokens go to: ``forgery``, else the first read and the first write route without a
        placeholder."""
        if self.forgery:
            return self.forgery
        plain = [r for r in self.routes if not r.templated]
        reads = [r for r in plain if r.kind == "read"][:1]
        writes = [r for r in plain if r.kind == "write"][:1]
        return tuple(reads + writes)


@dataclass(frozen=True)
class AuditMapping:
    """How to read the target's audit events: field names (dotted paths into one JSON event) and the target's action
    names for what chaosext looks for ('' = not mapped: a gap)."""

    fields: dict[str, str] = field(default_factory=lambda: {"time": "timestamp", "service": "service",
                                                            "action": "action", "tenant": "tenant"})
    actions: dict[str, str] = field(default_factory=lambda: {"degraded": "auth.degraded", "recovered": "auth.recovered",
                                                             "expired": "auth.expired", "rejected": "auth.rejected"})

    def action(self, role: str) -> str:
        """The target's name of ``role`` (degraded, recovered, expired, rejected); '' when not mapped."""
        return self.actions.get(role, "")


@dataclass(frozen=True)
class TargetDoc:
    """A target description file, read and checked: the plain settings it gives (by configuration key, as raw
    values the settings' own parsers read), the services and the audit mapping."""

    path: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    audit: AuditMapping | None = None


#: the description's sections and keys (a key not listed is refused: a typo must not be ignored)
_SCHEMA: dict[str, Any] = {
    "version": None,
    "identity_provider": {"authority_url": "authority_url", "jwks_url": "jwks_url", "audience": "audience",
                          "token": {"endpoint": "token_endpoint", "auth_method": "token_auth_method",
                                    "tenant_param": "token_tenant_param", "audience_param": "token_audience_param",
                                    "other_audience": "token_other_audience", "scope": "token_scope",
                                    "tokens_file": "tokens_file"},
                          "jwks_cache": {"ttl_seconds": "jwks_ttl", "max_stale_seconds": "jwks_max_stale"}},
    "tenants": "tenants",
    "tenant_header": "tenant_header",
    "services": None,
    "prometheus": {"url": "prometheus_url", "metrics": {name: key for name, key in METRIC_SETTINGS.items()}},
    "alertmanager": {"url": "alertmanager_url"},
    "expiry_alerts": "expiry_alerts",
    "audit": {"source": "audit_source", "fields": None, "actions": None, "logql": "audit_logql", "sql": "audit_sql"},
    "forgery": {"refused_statuses": "refused_statuses", "skip": "forgery_skip", "tokens_file": "forgery_tokens_file"},
}
_SERVICE_KEYS = ("url", "routes", "probe", "forgery_routes", "cache", "ready")
_ROUTE_KEYS = ("method", "path", "body", "weight", "kind")


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _flatten(doc: Any, schema: dict[str, Any], path: str, out: dict[str, Any]) -> None:
    if not isinstance(doc, dict):
        raise TargetError(f"{path or 'the target description'} must be a mapping of "
                          f"{', '.join(k for k in schema)}")
    for key, value in doc.items():
        if key not in schema:
            raise TargetError(f"{_where(path, key)} is not a key of the target description; use one of "
                              f"{', '.join(schema)} (docs/target.md)")
        spec = schema[key]
        if isinstance(spec, dict):
            _flatten(value, spec, _where(path, key), out)
        elif isinstance(spec, str):
            if isinstance(value, dict):
                raise TargetError(f"{_where(path, key)} must be a value, not a mapping")
            out[spec] = ",".join(map(str, value)) if isinstance(value, list) else ("" if value is None else value)


def parse_route(text_or_map: Any, where: str) -> Route:
    """A route from ``METHOD /path`` or ``{method, path, body, weight, kind}``; TargetError naming ``where``."""
    if isinstance(text_or_map, str):
        method, _, path = text_or_map.strip().partition(" ")
        raw: dict[str, Any] = {"method": method, "path": path.strip()}
    elif isinstance(text_or_map, dict):
        raw = dict(text_or_map)
        unknown = sorted(set(raw) - set(_ROUTE_KEYS))
        if unknown:
            raise TargetError(f"{where}: unknown key(s) {', '.join(unknown)}; a route has {', '.join(_ROUTE_KEYS)}")
    else:
        raise TargetError(f"{where} must be 'METHOD /path' or a mapping with method and path")
    method = str(raw.get("method", "")).upper()
    path = str(raw.get("path", ""))
    if method not in METHODS or not path.startswith("/"):
        raise TargetError(f"{where}: {method or '(no method)'} {path or '(no path)'} is not a route; give e.g. "
                          f"GET /v2/orders (methods: {', '.join(METHODS)})")
    body = raw.get("body", "")
    if isinstance(body, (dict, list)):
        body = json.dumps(body, separators=(",", ":"))
    weight = raw.get("weight", 1)
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
        raise TargetError(f"{where}.weight={weight!r} must be a whole number >= 0")
    kind = str(raw.get("kind", ""))
    if kind not in ("", "read", "write"):
        raise TargetError(f"{where}.kind={kind!r} must be read or write")
    return Route(method, path, str(body or ""), weight, kind)


def parse_cache(doc: Any, where: str) -> CacheSignal:
    """A service's cache signal (``prometheus: {state: PromQL}`` or ``http: {url, field, age_field, states}``)."""
    if doc is None:
        return CacheSignal()
    if not isinstance(doc, dict) or len(doc) != 1 or next(iter(doc)) not in ("prometheus", "http"):
        raise TargetError(f"{where} must be one of {{prometheus: {{fresh: PromQL, stale: ..., expired: ...}}}} or "
                          f"{{http: {{url, field, states}}}}")
    kind, spec = next(iter(doc.items()))
    if not isinstance(spec, dict):
        raise TargetError(f"{where}.{kind} must be a mapping")
    if kind == "prometheus":
        bad = sorted(set(spec) - set(CACHE_STATES))
        if bad or not spec:
            raise TargetError(f"{where}.prometheus: give a PromQL expression per state of {', '.join(CACHE_STATES)}"
                              + (f" ({', '.join(bad)} is none)" if bad else ""))
        return CacheSignal("prometheus", queries={str(k): str(v) for k, v in spec.items()})
    bad = sorted(set(spec) - {"url", "field", "age_field", "states"})
    if bad:
        raise TargetError(f"{where}.http: unknown key(s) {', '.join(bad)}; give url, field, age_field, states")
    states = spec.get("states") or {}
    if not isinstance(states, dict) or set(states) - set(CACHE_STATES) or not states:
        raise TargetError(f"{where}.http.states must map {', '.join(CACHE_STATES)} to the words the service uses")
    if not str(spec.get("url", "")).startswith(("http://", "https://")) or not spec.get("field"):
        raise TargetError(f"{where}.http needs url (http(s)) and field (a dotted path into its JSON)")
    words = {str(k): tuple(map(str, v if isinstance(v, list) else [v])) for k, v in states.items()}
    return CacheSignal("http", url=str(spec["url"]), state_field=str(spec["field"]),
                       age_field=str(spec.get("age_field") or ""), words=words)


def parse_services(doc: Any, where: str = "services") -> dict[str, Service]:
    """The ``services`` section: name -> :class:`Service`."""
    if not isinstance(doc, dict) or not doc:
        raise TargetError(f"{where} must name at least one service: {{<name>: {{url, routes, ...}}}}")
    out: dict[str, Service] = {}
    for name, spec in doc.items():
        here = f"{where}.{name}"
        if not isinstance(spec, dict):
            raise TargetError(f"{here} must be a mapping with url and routes")
        bad = sorted(set(spec) - set(_SERVICE_KEYS))
        if bad:
            raise TargetError(f"{here}: unknown key(s) {', '.join(bad)}; a service has {', '.join(_SERVICE_KEYS)}")
        url = str(spec.get("url", "")).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise TargetError(f"{here}.url={url!r} must be the service's http(s) base URL")
        routes = tuple(parse_route(r, f"{here}.routes[{i}]") for i, r in enumerate(spec.get("routes") or []))
        probe = parse_route(spec["probe"], f"{here}.probe") if spec.get("probe") else None
        forgery = tuple(parse_route(r, f"{here}.forgery_routes[{i}]")
                        for i, r in enumerate(spec.get("forgery_routes") or []))
        ready = str(spec.get("ready") or "")
        out[str(name)] = Service(str(name), url, routes, probe, forgery, parse_cache(spec.get("cache"),
                                                                                        f"{here}.cache"), ready)
    return out


def parse_audit_mapping(doc: Any) -> AuditMapping:
    """``audit.fields`` / ``audit.actions`` over the defaults (chaosext's audit convention)."""
    base = AuditMapping()
    fields_ = dict(base.fields)
    actions = dict(base.actions)
    for name, given, allowed, target in (("audit.fields", doc.get("fields"), AUDIT_FIELDS, fields_),
                                         ("audit.actions", doc.get("actions"), AUDIT_ROLES, actions)):
        if given is None:
            continue
        if not isinstance(given, dict) or set(given) - set(allowed):
            raise TargetError(f"{name} must map {', '.join(allowed)} to the target's names")
        target.update({str(k): "" if v is None else str(v) for k, v in given.items()})
    return AuditMapping(fields_, actions)


def read_target(path: str) -> TargetDoc:
    """Read and check the target description at ``path`` (YAML or JSON); TargetError saying what to fix."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetError(f"TARGET_FILE={path}: cannot read it ({exc.strerror or exc}); give the path of the target "
                          f"description (docs/target.md)") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TargetError(f"TARGET_FILE={path} is not YAML/JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise TargetError(f"TARGET_FILE={path} must hold a mapping (version, identity_provider, services, ...)")
    if doc.get("version", 1) != 1:
        raise TargetError(f"TARGET_FILE={path}: version {doc.get('version')!r} is not understood; this chaosext reads "
                          f"version 1")
    settings: dict[str, Any] = {}
    try:
        _flatten(doc, _SCHEMA, "", settings)
        services = parse_services(doc["services"]) if "services" in doc else {}
        audit = parse_audit_mapping(doc["audit"]) if isinstance(doc.get("audit"), dict) else None
    except TargetError as exc:
        raise TargetError(f"TARGET_FILE={path}: {exc}") from None
    return TargetDoc(str(path), settings, services, audit)
