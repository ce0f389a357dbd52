"""What the auth domain measures against the tenant services: valid tokens accepted, forged tokens refused.

Plain measurements, judged elsewhere (``chaosext.outage``: the baseline and recovery probes, the watch step, the
outage checks). The requests themselves: a tenant's token on a service's read route (:func:`call`).

Tokens are fetched before the fault (the authority is unreachable during it) by the client-credentials grant
(``chaosext.core.tokens``) and kept in the run's memory (``chaosext.run.memory``), never in a file, with the JWKS and
the IdP-signed bad-claim tokens the forgery catalogue needs (:func:`prepare_forgery`). Forged tokens carry REAL tenants
(claim and header): a service must label a request whose token failed ``__unauthenticated__`` (only a ``no_keys``
failure counts for the claimed tenant), which keeps them out of the error rates (docs/experiment.md).
"""
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests

from chaosext.auth import keyserver
from chaosext.auth.forgery import CLASSES, MINTED, build_catalogues, key_documents, tenant_materials
from chaosext.auth.idptokens import IdpTokens, collect, read_tokens_file
from chaosext.auth.judge import Attempt, judge_attempts, probe_round
from chaosext.core import urls
from chaosext.core.config import ExperimentConfig
from chaosext.core.errors import ConfigError
from chaosext.core.names import SOCKET_MARK
from chaosext.core.target import Service
from chaosext.core.tokens import (
    TokenError,
    client_credentials_token,
    grant,
    token_endpoint,
    token_settings,
    tokens_for,
)
from chaosext.metrics.prom import increase_between, prom_of, wait_for_samples
from chaosext.run.context import RunContext
from chaosext.run.record import CheckResult

__all__ = ["call", "timed_call", "ensure_tokens", "new_key_tokens",
           "prepare_forgery", "ForgeryPlan", "forgery_plan", "valid_token_statuses",
           "unverified_accepts", "CHECK_TENANTS", "TOKEN_MARGIN_SECONDS"]

#: how many tenants' tokens each check uses
CHECK_TENANTS = 3
#: seconds the metric backstop waits for Prometheus to scrape past the end of the outage
SCRAPE_WAIT_SECONDS = 30.0
#: probe tokens must stay valid this long beyond OUTAGE_SECONDS (baseline, watch, recovery)
TOKEN_MARGIN_SECONDS = 600


def call(cfg: ExperimentConfig, svc: Service, token: str, tenant: str, timeout: float = 3.0) -> int:
    """The service's probe route (``Service.probe_route``) with ``token`` for ``tenant``: the HTTP status, or 0 when
    it did not answer (or the service has no read route to probe). A redirect to another origin is not followed (the
    token stays with the service: chaosext.core.urls)."""
    route = svc.probe_route
    if route is None:
        return 0
    headers = {"Authorization": f"Bearer {token}"}
    if cfg.tenant_header:
        headers[cfg.tenant_header] = tenant
    if route.body:
        headers["Content-Type"] = "application/json"
    try:
        with urls.session() as s:
            r = s.request(route.method, svc.url + route.path, data=route.body.encode() or None, timeout=timeout,
                          headers=headers)
        return r.status_code
    except requests.RequestException:
        return 0


def timed_call(cfg: ExperimentConfig, svc: Service, token: str, tenant: str,
               timeout: float = 3.0) -> tuple[int, float]:
    """:func:`call`, and how long the answer took (milliseconds, client side; the timeout when none came)."""
    start = time.monotonic()
    status = call(cfg, svc, token, tenant, timeout)
    return status, round((time.monotonic() - start) * 1000, 1)


def new_key_tokens(ctx: RunContext, tenants: Sequence[str] | None = None) -> dict[str, str]:
    """Fresh tokens of the first tenants from the IdP, now (never from a cache): after a rotation they carry the new
    key's kid. Asked through connections marked SOCKET_MARK, which the run's own iptables fault lets through (the
    services still cannot reach the JWKS); kept in the run's memory only. TokenError says what to fix."""
    cfg = ctx.cfg
    wanted = list(tenants or cfg.tenants[:CHECK_TENANTS])
    fresh = tokens_for(token_settings(cfg, ctx.secrets), wanted, {}, timeout=10, mark=SOCKET_MARK)
    ctx.memory.rotated_tokens.update(fresh)
    return fresh


def ensure_tokens(ctx: RunContext, tenants: Sequence[str] | None = None) -> dict[str, str]:
    """Valid tokens of the first tenants (or of ``tenants``): from the run's memory, TOKENS_FILE, or the
    client-credentials grant (then kept in the run's memory; never written to a file, the journal or a log).

    Raises ``chaosext.core.tokens.TokenError`` saying what to fix.
    """
    cfg = ctx.cfg
    wanted = list(tenants or cfg.tenants[:CHECK_TENANTS])
    return tokens_for(token_settings(cfg, ctx.secrets), wanted, ctx.memory.tokens,
                      min_valid_seconds=cfg.outage_seconds + TOKEN_MARGIN_SECONDS)


