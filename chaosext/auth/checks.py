"""What the auth probes need from the identity provider and the services, checked before anything changes
(``chaosext doctor`` and the run's pre-flight, ``chaosext.safety.preflight``): the JWKS answers (or the fault would
prove nothing), OIDC discovery names a token endpoint and the JWKS the services fetch, a token for every tenant, and
every service accepting a valid token on its read route. Tokens stay in the run's memory."""
from __future__ import annotations

from urllib.parse import urlparse

import requests

from chaosext.auth import keyserver
from chaosext.auth.forgery import MINTED, parse_skip
from chaosext.auth.idptokens import read_tokens_file
from chaosext.auth.measure import TOKEN_MARGIN_SECONDS, call, prepare_forgery
from chaosext.core import labid
from chaosext.core.errors import ConfigError
from chaosext.core.findings import HTTP_TIMEOUT, Finding
from chaosext.core.tokens import TokenError, token_endpoint, token_settings, tokens_for
from chaosext.run.context import RunContext

__all__ = ["check_forgery_skip", "check_forgery_tokens_file", "check_claim_classes", "check_key_url",
           "check_token_transport", "check_jwks", "check_discovery", "check_jwks_uri", "check_tenant_tokens",
           "check_services"]


def check_forgery_skip(ctx: RunContext) -> Finding:
    """FORGERY_SKIP names forgery classes that exist."""
    try:
        parse_skip(ctx.cfg.forgery_skip)
    except ValueError as exc:
        return Finding("forgery classes", False, str(exc), "fix FORGERY_SKIP")
    skipped = ", ".join(ctx.cfg.forgery_skip)
    return Finding("forgery classes", True, f"skipping {skipped}" if skipped else "every class is tried")


def check_key_url(ctx: RunContext) -> Finding:
    """Where the jku/x5u forgeries point (``chaosext.auth.keyserver``): FORGERY_KEY_URL, the lab's loopback, or
    "not testable here" (never a refusal of the run: those classes are then reported as not testable)."""
    cfg = ctx.cfg
    if problems := keyserver.config_problems(cfg):
        return Finding("jku/x5u key URL", False, "; ".join(problems), "fix FORGERY_KEY_URL / FORGERY_KEY_LISTEN")
    if cfg.forgery_key_url:
        return Finding("jku/x5u key URL", True, f"FORGERY_KEY_URL={cfg.forgery_key_url}")
    if cfg.is_lab_target:
        return Finding("jku/x5u key URL", True, "the lab on this host: a loopback key server")
    return Finding("jku/x5u key URL", False, keyserver.NOT_TESTABLE, "set FORGERY_KEY_URL (and FORGERY_KEY_LISTEN) "
                   "to test the jku/x5u classes", required=False)


def check_token_transport(ctx: RunContext) -> Finding:
    """Tenants' tokens go to the services only over https, unless they are the lab's or CHAOSEXT_ALLOW_HTTP."""
    problems = labid.token_transport_problems(ctx.cfg)
    if problems:
        return Finding("tokens over http", False, "; ".join(problems),
                       "use https service URLs, or set CHAOSEXT_ALLOW_HTTP=true on purpose")
    return Finding("tokens over http", True, "tokens go only over https, to the lab, or CHAOSEXT_ALLOW_HTTP allows it")


def check_forgery_tokens_file(ctx: RunContext) -> Finding | None:
    """FORGERY_TOKENS_FILE (if given) is a private regular file of ``{tenant: {class: token}}`` for known tenants
    and claim classes (no network: whether each token is what it claims is :func:`check_claim_classes`)."""
    path = ctx.cfg.forgery_tokens_file
    if not path:
        return None
    try:
        doc = read_tokens_file(path, ctx.cfg.tenants)
    except ConfigError as exc:
        return Finding("forgery tokens", False, str(exc), "fix FORGERY_TOKENS_FILE (docs/experiment.md, 'The claim "
                       "classes on a real IdP')")
    return Finding("forgery tokens", True, f"FORGERY_TOKENS_FILE: {sum(map(len, doc.values()))} token(s) of "
                   f"{len(doc)} tenant(s)")


