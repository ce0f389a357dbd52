"""Credentials and TLS settings of the backends chaosext reads: Prometheus, Alertmanager, Loki, ClickHouse.

One table (docs/experiment.md, "Authenticated backends"). For backend ``<b>`` in prometheus, alertmanager, loki:

=========================  ===================================================================================
``<b>_bearer_token``       secret: ``Authorization: Bearer ...``
``<b>_username/_password`` secrets: HTTP Basic
``<b>_headers``            secret: JSON object of extra headers (e.g. ``{"X-Scope-OrgID": "team-a"}``)
``<B>_CA_BUNDLE``          setting: PEM file of the CA that signed the backend's certificate
``<B>_INSECURE``           setting: ``true`` skips TLS verification (a lab with a self-signed certificate only)
``LOKI_TENANT``            setting: Loki's tenant, sent as ``X-Scope-OrgID``
``clickhouse_user/_password``  secrets: ClickHouse HTTP interface user (``X-ClickHouse-User``/``-Key``)
``CLICKHOUSE_DATABASE``    setting: the database (``X-ClickHouse-Database``)
=========================  ===================================================================================

Secrets are read from the activity's ``secrets`` (scope ``chaosext``) or else the environment variable of the same
name in upper case; the TLS settings are part of the run's settings (``ExperimentConfig``). Like
chaostoolkit-kubernetes' clients, a :class:`Backend` is built for each activity from the secrets Chaos Toolkit hands
it (``backend(name, url, cfg, secrets)``, or ``RunContext.backend``) and nothing is kept between activities. Nothing
here is ever logged.

Credentials never leave for another origin: every request goes through ``chaosext.core.urls.SameOriginSession``,
which follows a redirect only within the backend's own scheme, host and port (a 307 to another host gets nothing:
no Authorization, no ``X-ClickHouse-Key``, no custom header, no body). A backend that is given credentials must be
https unless it is the running lab's or ``CHAOSEXT_ALLOW_HTTP`` is true (``chaosext.core.urls.check_transport``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import requests

from chaosext.core import labid, urls
from chaosext.core.config import BACKEND_NAMES, ExperimentConfig
from chaosext.core.errors import ChaosextError
from chaosext.core.settings import Secrets, secret_value

__all__ = ["BACKENDS", "BackendAuth", "BackendError", "Backend", "auth_for", "backend"]

BACKENDS = BACKEND_NAMES


class BackendError(ChaosextError, requests.RequestException):
    """A backend refused or failed a request; the message says which backend and what to set."""


@dataclass(frozen=True)
class BackendAuth:
    """How to talk to one backend: headers (incl. auth), HTTP Basic, TLS verification (secrets kept out of repr)."""

    name: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    basic: tuple[str, str] | None = field(default=None, repr=False)
    verify: bool | str = True
    #: ClickHouse only: the database holding the audit table (CLICKHOUSE_DATABASE; '' = the collector's default)
    database: str = ""
    #: CHAOSEXT_ALLOW_HTTP: credentials may go over plain http outside the lab
    allow_http: bool = False
    #: the lab state directory (a lab's own backend may be plain http: chaosext.core.labid)
    lab_dir: str = ""

    @property
    def has_credentials(self) -> bool:
        """True when requests carry a header or HTTP Basic credentials."""
        return bool(self.headers or self.basic)

    @property
    def described(self) -> str:
        """What credentials are in use, without their values (for messages)."""
        kinds = []
        if "Authorization" in self.headers:
            kinds.append("bearer token")
        if self.basic:
            kinds.append("basic auth")
        other = sorted(h for h in self.headers if h != "Authorization")
        if other:
            kinds.append("headers " + ",".join(other))
        return " + ".join(kinds) or "no credentials"

    def session(self) -> requests.Session:
        """A requests Session carrying these settings that never follows a redirect to another origin."""
        s = urls.session()
        s.headers.update(self.headers)
        s.auth = self.basic
        s.verify = self.verify
        return s

    def session_for(self, url: str) -> requests.Session:
        """:meth:`session`, after checking that ``url`` may get these credentials (BackendError otherwise): parsed by
        the one URL parser, and https unless it is the running lab's or CHAOSEXT_ALLOW_HTTP is true."""
        try:
            if self.has_credentials:
                http = urls.parse(url, f"{self.name} URL").scheme == "http"
                lab = http and labid.is_lab_url(url, labid.running_lab(self.lab_dir or None))
                urls.check_transport(url, f"{self.name} URL", lab, self.allow_http)
            else:
                urls.parse(url, f"{self.name} URL")
        except (urls.UrlError, ValueError) as exc:
            raise BackendError(str(exc)) from None
        return self.session()