def _fetch_jwks(cfg: ExperimentConfig, timeout: float = 5.0) -> dict[str, Any]:
    try:
        doc = requests.get(cfg.jwks_url, timeout=timeout).json()
        return doc if isinstance(doc, dict) and isinstance(doc.get("keys"), list) else {}
    except (requests.RequestException, ValueError):
        return {}


Mint = Callable[[str, dict[str, Any], tuple[str, ...]], str | None]


def _mint_via_authority(ctx: RunContext, tenant: str) -> Mint | None:
    """``mint(class, overrides, omit)`` through the lab authority's ``POST /token`` (``test_claims``/``omit``).

    None for real IdPs (TOKENS_FILE given): they do not sign tokens with bad claims on request; what they do give is
    collected by ``chaosext.auth.idptokens`` (:func:`prepare_forgery`)."""
    cfg = ctx.cfg
    settings = token_settings(cfg)
    if cfg.token.tokens_file or settings.source != "lab client":
        return None  # only the lab's own authority honours test_claims; a real IdP would hand out VALID tokens

    def mint(name: str, overrides: dict[str, Any], omit: tuple[str, ...]) -> str | None:
        params = {"tenant": tenant, "audience": cfg.audience, "ttl": str(cfg.outage_seconds + 900),
                  "test_claims": json.dumps(overrides), "omit": ",".join(omit)}
        try:
            endpoint = token_endpoint(settings, 5)
            return str(client_credentials_token(endpoint, settings.client_id, settings.client_secret,
                                                settings.auth_method, params, timeout=5)["access_token"])
        except (TokenError, KeyError):
            return None

    return mint


def prepare_forgery(ctx: RunContext) -> dict[str, Any]:
    """Before the fault: the JWKS and the IdP-signed bad-claim tokens of every tenant the run drives (a service may
    fail open for some tenants only); kept in the run's memory (they are tokens). The tenants' tokens come from the
    run's memory (the pre-flight fetched one for every tenant)."""
    kept = ctx.memory.forgery
    if kept:
        return kept
    cfg = ctx.cfg
    tokens = ensure_tokens(ctx, cfg.tenants)
    jwks = _fetch_jwks(cfg)
    materials = tenant_materials(jwks, tokens, mint_for=lambda t: _mint_via_authority(ctx, t))
    minted: dict[str, dict[str, str | None]] = {}
    for m in materials:
        for name in MINTED:
            if name not in cfg.forgery_skip:
                minted.setdefault(m.tenant, {}).update({f.name: f.token for f in CLASSES[name](m)})
    # what the lab authority could not mint, a real IdP may still give (chaosext.auth.idptokens)
    wanted = [c for c in MINTED if c not in cfg.forgery_skip and not all(minted.get(t, {}).get(c) for t in tokens)]
    idp = _idp_tokens(ctx, tokens, jwks, wanted) if wanted else IdpTokens()
    for tenant, classes in idp.tokens.items():
        minted.setdefault(tenant, {}).update(classes)
    kept.update(jwks=jwks, minted=minted, idp_reasons=idp.reasons, idp_problems=idp.problems,
                idp_sources=idp.sources)
    return kept


def _idp_tokens(ctx: RunContext, tokens: dict[str, str], jwks: dict[str, Any], wanted: list[str]) -> IdpTokens:
    """The claim-class tokens this IdP gives (:func:`chaosext.auth.idptokens.collect`) for ``wanted``."""
    cfg = ctx.cfg
    settings = token_settings(cfg, ctx.secrets)
    try:
        files = read_tokens_file(cfg.forgery_tokens_file, cfg.tenants) if cfg.forgery_tokens_file else {}
    except ConfigError as exc:
        return IdpTokens(problems=[str(exc)], reasons={c: str(exc) for c in wanted})
    fetch = None
    if all(all(settings.client_for(t)) for t in tokens):
        def fetch(tenant: str, audience: str) -> str:
            endpoint = token_endpoint(settings, 5)  # same origin as the authority, https outside the lab
            return str(grant(settings, endpoint, tenant, audience, timeout=10)["access_token"])
    return collect(tokens, jwks, fetch, settings.audience, settings.other_audience, files, wanted)


