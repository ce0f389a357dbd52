"""The experiment's configuration: parse, fill defaults from the running lab, validate.

Chaos Toolkit hands every activity the ``configuration`` mapping built from the experiment's ``configuration`` block
(env vars -> keys, see ``experiments/jwks-outage.json``). Keys are the env var names in lower case
(``OUTAGE_SECONDS`` -> ``outage_seconds``). An empty value means "the lab's value": read from the lab state
(``chaosext.core.labstate.load_state``) when a lab is running, else the documented lab default (docs/architecture.md).

``load_config(configuration)`` never touches the network; ``validate(cfg)`` returns a list of problems, each a
sentence that says what to do. The network checks (Prometheus up, k6 installed ...) are ``chaosext.safety.preflight``.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chaosext.core import labid, safefs, urls
from chaosext.core.errors import ConfigError
from chaosext.core.ids import RUN_ID_RE
from chaosext.core.labstate import default_state_dir, load_state
from chaosext.core.limits import MAX_OUTAGE_SECONDS, check_deadline
from chaosext.core.names import FAULT_MODES, FAULT_VIAS, LAB_SERVICES
from chaosext.core.settings import Configuration, raw_setting, setting

__all__ = [
    "ExperimentConfig",
    "load_config",
    "validate",
    "parse_routes",
    "lab_state",
    "is_loopback_url",
    "unverified_accepts_selector",
    "DEFAULT_UNVERIFIED_ACCEPTS",
    "FAULT_VIAS",
    "FAULT_MODES",
    "LAB_DEFAULTS",
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
#: the lab's counter of tokens accepted without a verified signature (METRIC_UNVERIFIED_ACCEPTS' default)
DEFAULT_UNVERIFIED_ACCEPTS = 'jwt_validations_total{result="valid",key_source="none"}'
logger = logging.getLogger("chaostoolkit")
_WARNED: set[str] = set()


def unverified_accepts_selector(configuration: Configuration) -> str:
    """METRIC_UNVERIFIED_ACCEPTS, the one place this setting is read (the metric contract and the forgery backstop
    both use this): the selector of requests the services accepted without a verified key; "" when ``off``.

    The old name UNVERIFIED_ACCEPTS_SELECTOR is still read when the new one is unset, with a deprecation warning."""
    value = setting(configuration, "metric_unverified_accepts").strip()
    if not value:
        value = setting(configuration, "unverified_accepts_selector").strip()
        if value and "unverified_accepts_selector" not in _WARNED:
            _WARNED.add("unverified_accepts_selector")
            logger.warning("UNVERIFIED_ACCEPTS_SELECTOR is deprecated and will be removed: rename it "
                           "METRIC_UNVERIFIED_ACCEPTS (configuration key metric_unverified_accepts), same value; "
                           "`off` still switches the metric backstop off")
    value = value or DEFAULT_UNVERIFIED_ACCEPTS
    return "" if value == "off" else value


@dataclass(frozen=True)
class ExperimentConfig:
    """Every setting the probes, the watch step and the safety control use (resolved, typed)."""

    outage_seconds: int = 300
    fault_via: str = "iptables"
    fault_target: str = "local"
    fault_mode: str = "drop"
    jwks_url: str = LAB_DEFAULTS["jwks_url"]
    authority_url: str = LAB_DEFAULTS["authority_url"]
    services: dict[str, str] = field(default_factory=lambda: dict(LAB_DEFAULTS["services"]))
    tenant_header: str = "X-StellaOps-Tenant"
    tenants: tuple[str, ...] = DEFAULT_TENANTS
    prometheus_url: str = LAB_DEFAULTS["prometheus_url"]
    alertmanager_url: str = LAB_DEFAULTS["alertmanager_url"]
    audit_source: str = "file:" + LAB_DEFAULTS["audit_file"]
    k6_rate: int = 200
    error_rate_max: float = 0.01
    #: the abort guard restores early when the server-side error rate stays above this (> 1 disables it)
    abort_error_rate: float = 0.5
    #: ... for this many consecutive seconds
    abort_after_seconds: int = 30
    #: expected soft TTL / hard lifetime (max-stale) of the services' JWKS cache, seconds
    jwks_ttl: float = LAB_DEFAULTS["jwks_ttl"]
    jwks_max_stale: float = LAB_DEFAULTS["jwks_max_stale"]
    #: alerts that must fire if and only if the cache expired
    expiry_alerts: tuple[str, ...] = DEFAULT_ALERTS
    #: seconds the alert probe waits for the expiry alerts to show up after the outage
    alert_wait_seconds: int = 45
    audience: str = "stellaops-api"
    #: optional JSON file {tenant: token} for real systems (tokens are otherwise requested from the lab authority)
    tokens_file: str = ""
    #: custom SQL for AUDIT_SOURCE=clickhouse:... ({since} and {until} are unix seconds)
    audit_sql: str = ""
    #: seconds between progress lines / checks of the watch step
    watch_interval: float = 5.0
    #: statuses that count as a service refusing a forged token (anything else but 2xx is inconclusive)
    refused_statuses: tuple[int, ...] = (401, 403)
    #: forgery classes switched off by name (shown as skipped in the verdict)
    forgery_skip: tuple[str, ...] = ()
    #: per service: the (method, path) routes forged tokens are sent to (default: the lab's read and write route)
    forgery_routes: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    #: forged requests in flight at once, and each one's timeout in seconds
    forgery_concurrency: int = 32
    forgery_timeout: float = 5.0
    #: Prometheus selector of requests a service accepted WITHOUT a verified key (the no-fail-open metric backstop):
    #: the metric contract's METRIC_UNVERIFIED_ACCEPTS (:func:`unverified_accepts_selector`); "" when ``off``
    unverified_accepts_selector: str = DEFAULT_UNVERIFIED_ACCEPTS
    #: this run's directory: ``<run base>/<run id>`` once the safety control started a run, else the run base
    run_dir: str = ".chaosext-run"
    #: where run directories live (CHAOSEXT_RUN_DIR, else ``<lab state dir>/run``, else ``.chaosext-run``)
    run_base: str = ".chaosext-run"
    #: the experiment run's id (D2 in docs/architecture.md): set by the safety control, "" before it ran
    run_id: str = ""
    #: live baseline before the fault: window (s) and the least requests it must hold
    baseline_seconds: int = 60
    baseline_min_requests: int = 100
    #: after the restore: how long the services may take to recover (s)
    recovery_seconds: int = 60
    #: cap on the fault's whole lifetime (outage + deadline margin), seconds
    max_outage_seconds: int = MAX_OUTAGE_SECONDS
    #: the dead-man switch lifts the fault this long after the run's heartbeat stops (s)
    heartbeat_grace: float = 10.0
    lab_dir: str = ".chaosext-lab"
    lab_running: bool = False
    approve: str = ""

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

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able) of the resolved settings."""
        d = asdict(self)
        d["tenants"] = list(self.tenants)
        d["expiry_alerts"] = list(self.expiry_alerts)
        d["refused_statuses"] = list(self.refused_statuses)
        d["forgery_skip"] = list(self.forgery_skip)
        d["forgery_routes"] = {k: [f"{m} {p}" for m, p in v] for k, v in self.forgery_routes.items()}
        return d


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


