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
``METRIC_CACHE_EXPIRED``       ``jwks_cache_state{state="expired"}``            1 while a service's key cache is
                                                                                expired (failing closed)
``METRIC_CACHE_STALE``         ``jwks_cache_state{state="stale"}``              1 while it serves stale keys
``METRIC_CACHE_LOOKUPS``       ``jwks_cache_lookups_total``                     key lookups (label ``result``)
``METRIC_UNVERIFIED_ACCEPTS``  ``jwt_validations_total{result="valid",``        tokens accepted without a verified
                               ``key_source="none"}``                           signature (fail-open; ``off``: the
                                                                                backstop is switched off)
=============================  ===============================================  ====================================

Errors follow D1: status matches ``METRIC_ERROR_STATUS`` and the tenant is neither ``__unauthenticated__`` (the
client's own token failed) nor chaosext's forged-probe tenant. Without a tenant label 401s cannot be attributed:
set ``METRIC_ERROR_STATUS=5..`` then.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from chaosext.core.errors import ConfigError
from chaosext.core.names import UNAUTHENTICATED_TENANT

__all__ = ["MetricContract", "ContractError", "TokenConfig", "PROBE_TENANT", "DEFAULT_UNVERIFIED_ACCEPTS",
           "AUTH_METHODS", "METRIC_SETTINGS", "TOKEN_SETTINGS"]

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
    cache_expired: str = 'jwks_cache_state{state="expired"}'
    cache_stale: str = 'jwks_cache_state{state="stale"}'
    cache_lookups: str = "jwks_cache_lookups_total"
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
        c = cls(**values)
        problems = []
        if not _METRIC_RE.match(c.requests):
            problems.append(f"METRIC_REQUESTS={c.requests!r} is not a metric name "
                            f"(e.g. http_server_requests_seconds_count)")
        for name in ("status_label", "service_label") + (("tenant_label",) if c.tenant_label else ()):
            if not _LABEL_RE.match(getattr(c, name)):
                problems.append(f"{METRIC_SETTINGS[name].upper()}={getattr(c, name)!r} is not a label name "
                                f"(e.g. status)")
        for name in ("cache_expired", "cache_stale", "cache_lookups", "unverified_accepts"):
            if name == "unverified_accepts" and not c.unverified_accepts:
                continue  # METRIC_UNVERIFIED_ACCEPTS=off
            if not _SELECTOR_RE.match(getattr(c, name).replace(" ", "")):
                problems.append(f"{METRIC_SETTINGS[name].upper()}={getattr(c, name)!r} is not a series selector "
                                f"(metric{{label=\"value\"}}, e.g. jwks_cache_state{{state=\"expired\"}})")
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
