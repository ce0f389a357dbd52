"""Access tokens the standard way: OAuth2 client credentials (RFC 6749 §4.4) at the IdP's OIDC ``token_endpoint``.

The probes and k6 need a valid token for each tenant they act as. This module gets them, in this order:

1. the cache the caller passes (a run's memory, ``chaosext.run.memory``: tokens are fetched once, before the fault,
   and kept for the run — never written to the run file, a journal or a log);
2. ``TOKENS_FILE`` (JSON ``{tenant: token}``, the fallback for IdPs a client cannot ask);
3. the client-credentials grant: ``token_endpoint`` from ``AUTHORITY_URL/.well-known/openid-configuration`` (or
   ``TOKEN_ENDPOINT``), client authentication ``client_secret_basic`` (default) or ``client_secret_post``
   (``TOKEN_AUTH_METHOD``), with the tenant sent as the form parameter ``TOKEN_TENANT_PARAM`` (default ``tenant``;
   empty: none) and optional ``TOKEN_SCOPE`` / ``TOKEN_AUDIENCE`` (sent as ``TOKEN_AUDIENCE_PARAM``, default
   ``audience``).

Client credentials come from the experiment's ``secrets`` (scope ``chaosext``: ``token_client_id``,
``token_client_secret``, or ``token_clients`` = ``{tenant: {"client_id", "client_secret"}}`` for an IdP with one
client per tenant), else the environment (``TOKEN_CLIENT_ID``, ``TOKEN_CLIENT_SECRET``, ``TOKEN_CLIENTS``), else the
running lab's test client (``chaosext lab status --json``: ``client_id`` / ``client_secret``; only when
``AUTHORITY_URL`` is that very lab's, :mod:`chaosext.core.labid`).

The client secret goes only where it should (:func:`token_endpoint`): a discovered ``token_endpoint`` must share
``AUTHORITY_URL``'s origin (scheme, host, port) unless ``TOKEN_ENDPOINT`` names it explicitly; the endpoint must be
https unless it is the running lab's or ``CHAOSEXT_ALLOW_HTTP`` is true; and no request follows a redirect to another
origin (``chaosext.core.urls.SameOriginSession``: a 307 elsewhere gets neither the Basic header nor the form).
"""
from __future__ import annotations

import base64
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import requests

from chaosext.core import labid, urls
from chaosext.core.config import ExperimentConfig, lab_state
from chaosext.core.errors import ChaosextError
from chaosext.core.settings import SECRETS_SCOPE, Secrets, secret_value

__all__ = [
    "SECRETS_SCOPE",
    "TokenError",
    "TokenSettings",
    "secret_value",
    "TokenCache",
    "token_settings",
    "discover_token_endpoint",
    "token_endpoint",
    "client_credentials_token",
    "grant",
    "tokens_for",
    "k6_token_env",
]

#: (authority URL, tenant) -> (token, expiry unix seconds): a run's memory (``chaosext.run.memory``), never a file
TokenCache = dict[tuple[str, str], tuple[str, float]]
_LOCK = threading.Lock()


class TokenError(ChaosextError, RuntimeError):
    """No token could be had; the message says what to fix (it never contains a secret)."""


@dataclass(frozen=True)
class TokenSettings:
    """Everything needed to get a tenant's token (secrets are kept out of ``repr``)."""

    authority_url: str
    token_endpoint: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    tenant_clients: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    auth_method: str = "client_secret_basic"
    tenant_param: str = "tenant"
    scope: str = ""
    audience: str = ""
    audience_param: str = "audience"
    other_audience: str = ""
    tokens_file: str = ""
    source: str = ""
    #: AUTHORITY_URL is the running lab's (chaosext.core.labid): its own endpoints may be plain http
    lab: bool = False
    #: CHAOSEXT_ALLOW_HTTP: the client secret may go over plain http outside the lab
    allow_http: bool = False

    def client_for(self, tenant: str) -> tuple[str, str]:
        """(client_id, client_secret) used for ``tenant``."""
        return self.tenant_clients.get(tenant) or (self.client_id, self.client_secret)