def _number(key: str, value: Any, kind: type) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key.upper()}={value!r} is not a number; set it to e.g. {kind(1)}") from None


def load_config(configuration: dict[str, Any] | None = None) -> ExperimentConfig:
    """Resolve the Chaos Toolkit configuration (+ env vars, + lab state) into an ExperimentConfig.

    Raises ConfigError (a ValueError) with a clear message on values that cannot even be parsed (not a number, bad
    SERVICE_URLS).
    """
    lab_dir = str(raw_setting(configuration, "chaosext_lab_dir", default_state_dir()))
    state = lab_state(lab_dir) or {}
    comps = state.get("components") or {}
    lab_cfg = state.get("config") or {}
    lab_services = {n: c["url"].rstrip("/") for n, c in comps.items() if n in LAB_SERVICES and c.get("url")}
    audit_file = state.get("audit_file") or LAB_DEFAULTS["audit_file"]

    def pick(key: str, default: Any) -> Any:
        return raw_setting(configuration, key, default)

    run_base = str(pick("chaosext_run_dir", str(Path(lab_dir) / "run") if state
                        else safefs.default_dir(".chaosext-run", "run")))
    run_id = str(raw_setting(configuration, "chaosext_run_id"))
    if run_id and not RUN_ID_RE.fullmatch(run_id):
        raise ConfigError(f"chaosext_run_id={run_id!r} is not a chaosext run id (8 lower-case hex digits)")
    run_dir = str(Path(run_base) / run_id) if run_id else run_base
    defaults = ExperimentConfig()
    return ExperimentConfig(
        outage_seconds=_number("outage_seconds", pick("outage_seconds", 300), int),
        fault_via=str(pick("fault_via", "iptables")),
        fault_target=str(pick("fault_target", "local")),
        fault_mode=str(pick("fault_mode", "drop")),
        jwks_url=str(pick("jwks_url", state.get("jwks_url") or LAB_DEFAULTS["jwks_url"])),
        authority_url=str(pick("authority_url", state.get("authority_url")
                               or LAB_DEFAULTS["authority_url"])).rstrip("/"),
        services=_parse_services(pick("service_urls", lab_services or LAB_DEFAULTS["services"])),
        tenant_header=str(pick("tenant_header", "X-StellaOps-Tenant")),
        tenants=_parse_list(pick("tenants", ",".join(DEFAULT_TENANTS))),
        prometheus_url=str(pick("prometheus_url", state.get("prometheus_url")
                                or LAB_DEFAULTS["prometheus_url"])).rstrip("/"),
        alertmanager_url=str(pick("alertmanager_url", state.get("alertmanager_url")
                                  or LAB_DEFAULTS["alertmanager_url"])).rstrip("/"),
        audit_source=str(pick("audit_source", "file:" + audit_file)),
        k6_rate=_number("k6_rate", pick("k6_rate", defaults.k6_rate), int),
        error_rate_max=_number("error_rate_max", pick("error_rate_max", 0.01), float),
        abort_error_rate=_number("abort_error_rate", pick("abort_error_rate", defaults.abort_error_rate), float),
        abort_after_seconds=_number("abort_after_seconds", pick("abort_after_seconds", defaults.abort_after_seconds),
                                    int),
        jwks_ttl=_number("jwks_ttl", pick("jwks_ttl", lab_cfg.get("jwks_ttl", LAB_DEFAULTS["jwks_ttl"])), float),
        jwks_max_stale=_number("jwks_max_stale", pick("jwks_max_stale", lab_cfg.get("jwks_max_stale",
                                                                               LAB_DEFAULTS["jwks_max_stale"])), float),
        expiry_alerts=_parse_list(pick("expiry_alerts", ",".join(DEFAULT_ALERTS))),
        alert_wait_seconds=_number("alert_wait_seconds", pick("alert_wait_seconds", defaults.alert_wait_seconds), int),
        audience=str(pick("audience", lab_cfg.get("audience", "stellaops-api"))),
        tokens_file=str(pick("tokens_file", "")),
        audit_sql=str(pick("audit_sql", "")),
        watch_interval=_number("watch_interval", pick("watch_interval", defaults.watch_interval), float),
        refused_statuses=tuple(_number("refused_statuses", s, int) for s in _parse_list(
            pick("refused_statuses", "401,403"))),
        forgery_skip=_parse_list(pick("forgery_skip", "")),
        forgery_routes=parse_routes(pick("forgery_routes", "")),
        forgery_concurrency=_number("forgery_concurrency", pick("forgery_concurrency", defaults.forgery_concurrency),
                                    int),
        forgery_timeout=_number("forgery_timeout", pick("forgery_timeout", defaults.forgery_timeout), float),
        unverified_accepts_selector=unverified_accepts_selector(configuration),
        run_dir=run_dir,
        run_base=run_base,
        run_id=run_id,
        baseline_seconds=_number("baseline_seconds", pick("baseline_seconds", defaults.baseline_seconds), int),
        baseline_min_requests=_number("baseline_min_requests",
                                      pick("baseline_min_requests", defaults.baseline_min_requests), int),
        recovery_seconds=_number("recovery_seconds", pick("recovery_seconds", defaults.recovery_seconds), int),
        max_outage_seconds=_number("max_outage_seconds", pick("max_outage_seconds", defaults.max_outage_seconds),
                                   int),
        heartbeat_grace=_number("heartbeat_grace", pick("heartbeat_grace", defaults.heartbeat_grace), float),
        lab_dir=lab_dir,
        lab_running=bool(state),
        approve=str(pick("chaosext_approve", "")),
    )


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
            check_deadline(cfg.outage_seconds, cfg.max_outage_seconds)
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
    if cfg.fault_via not in FAULT_VIAS:
        problems.append(f"FAULT_VIA={cfg.fault_via!r} is unknown; use one of {', '.join(FAULT_VIAS)}")
    if cfg.fault_mode not in FAULT_MODES:
        problems.append(f"FAULT_MODE={cfg.fault_mode!r} is unknown; use one of {', '.join(FAULT_MODES)}")
    if not cfg.fault_target:
        problems.append("FAULT_TARGET is empty; use 'local' for this host or name the target (e.g. netns:<name>)")
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
    if cfg.tokens_file and not Path(cfg.tokens_file).is_file():
        problems.append(f"TOKENS_FILE={cfg.tokens_file!r} does not exist; give a JSON file {{tenant: token}}")
    return problems