def _headers(name: str, secrets: Secrets) -> dict[str, str]:
    raw = secret_value(secrets, f"{name}_headers")
    if raw in (None, ""):
        return {}
    try:
        doc = json.loads(raw) if isinstance(raw, str) else raw
        return {str(k): str(v) for k, v in dict(doc).items()}
    except (ValueError, TypeError):
        raise BackendError(f"{name}_headers must be a JSON object of header names to values, e.g. "
                           f'{{"X-Scope-OrgID": "team-a"}}') from None


def auth_for(name: str, cfg: ExperimentConfig, secrets: Secrets = None) -> BackendAuth:
    """Credentials of backend ``name``: secrets from ``secrets`` (else the environment), TLS from ``cfg``."""
    headers = _headers(name, secrets)
    basic = None
    database = ""
    if name == "clickhouse":
        user, password = secret_value(secrets, "clickhouse_user"), secret_value(secrets, "clickhouse_password")
        if user:
            headers["X-ClickHouse-User"] = str(user)
        if password:
            headers["X-ClickHouse-Key"] = str(password)
        if database := cfg.clickhouse_database:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", database):
                raise BackendError(f"CLICKHOUSE_DATABASE={database!r} is not a database name (letters, digits, _)")
            headers["X-ClickHouse-Database"] = database  # the default database of AUDIT_SQL's unqualified names
    else:
        if token := secret_value(secrets, f"{name}_bearer_token"):
            headers["Authorization"] = f"Bearer {token}"
        user, password = secret_value(secrets, f"{name}_username"), secret_value(secrets, f"{name}_password")
        if user or password:
            basic = (str(user), str(password))
    if name == "loki" and cfg.loki_tenant:
        headers["X-Scope-OrgID"] = cfg.loki_tenant
    verify: bool | str = True
    if name in cfg.backend_insecure:
        verify = False
    elif ca := cfg.backend_ca_bundles.get(name, ""):
        verify = ca
    return BackendAuth(name, headers, basic, verify, database, allow_http=cfg.allow_http, lab_dir=cfg.lab_dir)


def _explain(name: str, url: str, resp: requests.Response, auth: BackendAuth) -> BackendError:
    if resp.status_code in (401, 403):
        hint = (f"{name} at {url} answered {resp.status_code} with {auth.described}: give its credentials "
                f"({name}_bearer_token, or {name}_username/{name}_password, or {name}_headers) in the experiment's "
                f"secrets or the environment" if name != "clickhouse" else
                f"clickhouse at {url} answered {resp.status_code}: give clickhouse_user/clickhouse_password")
        return BackendError(hint, response=resp)
    return BackendError(f"{name} at {url} answered {resp.status_code}: {resp.text[:300]}", response=resp)


@dataclass(frozen=True)
class Backend:
    """One backend at one URL with its credentials: ``get``/``post`` raise BackendError on >= 400."""

    name: str
    url: str
    auth: BackendAuth = field(repr=False)

    def get(self, path: str = "", timeout: float = 10.0, **kw: Any) -> requests.Response:
        """GET ``<url><path>``."""
        return self._send("GET", path, timeout, **kw)

    def post(self, path: str = "", timeout: float = 10.0, **kw: Any) -> requests.Response:
        """POST to ``<url><path>``."""
        return self._send("POST", path, timeout, **kw)

    def _send(self, method: str, path: str, timeout: float, **kw: Any) -> requests.Response:
        url = self.url.rstrip("/") + path if path else self.url
        try:
            with self.auth.session_for(url) as s:
                # verify per request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a Session's verify
                resp = s.request(method, url, timeout=timeout, verify=self.auth.verify, **kw)
        except urls.CrossOriginRedirect as exc:
            raise BackendError(f"{self.name}: {exc}") from None
        except requests.exceptions.SSLError as exc:
            raise BackendError(f"{self.name} at {url}: TLS verification failed ({exc.__class__.__name__}); set "
                               f"{self.name.upper()}_CA_BUNDLE to its CA's PEM file") from None
        if resp.status_code >= 400:
            raise _explain(self.name, url, resp, self.auth)
        return resp


def backend(name: str, url: str, cfg: ExperimentConfig, secrets: Secrets = None) -> Backend:
    """Backend ``name`` at ``url`` with its credentials (see :func:`auth_for`)."""
    return Backend(name, url, auth_for(name, cfg, secrets))