def _parse_clients(value: Any) -> dict[str, tuple[str, str]]:
    if value in (None, ""):
        return {}
    try:
        doc = json.loads(value) if isinstance(value, str) else value
        return {str(t): (str(c["client_id"]), str(c["client_secret"])) for t, c in doc.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise TokenError('token_clients must be JSON {"<tenant>": {"client_id": "...", "client_secret": "..."}}') \
            from None


def token_settings(cfg: ExperimentConfig, secrets: Secrets = None) -> TokenSettings:
    """The token settings of the run (``cfg.token``) with the client credentials from ``secrets``, the environment
    or the running lab."""
    client_id = str(secret_value(secrets, "token_client_id"))
    client_secret = str(secret_value(secrets, "token_client_secret"))
    source = "secrets/env" if client_id or client_secret else ""
    lab = cfg.lab_running and labid.is_lab_url(cfg.authority_url, labid.running_lab(cfg.lab_dir))
    if not client_id and not client_secret and lab:
        state = lab_state(cfg.lab_dir) or {}
        if labid.same_url(state.get("authority_url"), cfg.authority_url):
            client_id, client_secret = state.get("client_id") or "", state.get("client_secret") or ""
            source = "lab client"
    t = cfg.token
    return TokenSettings(
        authority_url=cfg.authority_url,
        token_endpoint=t.endpoint,
        client_id=client_id,
        client_secret=client_secret,
        tenant_clients=_parse_clients(secret_value(secrets, "token_clients")),
        auth_method=t.auth_method,
        tenant_param=t.tenant_param,
        scope=t.scope,
        audience=t.audience,
        audience_param=t.audience_param,
        other_audience=t.other_audience,
        tokens_file=t.tokens_file,
        source=source,
        lab=lab,
        allow_http=cfg.allow_http,
    )


def discover_token_endpoint(authority_url: str, timeout: float = 5.0, mark: int | None = None) -> str:
    """``token_endpoint`` of ``AUTHORITY_URL/.well-known/openid-configuration`` (OIDC Discovery 1.0 §4). It must be on
    the authority's own origin (a discovery document naming another host would receive the client secret): TokenError
    otherwise, saying to set TOKEN_ENDPOINT explicitly if that host is right."""
    url = authority_url.rstrip("/") + "/.well-known/openid-configuration"
    try:
        urls.parse(url, "AUTHORITY_URL")
        with urls.session(mark) as s:
            r = s.get(url, timeout=timeout)
        r.raise_for_status()
        endpoint = r.json().get("token_endpoint")
    except urls.UrlError as exc:
        raise TokenError(f"OIDC discovery: {exc}") from None
    except (requests.RequestException, ValueError, AttributeError) as exc:
        raise TokenError(f"OIDC discovery at {url} failed ({type(exc).__name__}); check AUTHORITY_URL or set "
                         f"TOKEN_ENDPOINT") from None
    if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
        raise TokenError(f"{url} names no token_endpoint; set TOKEN_ENDPOINT")
    if not urls.same_origin(endpoint, authority_url):
        raise TokenError(f"{url} names token_endpoint {endpoint}, which is not on the authority's origin "
                         f"({authority_url}); chaosext does not send the client secret there. If that endpoint is "
                         f"right, set TOKEN_ENDPOINT={endpoint} explicitly")
    return endpoint


def token_endpoint(settings: TokenSettings, timeout: float = 10.0, mark: int | None = None) -> str:
    """Where the client credentials go: ``TOKEN_ENDPOINT`` when given, else the discovered one (same origin as the
    authority); https unless it is the running lab's or CHAOSEXT_ALLOW_HTTP is true. TokenError otherwise."""
    endpoint = settings.token_endpoint or discover_token_endpoint(settings.authority_url, timeout, mark)
    lab = settings.lab and urls.same_origin(endpoint, settings.authority_url)
    try:
        urls.check_transport(endpoint, "token endpoint", lab, settings.allow_http)
    except urls.UrlError as exc:
        raise TokenError(str(exc)) from None
    return endpoint


def client_credentials_token(token_endpoint: str, client_id: str, client_secret: str,
                             method: str = "client_secret_basic", params: dict[str, str] | None = None,
                             timeout: float = 10.0, mark: int | None = None) -> dict[str, Any]:
    """One client-credentials grant: the token response (``access_token``, ``expires_in`` ...).

    Raises TokenError with the IdP's ``error`` / ``error_description`` (RFC 6749 §5.2), never the secret.
    """
    form = {"grant_type": "client_credentials", **(params or {})}
    headers = {"Accept": "application/json"}
    if method == "client_secret_post":
        form.update(client_id=client_id, client_secret=client_secret)
    else:  # RFC 6749 §2.3.1: id and secret are form-url-encoded before the Basic encoding
        raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    try:
        urls.parse(token_endpoint, "token endpoint")
        with urls.session(mark) as s:  # a redirect to another origin gets neither the Basic header nor the form
            r = s.post(token_endpoint, data=form, headers=headers, timeout=timeout)
    except urls.UrlError as exc:  # CrossOriginRedirect too
        raise TokenError(str(exc)) from None
    except requests.RequestException as exc:
        raise TokenError(f"token endpoint {token_endpoint} unreachable ({type(exc).__name__})") from None
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
        err = body.get("error", "") if isinstance(body, dict) else ""
        desc = body.get("error_description", "") if isinstance(body, dict) else ""
        hint = {"invalid_client": "check the client id/secret (secrets token_client_id / token_client_secret) "
                                  "and TOKEN_AUTH_METHOD",
                "unsupported_grant_type": "the IdP does not allow client credentials for this client",
                "invalid_scope": "check TOKEN_SCOPE"}.get(err, "check TOKEN_* settings")
        raise TokenError(f"token endpoint {token_endpoint} answered {r.status_code} {err or r.reason}"
                         f"{': ' + desc if desc else ''}; {hint}")
    return body


def _from_file(path: str, wanted: list[str]) -> dict[str, str]:
    try:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            raise TokenError(f"TOKENS_FILE={path} is readable by other users (mode {mode:o}): its tokens are "
                             f"credentials; chmod 600 {path}")
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenError(f"TOKENS_FILE={path} is unreadable ({type(exc).__name__}); give JSON {{tenant: token}}") \
            from None
    return {t: str(doc[t]) for t in wanted if isinstance(doc, dict) and doc.get(t)}


def grant(settings: TokenSettings, endpoint: str, tenant: str, audience: str, timeout: float = 10.0,
          mark: int | None = None) -> dict[str, Any]:
    """One client-credentials grant for ``tenant`` as the run asks for its tokens, but for ``audience`` ('' = ask
    for none: the IdP's default): the token response. TokenError as :func:`client_credentials_token`."""
    params: dict[str, str] = {}
    if settings.tenant_param:
        params[settings.tenant_param] = tenant
    if settings.scope:
        params["scope"] = settings.scope
    if audience and settings.audience_param:
        params[settings.audience_param] = audience
    cid, secret = settings.client_for(tenant)
    return client_credentials_token(endpoint, cid, secret, settings.auth_method, params, timeout, mark)


def tokens_for(settings: TokenSettings, tenants: list[str] | tuple[str, ...], cache: TokenCache,
               min_valid_seconds: float = 0.0, timeout: float = 10.0, mark: int | None = None) -> dict[str, str]:
    """``{tenant: access token}`` for every tenant: ``cache`` (the run's memory), then TOKENS_FILE, then the
    client-credentials grant (whose tokens are added to ``cache``).

    ``min_valid_seconds``: tokens that expire sooner are refused with a TokenError (a token that dies during the
    outage would turn into 401s nobody could tell from a real failure). ``mark``: the grant's connections carry this
    socket mark (:func:`chaosext.core.urls.session`).
    """
    now = time.time()
    out: dict[str, str] = {}
    with _LOCK:
        for t in tenants:
            hit = cache.get((settings.authority_url, t))
            if hit and hit[1] > now:
                out[t] = hit[0]
    missing = [t for t in tenants if t not in out]
    if missing and settings.tokens_file:
        out.update(_from_file(settings.tokens_file, missing))
        missing = [t for t in tenants if t not in out]
    if not missing:
        return out
    if not all(all(settings.client_for(t)) for t in missing):
        raise TokenError(f"no token for tenant(s) {', '.join(missing)}: give client credentials (secrets "
                         f"token_client_id / token_client_secret, or env TOKEN_CLIENT_ID / TOKEN_CLIENT_SECRET), "
                         f"or TOKENS_FILE, or start the lab (chaosext lab up)")
    endpoint = token_endpoint(settings, timeout, mark)
    for tenant in missing:
        body = grant(settings, endpoint, tenant, settings.audience, timeout, mark)
        lifetime = float(body.get("expires_in") or 3600)
        if lifetime < min_valid_seconds:
            raise TokenError(f"the IdP issues tokens valid for {lifetime:.0f} s but this run needs "
                             f"{min_valid_seconds:.0f} s; issue longer-lived tokens for the test client, or shorten "
                             f"OUTAGE_SECONDS, or give TOKENS_FILE")
        out[tenant] = str(body["access_token"])
        with _LOCK:
            cache[(settings.authority_url, tenant)] = (out[tenant], time.time() + lifetime)
    return out


def k6_token_env(cfg: ExperimentConfig, secrets: Secrets = None) -> tuple[dict[str, str], dict[str, str]]:
    """(script variables, secret environment) for k6-tenant-load.js to get its tokens the same standard way.

    The first part is safe for ``-e`` (argv); the second holds the client credentials and must go into k6's process
    environment only (``k6 run`` includes it in ``__ENV``).
    """
    s = token_settings(cfg, secrets)
    variables = {"TOKEN_AUTH_METHOD": s.auth_method, "TOKEN_TENANT_PARAM": s.tenant_param,
                 "TOKEN_AUDIENCE_PARAM": s.audience_param}
    for key, value in (("TOKEN_ENDPOINT", s.token_endpoint), ("TOKEN_SCOPE", s.scope),
                       ("TOKEN_AUDIENCE", s.audience)):
        if value:
            variables[key] = value
    env = {"TOKEN_CLIENT_ID": s.client_id, "TOKEN_CLIENT_SECRET": s.client_secret}
    if s.tenant_clients:
        env["TOKEN_CLIENTS"] = json.dumps({t: {"client_id": c[0], "client_secret": c[1]}
                                          for t, c in s.tenant_clients.items()})
    return variables, {k: v for k, v in env.items() if v}