class ForgeryPlan:
    """The catalogue for one run (every tenant's), and the key URL its jku/x5u forgeries point at: served by the run's
    one key listener (``chaosext.auth.keyserver``), or "not testable here" when the services may not reach this
    machine."""

    def __init__(self, ctx: RunContext, prepare: bool = True) -> None:
        # during the outage the IdP is unreachable: use what was prepared before the fault, never wait on it
        cfg = ctx.cfg
        prepared = prepare_forgery(ctx) if prepare else ctx.memory.forgery
        tokens = ensure_tokens(ctx, cfg.tenants)  # from the run's memory: the pre-flight fetched every tenant's
        minted: dict[str, dict[str, str | None]] = prepared.get("minted") or {}
        #: the tenants the run drives (the forgeries attack every one)
        self.tenants = list(cfg.tenants)
        self.keys = keyserver.key_url_for(ctx)
        self.key_url = self.keys.url
        materials = tenant_materials(prepared.get("jwks") or {}, tokens, self.key_url,
                                     mint_for=lambda t: lambda name, overrides, omit: minted.get(t, {}).get(name))
        self.material = materials[0]
        self.forgeries, self.skipped = build_catalogues(materials, cfg.forgery_skip)
        if "alg-confusion" in self.skipped and not prepared.get("jwks"):
            self.skipped["alg-confusion"] = "the JWKS could not be fetched before the fault"
        if not prepare and not prepared:
            for name in set(MINTED) & set(self.skipped):
                self.skipped[name] = "not prepared before the fault (forged-tokens-refused was not in the baseline)"
        if not self.key_url:
            for name in {"jku", "x5u"} & set(self.skipped) - set(cfg.forgery_skip):
                self.skipped[name] = self.keys.reason  # never tried, never counted as refused
        for name, why in (prepared.get("idp_reasons") or {}).items():
            if name in self.skipped and name not in cfg.forgery_skip:  # what would let it be tried on this IdP
                self.skipped[name] = why
        #: where the IdP-signed claim-class tokens came from, by class (not the lab's minting)
        self.sources: dict[str, str] = dict(prepared.get("idp_sources") or {})
        self.documents = key_documents(self.material)
        self.keys.serve(self.documents)
        self.key_fetches: list[str] = []

    def round(self, cfg: ExperimentConfig, tick: int | None = None,
              services: dict[str, str] | None = None) -> list[Attempt]:
        """One round (all variants when ``tick`` is None, else this tick's rotation) against every service."""
        attempts = probe_round(services if services is not None else cfg.service_urls, self.forgeries,
                               cfg.tenant_header, {name: tuple((r.method, r.path) for r in s.forgery_routes)
                                                   for name, s in cfg.services.items()},
                               tick, cfg.forgery_concurrency, cfg.forgery_timeout)
        self.key_fetches = self.keys.fetches()
        return attempts

    def judge(self, cfg: ExperimentConfig, attempts: Sequence[Mapping[str, Any]],
              block_time: float | None) -> CheckResult:
        """judge_attempts with this run's settings; a fetch of the probe's key URL is itself a finding."""
        j = judge_attempts(attempts, cfg.refused_statuses, self.skipped, block_time)
        j["tenants"] = self.tenants
        if self.sources:
            j["idp_sources"] = self.sources
        if self.key_fetches:
            j["key_url_fetched"] = sorted(set(self.key_fetches))
            j["ok"] = False
            j["why"] = "; ".join(filter(None, [j["why"], f"a service fetched the key URL a forged token named "
                                                          f"({', '.join(j['key_url_fetched'])})"]))
        return j


def forgery_plan(ctx: RunContext) -> ForgeryPlan | None:
    """The watch step's catalogue (None when there is no valid token to build it from)."""
    try:
        return ForgeryPlan(ctx, prepare=False)
    except (KeyError, IndexError, OSError, RuntimeError, requests.RequestException):
        return None


def valid_token_statuses(ctx: RunContext) -> CheckResult:
    """Every service answers 200 to a valid token of each checked tenant, now: ``ok``, ``checks``, ``failures``."""
    cfg = ctx.cfg
    tokens = ensure_tokens(ctx)
    failures = []
    checks = 0
    for service, svc in cfg.services.items():
        for tenant, token in tokens.items():
            status = call(cfg, svc, token, tenant)
            checks += 1
            if status != 200:
                failures.append({"service": service, "tenant": tenant, "status": status})
    return {"phase": "before-fault", "ok": checks > 0 and not failures, "checks": checks, "failures": failures[:10]}


def unverified_accepts(ctx: RunContext, start: float, end: float) -> dict[str, Any]:
    """The metric-side backstop: requests the services themselves counted as accepted WITHOUT a verified key between
    ``start`` and each service's first scrape after ``end``, so the last tick's forged requests count
    (METRIC_UNVERIFIED_ACCEPTS; the lab's is jwt_validations_total{result="valid", key_source="none"}). Catches
    acceptance of tokens the catalogue does not send, e.g. k6's own traffic let in while the cache was expired.
    ``exported`` False (never a failure) when Prometheus has no such series."""
    sel = ctx.cfg.metrics.unverified_accepts
    if not sel:
        return {"ok": True, "exported": False, "note": "METRIC_UNVERIFIED_ACCEPTS=off: backstop switched off"}
    prom = prom_of(ctx)
    # every service's first scrape after the end: what the last tick's forged requests made it count
    wait_for_samples(prom, end, timeout=SCRAPE_WAIT_SECONDS, services=tuple(ctx.cfg.services))
    try:
        series = increase_between(prom, sel, start, end, through_next_scrape=True)
    except (requests.RequestException, RuntimeError, ValueError) as exc:
        return {"ok": False, "exported": None, "selector": sel,
                "note": f"Prometheus query failed ({type(exc).__name__}); the backstop could not be checked"}
    if not series:
        return {"ok": True, "exported": False, "selector": sel,
                "note": "the services do not export this series; see docs/experiment.md to add it"}
    count = sum(s.count for s in series)
    return {"ok": count == 0, "exported": True, "selector": sel, "unverified_accepts": count}
