"""The metric contract: every series chaosext reads from Prometheus, as named settings with the lab's names as defaults.

A service that exports other names (e.g. Spring Boot's ``http_server_requests_seconds_count{status,application}``)
is judged by overriding these settings (configuration ``--var`` or environment; docs/experiment.md, "Adapting to your
services' metrics"):

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

``METRIC_UNVERIFIED_ACCEPTS`` is read in one place, :func:`chaosext.core.config.unverified_accepts_selector` (the
forgery backstop's ``ExperimentConfig.unverified_accepts_selector`` is the same value); its old name
``UNVERIFIED_ACCEPTS_SELECTOR`` is still accepted there, with a deprecation warning.

Errors follow D1: status matches ``METRIC_ERROR_STATUS`` and the tenant is neither ``__unauthenticated__`` (the
client's own token failed) nor chaosext's forged-probe tenant. Without a tenant label 401s cannot be attributed:
set ``METRIC_ERROR_STATUS=5..`` then. The safety control resolves the contract once per run (:func:`register`);
elsewhere (the ``chaosext`` CLI) it comes from the environment.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, fields
from typing import Any

from chaosext.core.config import DEFAULT_UNVERIFIED_ACCEPTS, unverified_accepts_selector
from chaosext.core.errors import ConfigError
from chaosext.core.names import UNAUTHENTICATED_TENANT
from chaosext.core.settings import setting

__all__ = ["MetricContract", "ContractError", "resolve", "register", "current", "reset", "SETTINGS"]

PROBE_TENANT = "chaosext-probe"  # the same values as chaosext.metrics.prom (which imports this module)
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
    tenant_label: str = "tenant"
    service_label: str = "service"
    cache_expired: str = 'jwks_cache_state{state="expired"}'
    cache_stale: str = 'jwks_cache_state{state="stale"}'
    cache_lookups: str = "jwks_cache_lookups_total"
    #: "" when METRIC_UNVERIFIED_ACCEPTS=off
    unverified_accepts: str = DEFAULT_UNVERIFIED_ACCEPTS

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


SETTINGS = {f.name: "metric_" + f.name for f in fields(MetricContract)}
_REGISTERED: list[MetricContract] = []
_LOCK = threading.Lock()


def resolve(configuration: dict[str, Any] | None = None) -> MetricContract:
    """The contract from the configuration, else the environment, else the defaults; ContractError when invalid."""
    d = MetricContract()
    values = {name: setting(configuration, key, getattr(d, name)).strip() for name, key in SETTINGS.items()
              if name != "unverified_accepts"}
    values["unverified_accepts"] = unverified_accepts_selector(configuration)  # "" = off
    if values["tenant_label"] == "none":  # a request counter without a tenant label
        values["tenant_label"] = ""
    c = MetricContract(**values)
    problems = []
    if not _METRIC_RE.match(c.requests):
        problems.append(f"METRIC_REQUESTS={c.requests!r} is not a metric name "
                        f"(e.g. http_server_requests_seconds_count)")
    for name in ("status_label", "service_label") + (("tenant_label",) if c.tenant_label else ()):
        if not _LABEL_RE.match(getattr(c, name)):
            problems.append(f"{SETTINGS[name].upper()}={getattr(c, name)!r} is not a label name (e.g. status)")
    for name in ("cache_expired", "cache_stale", "cache_lookups", "unverified_accepts"):
        if name == "unverified_accepts" and not c.unverified_accepts:
            continue  # METRIC_UNVERIFIED_ACCEPTS=off
        if not _SELECTOR_RE.match(getattr(c, name).replace(" ", "")):
            problems.append(f"{SETTINGS[name].upper()}={getattr(c, name)!r} is not a series selector "
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


def register(configuration: dict[str, Any] | None) -> MetricContract:
    """Resolve the contract once for this run (the safety control, before the fault)."""
    c = resolve(configuration)
    with _LOCK:
        _REGISTERED[:] = [c]
    return c


def current() -> MetricContract:
    """The registered contract, else the one from the environment."""
    with _LOCK:
        if _REGISTERED:
            return _REGISTERED[0]
    return resolve(None)


def reset() -> None:
    """Forget the registered contract (tests; a new run in the same process)."""
    with _LOCK:
        _REGISTERED.clear()