def check_claim_classes(ctx: RunContext) -> list[Finding]:
    """Which IdP-signed claim classes (expired, wrong-aud, ...) this IdP lets the run try, prepared now before any
    change (``chaosext.auth.idptokens``): a token the user named (FORGERY_TOKENS_FILE, TOKEN_OTHER_AUDIENCE) that is
    not what it claims refuses the run; the classes left untried are listed with what would let them be tried."""
    try:
        prepared = prepare_forgery(ctx)
    except (TokenError, requests.RequestException):
        return []  # the token checks say why
    fix = "fix FORGERY_TOKENS_FILE / TOKEN_OTHER_AUDIENCE (docs/experiment.md, 'The claim classes on a real IdP')"
    out = [Finding("claim classes", False, problem, fix) for problem in prepared.get("idp_problems") or []]
    reasons: dict[str, str] = prepared.get("idp_reasons") or {}
    wanted = [c for c in MINTED if c not in ctx.cfg.forgery_skip]
    untried = [c for c in wanted if c in reasons]
    if out or (not untried and not prepared.get("idp_sources")):
        return out  # the lab authority mints every class: nothing to say
    sources: dict[str, str] = prepared.get("idp_sources") or {}
    tried = ", ".join(f"{c} ({s})" for c, s in sources.items()) or "none"
    out.append(Finding("claim classes", True, f"{len(wanted) - len(untried)} of {len(wanted)} IdP-signed claim "
                       f"classes can be tried on this IdP: {tried}; skipped (the verdict says how to try each): "
                       f"{', '.join(untried) or 'none'}"))
    return out


def check_jwks(ctx: RunContext) -> Finding:
    """JWKS_URL answers a JWKS now: before the fault it must be reachable, or the experiment proves nothing."""
    url = ctx.cfg.jwks_url
    try:
        r = requests.get(url, timeout=5)
        if r.status_code == 200 and isinstance(r.json(), dict) and "keys" in r.json():
            return Finding("jwks", True, f"{url}: a JWKS of {len(r.json()['keys'])} key(s)")
        return Finding("jwks", False, f"JWKS_URL={url} did not return a JWKS (status {r.status_code})",
                       "before the fault it must answer, or the experiment proves nothing: fix JWKS_URL")
    except (requests.RequestException, ValueError) as exc:
        return Finding("jwks", False, f"JWKS_URL={url} is unreachable before the fault ({type(exc).__name__})",
                       "is an old fault still active? run `chaosext restore --all`; else fix JWKS_URL")


def check_discovery(ctx: RunContext) -> Finding:
    """The IdP's OIDC discovery document names a token endpoint (or TOKEN_ENDPOINT is given)."""
    try:
        settings = token_settings(ctx.cfg, ctx.secrets)
        # the endpoint the client secret would go to: the authority's origin unless explicit, https outside the lab
        endpoint = token_endpoint(settings, timeout=HTTP_TIMEOUT)
        if settings.token_endpoint:
            return Finding("idp discovery", True, f"TOKEN_ENDPOINT={settings.token_endpoint} (discovery not used)")
    except TokenError as exc:
        msg, _, fix = str(exc).partition("; ")
        return Finding("idp discovery", False, msg, fix or "check AUTHORITY_URL (the IdP's issuer URL)")
    return Finding("idp discovery", True, f"{settings.authority_url}: token_endpoint {endpoint}")


def check_jwks_uri(ctx: RunContext) -> Finding:
    """Warn when JWKS_URL (what the fault blocks) is not the discovery document's ``jwks_uri`` host and port: then
    the fault may block an address the services never use, and the run proves nothing. Fine when the services fetch
    the keys through a proxy (e.g. Envoy) at JWKS_URL."""
    cfg = ctx.cfg
    try:
        r = requests.get(cfg.authority_url + "/.well-known/openid-configuration", timeout=HTTP_TIMEOUT)
        jwks_uri = str(r.json().get("jwks_uri") or "")
    except (requests.RequestException, ValueError, AttributeError):
        jwks_uri = ""
    if not jwks_uri:
        return Finding("idp jwks_uri", False, "discovery names no jwks_uri (or did not answer)",
                       "check AUTHORITY_URL; JWKS_URL must be the address the services fetch the keys from",
                       required=False)

    def where(url: str) -> tuple[str, int]:
        u = urlparse(url)
        return u.hostname or "", u.port or (443 if u.scheme == "https" else 80)

    if where(jwks_uri) == where(cfg.jwks_url):
        return Finding("idp jwks_uri", True, f"JWKS_URL is discovery's jwks_uri host:port ({jwks_uri})")
    return Finding("idp jwks_uri", False, f"JWKS_URL={cfg.jwks_url} but discovery's jwks_uri is {jwks_uri}",
                   "the fault blocks JWKS_URL's host:port: set it to the address the services fetch the keys from "
                   "(fine as is if they go through a proxy at JWKS_URL)", required=False)


def check_tenant_tokens(ctx: RunContext) -> list[Finding]:
    """A token for each tenant of TENANTS, as the run gets it (client credentials, or TOKENS_FILE), valid for the
    whole run, kept in the run's memory: a "tokens" summary line, then one line per tenant."""
    cfg = ctx.cfg
    default_fix = "set TOKEN_CLIENT_ID / TOKEN_CLIENT_SECRET (or TOKENS_FILE) and AUTHORITY_URL"
    try:
        settings = token_settings(cfg, ctx.secrets)
    except TokenError as exc:
        msg, _, fix = str(exc).partition("; ")
        return [Finding("tokens", False, msg, fix or default_fix)]
    how = "TOKENS_FILE" if settings.tokens_file and not settings.client_id else \
        f"client credentials ({settings.source or 'secrets/env'}, {settings.auth_method})"
    lines: list[Finding] = []
    got: dict[str, str] = {}
    for tenant in cfg.tenants:
        try:
            got.update(tokens_for(settings, [tenant], ctx.memory.tokens,
                                  min_valid_seconds=cfg.outage_seconds + TOKEN_MARGIN_SECONDS, timeout=HTTP_TIMEOUT))
            lines.append(Finding(f"token: {tenant}", True, f"via {how}"))
        except TokenError as exc:
            msg, _, fix = str(exc).partition("; ")
            first = next((c for c in lines if not c.ok), None)
            if first and msg.replace(tenant, "") == first.detail.replace(first.name[len("token: "):], ""):
                msg, fix = f"same error as {first.name}", f"see {first.name}"  # one cause, said once
            lines.append(Finding(f"token: {tenant}", False, msg, fix or default_fix))
    failed = [c for c in lines if not c.ok]
    summary = Finding("tokens", True, f"{len(got)} tenant token(s) from {settings.authority_url} via {how}") \
        if not failed else Finding("tokens", False, failed[0].detail, failed[0].fix)
    return [summary, *lines]


def check_services(ctx: RunContext) -> list[Finding]:
    """Each service answers 200 to a valid tenant token on its read route (the probes' call); the tokens come from
    the run's memory (:func:`check_tenant_tokens` fetched them)."""
    cfg = ctx.cfg
    settings = token_settings(cfg, ctx.secrets)
    tokens = {t: tok for (authority, t), (tok, _) in ctx.memory.tokens.items()
              if authority == settings.authority_url and t in cfg.tenants}
    out = []
    for i, (name, svc) in enumerate(cfg.services.items()):
        route = svc.probe_route
        where = f"{route.method} {svc.url}{route.path}" if route else f"{svc.url} (no read route)"
        if not tokens:
            out.append(Finding(f"service: {name}", False, f"{where}: not called, no valid token",
                               "fix the token checks above first"))
            continue
        tenant = sorted(tokens)[i % len(tokens)]
        status = call(cfg, svc, tokens[tenant], tenant, timeout=HTTP_TIMEOUT)
        fix = {0: f"start it, or fix SERVICE_URLS ({name}={svc.url}); run from where it is reachable (in CI: "
                  f"CHAOSEXT_RUNS_ON, or a port-forward)",
               401: f"it rejects a valid token of {tenant}: it must trust AUTHORITY_URL's issuer and keys and the "
                    f"token's audience (TOKEN_AUDIENCE)",
               403: f"it refuses tenant {tenant} with its own token: check TENANT_HEADER={cfg.tenant_header} and "
                    f"the IdP's tenant claim (TOKEN_TENANT_PARAM)",
               404: f"no route {where} there: check services.{name}.probe / routes in TARGET_FILE and its URL"}
        detail = f"{where} as {tenant}: " + ("no answer" if status == 0 else f"HTTP {status}")
        out.append(Finding(f"service: {name}", status == 200, detail,
                           "" if status == 200 else fix.get(status, "it must answer 200 to a valid token; check its "
                                                                     "logs")))
    return out
