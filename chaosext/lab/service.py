"""A lab tenant service (policy, vuln or notify): JWT validation through the JWKS cache, tenant checks, per-tenant
rate limit, metrics and audit events.

``python -m chaosext.lab.service --service policy|vuln|notify --host 127.0.0.1 --port 8451
--jwks-url http://127.0.0.2:8440/.well-known/jwks.json --issuer http://127.0.0.2:8440 --audience stellaops-api
--tenant-header X-StellaOps-Tenant --jwks-ttl 300 --jwks-max-stale 3600 --rate-limit 500 --rate-burst 1000
--audit-file PATH --cache-mode lkg|hard-ttl|none [--no-audit] [--fail-open] --tenant-cap 1000``

Routes (docs/architecture.md): ``GET /api/v1/<items>``, ``GET /api/v1/<items>/{id}``, ``POST /api/v1/<items>``,
``PUT /api/v1/<items>/{id}``, plus ``GET /healthz``, ``GET /metrics`` and ``GET /ready`` (200 while the JWKS cache
holds a usable key, else 503: a load balancer keeps a cold instance out of rotation) without auth, and the lab's
``POST /admin/cold-start`` (the instance forgets its keys, as a restarted one has none: the cold-start scenario).
"""
import argparse
import asyncio
import base64
import collections
import hashlib
import hmac
import json
import logging
import random
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from chaosext.lab.aioserve import http_url, listen, port_arg, positive, run, setup_logging, stop_event
from chaosext.lab.audit import AuditLog
from chaosext.lab.common import HOLES
from chaosext.lab.jwks_cache import MODES, STATES, JwksAnswer, JwksCache, VerifiedTokenCache
from chaosext.lab.tenancy import UNAUTHENTICATED, RateLimiter, TenantLabels

if TYPE_CHECKING:
    from jwt.types import Options

__all__ = ["SERVICES", "REASONS", "HOLES", "Authenticator", "TenantService", "build_app", "main", "parse_args"]

log = logging.getLogger("chaosext.lab.service")
#: a token's claims as jwt.decode returns them
Claims = dict[str, Any]

#: service -> collection name in its routes
SERVICES = {"policy": "policies", "vuln": "findings", "notify": "notifications"}
REASONS = ("ok", "expired", "bad_signature", "unknown_kid", "bad_audience", "bad_issuer", "malformed", "no_keys",
           "missing")
SEEDED_ITEMS = 100  # ids "1".."100" exist for every tenant, so read load has something to read
MAX_ITEMS_PER_TENANT = 1000
MAX_QUEUE_PER_TENANT = 100_000
#: Boundaries exactly at the latency SLOs (0.3 s read, 0.6 s write), so `histogram_quantile` is exact at the thresholds
#: (a quantile interpolated inside a bucket that straddles a threshold can sit on either side of it).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.3, 0.4, 0.5, 0.6, 1.0, 2.5)
#: Rejections of a token whose signature verified but whose claims did not: the tenant's own client's fault.
CLAIM_REASONS = ("expired", "bad_audience", "bad_issuer")
#: claim the lab authority puts into every bad-claim test token it mints (test_claims/omit); the forgery probe's
#: traffic then stays out of the tenant's own alerting. A real IdP never mints these (those classes are skipped).
TEST_TOKEN_CLAIM = "chaosext_test_token"

disable_created_metrics()  # type: ignore[no-untyped-call]  # halves the series count; rules use rate() on *_total only

REQUESTS = Counter("tenant_requests_total", "Requests by tenant, route template and status",
                   ["tenant", "service", "route", "status"])
RATE_LIMITED = Counter("tenant_rate_limit_hits_total", "Requests refused by the per-tenant rate limit",
                       ["tenant", "service"])
DATA_VOLUME = Counter("tenant_data_volume_bytes_total", "Request body bytes accepted on write routes",
                      ["tenant", "service"])
QUEUE_DEPTH = Gauge("tenant_queue_depth", "Notify's per-tenant queue depth (0 on other services)",
                    ["tenant", "service"])
DURATION = Histogram("tenant_request_duration_seconds", "Time spent in the service per request",
                     ["tenant", "service", "kind"], buckets=LATENCY_BUCKETS)
OVERFLOW = Counter("tenant_label_overflow_total", "Requests whose tenant folded into __overflow__", ["service"])
FETCHES = Counter("jwks_fetch_total", "JWKS fetches by result", ["service", "result"])
CACHE_STATE = Gauge("jwks_cache_state", "1 for the JWKS cache's current state", ["service", "state"])
CACHE_AGE = Gauge("jwks_cache_age_seconds", "Seconds since the last successful JWKS fetch", ["service"])
LOOKUPS = Counter("jwks_cache_lookups_total", "JWKS key lookups by result", ["service", "result"])
LOOKUP_RESULTS = ("hit", "stale_hit", "miss", "unknown_kid")
VALIDATIONS = Counter("jwt_validations_total", "JWT validations", ["service", "result", "reason", "key_source"])
AUTH_FAILURES = Counter("tenant_auth_failures_total", "401s of tokens whose signature verified but whose claims were "
                        "rejected (expired, bad_audience, bad_issuer), by the token's tenant",
                        ["tenant", "service", "reason"])

_ERRORS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.InvalidAudienceError, "bad_audience"),
    (jwt.InvalidIssuerError, "bad_issuer"),
    (jwt.InvalidSignatureError, "bad_signature"),
]


class Authenticator:
    """Bearer token -> claims, through the verified-token cache and the JWKS cache."""

    def __init__(self, service: str, jwks: JwksCache, tokens: VerifiedTokenCache, issuer: str, audience: str,
                 fail_open: bool = False, holes: frozenset[str] = frozenset(),
                 hole_tenants: frozenset[str] = frozenset()) -> None:
        unknown = set(holes) - set(HOLES)
        if unknown:
            raise ValueError(f"unknown validation holes {sorted(unknown)}; known: {', '.join(HOLES)}")
        self.holes = frozenset(holes)
        #: the holes and fail-open apply to tokens of these tenants only (empty: every tenant)
        self.hole_tenants = frozenset(hole_tenants)
        self.service = service
        self.jwks = jwks
        self.tokens = tokens
        self.issuer = issuer
        self.audience = audience
        self.fail_open = fail_open
        self._lookups = {r: LOOKUPS.labels(service, r) for r in LOOKUP_RESULTS}
        self._options: Options = {"require": ["exp", "iss", "aud", "sub"]}
        if "ignore-exp" in self.holes:  # misbehaviour knob: expiry neither required nor checked
            self._options = {"require": ["iss", "aud", "sub"], "verify_exp": False}

    async def authenticate(self, authorization: str | None) -> tuple[Claims | None, str, str]:
        """(claims or None, reason, key_source)."""
        if not authorization or not authorization.startswith("Bearer "):
            return None, "missing", "none"
        token = authorization[7:].strip()
        if self.tokens.enabled:
            claims = self.tokens.get(token)
            if claims is not None:
                return claims, "ok", "token_cache"
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None, "malformed", "none"
        kid = header.get("kid")
        if self.holes and self.applies(_token_tenant(token)) \
                and (holed := await self._holed(token, header)) is not None:
            return holed
        if header.get("alg") != "RS256" or not isinstance(kid, str):
            return None, "malformed", "none"
        found = await self.jwks.get_key(kid)
        if found.key is None:
            # miss: the cache has no usable keys (expired/empty); unknown_kid: keys usable, this kid not among them
            # (a forged/foreign token, or a rotation not fetched yet). Only misses mean the cache failed.
            self._lookups["unknown_kid" if found.reason == "unknown_kid" else "miss"].inc()
            if self.fail_open and self.jwks.in_outage() and self.applies(_token_tenant(token)):
                return self._unverified(token)  # the security bug, on purpose (--fail-open)
            return None, found.reason, "none"
        self._lookups["hit" if found.source == "fresh" else "stale_hit"].inc()
        try:
            claims = jwt.decode(token, found.key, algorithms=["RS256"], audience=self.audience, issuer=self.issuer,
                                options=self._options)
        except jwt.PyJWTError as exc:
            for kind, reason in _ERRORS:
                if isinstance(exc, kind):
                    return None, reason, found.source
            return None, "malformed", found.source
        if not isinstance(claims.get("tenant"), str):
            return None, "malformed", found.source
        self.tokens.put(token, claims, kid)
        return claims, "ok", found.source

    def applies(self, tenant: str | None) -> bool:
        """Whether the misbehaviour knobs apply to a token of ``tenant`` (``--hole-tenant``; none given: all)."""
        return not self.hole_tenants or tenant in self.hole_tenants

    async def _holed(self, token: str, header: dict[str, Any]) -> tuple[Claims | None, str, str] | None:
        """The misbehaviour knobs (security bugs on purpose, one classic hole each); None = validate normally.
        Whatever a hole lets in is counted with key_source="none" (no IdP key verified it)."""
        alg = str(header.get("alg"))
        if "accept-alg-none" in self.holes and alg.lower() == "none":
            return self._claims_only(token, None, ["none", "None", "NONE", "nOnE"])
        if "alg-confusion" in self.holes and alg in ("HS256", "HS384", "HS512") and isinstance(header.get("kid"), str):
            found = await self.jwks.get_key(header["kid"])
            if found.key is not None:  # the RS256 public key's PEM used as the HMAC secret
                pem = found.key.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
                signing_input, _, sig = token.rpartition(".")
                mac = hmac.new(pem, signing_input.encode(), getattr(hashlib, "sha" + alg[2:])).digest()
                if hmac.compare_digest(base64.urlsafe_b64encode(mac).rstrip(b"=").decode(), sig):
                    return self._claims_only(token, None, [alg])
                return None, "bad_signature", "none"
        if "trust-token-key" in self.holes and ("jwk" in header or "x5c" in header) and alg == "RS256":
            key: Any
            try:
                if "jwk" in header:
                    key = RSAAlgorithm.from_jwk(header["jwk"])
                else:
                    key = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0])).public_key()
            except (ValueError, TypeError, KeyError, IndexError, jwt.PyJWTError):
                return None, "malformed", "none"
            return self._claims_only(token, key, ["RS256"])
        return None

    def _claims_only(self, token: str, key: Any, algorithms: list[str]) -> tuple[Claims | None, str, str]:
        """Claims checked (exp, iss, aud) with ``key`` (None: signature not verified at all)."""
        try:
            claims = jwt.decode(token, key, algorithms=algorithms, audience=self.audience, issuer=self.issuer,
                                options={**self._options, "verify_signature": key is not None})
        except jwt.PyJWTError as exc:
            return None, next((r for kind, r in _ERRORS if isinstance(exc, kind)), "malformed"), "none"
        if not isinstance(claims.get("tenant"), str):
            return None, "malformed", "none"
        return claims, "ok", "none"

    def _unverified(self, token: str) -> tuple[Claims | None, str, str]:
        try:
            claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": True, "verify_aud": True,
                                                "verify_iss": True}, audience=self.audience, issuer=self.issuer)
        except jwt.PyJWTError:
            return None, "no_keys", "none"
        if not isinstance(claims.get("tenant"), str):
            return None, "malformed", "none"
        return claims, "ok", "none"


class Store:
    """In-memory items per tenant; ids 1..SEEDED_ITEMS exist for every tenant."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._items: dict[str, dict[str, Any]] = collections.defaultdict(dict)
        self._next_id: dict[str, int] = collections.defaultdict(lambda: SEEDED_ITEMS + 1)
        self._list_json: dict[str, bytes] = {}  # tenant -> encoded list response, dropped on every write

    def get(self, tenant: str, item_id: str) -> dict[str, Any] | None:
        item = self._items[tenant].get(item_id)
        if item is None and item_id.isdigit() and 1 <= int(item_id) <= SEEDED_ITEMS:
            item = {"id": item_id, "tenant": tenant, "seeded": True}
        return item

    def list(self, tenant: str, limit: int = 20) -> list[dict[str, Any]]:
        items = self._items[tenant]
        return list(items.values())[-limit:]

    def list_json(self, tenant: str) -> bytes:
        """The list response body, encoded once per change (reads outnumber writes 9:1; encoding dominated)."""
        cached = self._list_json.get(tenant)
        if cached is None:
            items = self.list(tenant)
            doc = {"service": self.service, "tenant": tenant, "items": items, "count": len(items)}
            cached = self._list_json[tenant] = json.dumps(doc).encode()
        return cached

    def put(self, tenant: str, item_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
        items = self._items[tenant]
        self._list_json.pop(tenant, None)
        if item_id is None:
            item_id = str(self._next_id[tenant])
            self._next_id[tenant] += 1
        if len(items) >= MAX_ITEMS_PER_TENANT and item_id not in items:
            items.pop(next(iter(items)))
        item = {"id": item_id, "tenant": tenant, "data": body}
        items[item_id] = item
        return item


class TenantService:
    """Request handling shared by the three services."""

    def __init__(self, args: argparse.Namespace, jwks: JwksCache, audit: AuditLog) -> None:
        self.args = args
        self.name = args.service
        self.jwks = jwks
        self.audit = audit
        # --jwks-fetch-inline: a library that fetches on the request path keeps no verified-token cache in front
        self.tokens = VerifiedTokenCache(jwks, ttl=0 if args.jwks_fetch_inline else args.token_cache_ttl)
        self.holes = frozenset(args.hole or ())
        self.auth = Authenticator(self.name, jwks, self.tokens, args.issuer, args.audience, args.fail_open,
                                  self.holes, frozenset(args.hole_tenant or ()))
        self.limiter = RateLimiter(args.rate_limit, args.rate_burst)
        overflow = OVERFLOW.labels(self.name)
        self.labels = TenantLabels(args.tenant_cap, on_overflow=overflow.inc)
        self.store = Store(self.name)
        self.queues: dict[str, collections.deque[Any]] = {}
        self._req: dict[tuple[str, str, int], Any] = {}
        self._dur: dict[tuple[str, str], Any] = {}
        self._seen_labels: set[str] = set()
        self._validations = {
            (res, reason, src): VALIDATIONS.labels(self.name, res, reason, src)
            for res, reason, src in [("valid", "ok", s) for s in ("fresh", "stale", "token_cache", "none")]
            + [("invalid", r, "none") for r in REASONS if r != "ok"]
        }
        self.header = args.tenant_header

    # ---- metrics helpers (children cached: labels() takes a lock and builds a tuple each call) --------------------
    def _count(self, tenant: str, route: str, status: int, kind: str, seconds: float) -> None:
        child = self._req.get((tenant, route, status))
        if child is None:
            child = self._req[(tenant, route, status)] = REQUESTS.labels(tenant, self.name, route, str(status))
        child.inc()
        dur = self._dur.get((tenant, kind))
        if dur is None:
            dur = self._dur[(tenant, kind)] = DURATION.labels(tenant, self.name, kind)
        dur.observe(seconds)
        if tenant not in self._seen_labels:
            self._seen_labels.add(tenant)
            if self.name != "notify":
                QUEUE_DEPTH.labels(tenant, self.name).set(0)

    def _validation(self, result: str, reason: str, source: str) -> None:
        child = self._validations.get((result, reason, source))
        if child is None:
            child = self._validations[(result, reason, source)] = VALIDATIONS.labels(self.name, result, reason, source)
        child.inc()

    def _count_auth_failure(self, authorization: str, reason: str) -> None:
        """Count a tenant's own rejected token (``reason`` in CLAIM_REASONS) in tenant_auth_failures_total.

        PyJWT checks the signature before the claims, so these reasons mean the token was issued by the identity
        provider and its ``tenant`` claim can be trusted for the label (through the same cap as every label)."""
        try:
            claims = jwt.decode(authorization[7:].strip(), options={"verify_signature": False})
        except jwt.PyJWTError:
            return
        tenant = claims.get("tenant")
        if claims.get(TEST_TOKEN_CLAIM):
            return  # the lab authority's bad-claim test token (forgery probe): not the tenant's own client
        if isinstance(tenant, str) and tenant:
            AUTH_FAILURES.labels(self.labels.label(tenant), self.name, reason).inc()

    # ---- the request path ---------------------------------------------------------------------------------------
    def route(self, template: str, kind: str, impl: Callable[[web.Request, str, bytes], Awaitable[web.Response]]
              ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """Wrap ``impl(request, tenant, body)`` with auth, tenant check, rate limit and metrics."""

        async def handler(request: web.Request) -> web.Response:
            t0 = time.perf_counter()
            headers = request.headers
            claimed = headers.get(self.header, "")
            claims, reason, source = await self.auth.authenticate(headers.get("Authorization"))
            if claims is None and "skip-signature-404" in self.holes and reason != "missing" \
                    and self.auth.applies(_token_tenant(headers.get("Authorization", "")[7:].strip())):
                # the stand-in of issue 10: never checks signatures, hides behind 404 for tenants it does not know
                if self.labels.known_or(claimed) == UNAUTHENTICATED:
                    self._count(UNAUTHENTICATED, template, 404, kind, time.perf_counter() - t0)
                    return web.json_response({"error": "not_found", "detail": "unknown tenant"}, status=404)
                claims, reason, source = _claims_unchecked(headers.get("Authorization", "")), "ok", "none"
            if claims is None:
                self._validation("invalid", reason, source)
                # D1: the claimed tenant's label only when the SERVICE could not verify (no usable keys: a server
                # failure that counts for the tenant); a token that failed on its own is client noise
                label = self.labels.known_or(claimed) if reason == "no_keys" else UNAUTHENTICATED
                self.audit.request("auth.rejected", claimed or "-", lambda: _unverified_subject(headers),
                                   f"{request.method} {request.path}", reason, headers.get("traceparent"))
                resp = web.json_response({"error": "unauthorized", "reason": reason}, status=401,
                                         headers={"WWW-Authenticate": f'Bearer error="invalid_token", '
                                                                      f'error_description="{reason}"'})
                if reason in CLAIM_REASONS:  # after the request's label: admitting the tenant cannot change it
                    self._count_auth_failure(headers.get("Authorization", ""), reason)
            else:
                self._validation("valid", reason, source)
                tenant = claims["tenant"]
                label = self.labels.label(tenant)
                if tenant != claimed and not ("ignore-tenant" in self.holes and self.auth.applies(tenant)):
                    self.audit.request("tenant.mismatch", claimed or "-", str(claims.get("sub", "")),
                                       f"{request.method} {request.path}", "denied", headers.get("traceparent"))
                    resp = web.json_response({"error": "forbidden", "reason": "tenant_mismatch",
                                              "detail": f"token is for another tenant than {self.header}"}, status=403)
                elif self.args.inject_5xx and random.random() < self.args.inject_5xx:
                    resp = web.json_response({"error": "injected"}, status=503)  # --inject-5xx, on purpose
                elif not self.limiter.allow(tenant):
                    RATE_LIMITED.labels(label, self.name).inc()
                    resp = web.json_response({"error": "rate_limited"}, status=429, headers={"Retry-After": "1"})
                else:
                    body = await request.read() if kind == "write" else b""
                    resp = await impl(request, tenant, body)
                    if kind == "write" and resp.status < 300:
                        DATA_VOLUME.labels(label, self.name).inc(len(body))
            self._count(label, template, resp.status, kind, time.perf_counter() - t0)
            return resp

        return handler

    # ---- route implementations -----------------------------------------------------------------------------------
    async def list_items(self, request: web.Request, tenant: str, body: bytes) -> web.Response:
        return web.Response(body=self.store.list_json(tenant), content_type="application/json")

    async def get_item(self, request: web.Request, tenant: str, body: bytes) -> web.Response:
        item = self.store.get(tenant, request.match_info["id"])
        if item is None:
            return web.json_response({"error": "not_found"}, status=404)
        return web.json_response(item)

    async def write_item(self, request: web.Request, tenant: str, body: bytes) -> web.Response:
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return web.json_response({"error": "bad_request", "detail": "body must be a JSON object"}, status=400)
        item_id = request.match_info.get("id")
        item = self.store.put(tenant, item_id, doc)
        if self.name == "notify":
            queue = self.queues.get(tenant)
            if queue is None:
                queue = self.queues[tenant] = collections.deque(maxlen=MAX_QUEUE_PER_TENANT)
            queue.append(item["id"])
            QUEUE_DEPTH.labels(self.labels.known_or(tenant, "__overflow__"), self.name).set(len(queue))
        return web.json_response(item, status=201 if item_id is None else 200)

    async def drain_queues(self) -> None:
        """Notify's worker: delivers (drops) up to --notify-drain-rate items a second per tenant."""
        tick = 0.1
        per_tick = max(1, int(self.args.notify_drain_rate * tick))
        while True:
            await asyncio.sleep(tick)
            for tenant, queue in self.queues.items():
                if not queue:
                    continue
                for _ in range(min(per_tick, len(queue))):
                    queue.popleft()
                QUEUE_DEPTH.labels(self.labels.known_or(tenant, "__overflow__"), self.name).set(len(queue))

    # ---- unauthenticated endpoints -------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({
            "status": "ok",
            "service": self.name,
            "jwks": self.jwks.snapshot(),
            "token_cache_entries": len(self.tokens),
            "tenant_labels": len(self.labels),
            "cache_mode": self.jwks.mode,
            "fail_open": self.args.fail_open,
            "holes": sorted(self.holes),
            "hole_tenants": sorted(self.auth.hole_tenants),
            "audit": not self.args.no_audit,
            "audit_suppressed": self.audit.suppressed,
        })

    async def ready(self, request: web.Request) -> web.Response:
        """200 while a key is usable (fresh or stale), else 503 not ready; the --ready-without-keys knob: always 200."""
        state = self.jwks.state
        ok = state in ("fresh", "stale") or self.args.ready_without_keys
        return web.json_response({"ready": ok, "jwks": state}, status=200 if ok else 503)

    async def cold_start(self, request: web.Request) -> web.Response:
        """The lab's cold start: the instance forgets every key and every verified token, as a restarted instance
        has none, and fetches again (its listener stays up: the requests it gets are what a restarted instance in
        rotation would get)."""
        self.jwks.reset()
        self.tokens.clear()
        log.warning("cold start: every key forgotten")
        return web.json_response({"cold_start": True, "jwks": self.jwks.snapshot()})

    async def metrics(self, request: web.Request) -> web.Response:
        self.jwks.state  # noqa: B018 - evaluate the state now so the gauges are current
        resp = web.Response(body=generate_latest())
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        resp.charset = "utf-8"
        return resp


def _claims_unchecked(authorization: str) -> Claims:
    """The token's claims, nothing verified (only the skip-signature-404 stand-in uses this)."""
    try:
        claims = jwt.decode(authorization[7:], options={"verify_signature": False})
    except jwt.PyJWTError:
        claims = {}
    return claims if isinstance(claims.get("tenant"), str) else {**claims, "tenant": ""}


def _token_tenant(token: str) -> str | None:
    """The tenant a token claims, nothing verified (which tenants the misbehaviour knobs apply to)."""
    try:
        tenant = jwt.decode(token, options={"verify_signature": False}).get("tenant")
    except jwt.PyJWTError:
        return None
    return tenant if isinstance(tenant, str) else None


def _unverified_subject(headers: Any) -> str:
    """The ``sub`` a rejected token claims, marked unverified (forensics only)."""
    try:
        sub = jwt.decode(headers.get("Authorization", "")[7:], options={"verify_signature": False}).get("sub")
    except (jwt.PyJWTError, AttributeError):
        return "anonymous"
    return f"unverified:{sub}" if isinstance(sub, str) and sub else "anonymous"


def build_app(svc: TenantService) -> web.Application:
    """The aiohttp application of one service."""
    base = f"/api/v1/{SERVICES[svc.name]}"
    app = web.Application()
    app.add_routes([
        web.get(base, svc.route(base, "read", svc.list_items)),
        web.get(base + "/{id}", svc.route(base + "/{id}", "read", svc.get_item)),
        web.post(base, svc.route(base, "write", svc.write_item)),
        web.put(base + "/{id}", svc.route(base + "/{id}", "write", svc.write_item)),
        web.get("/healthz", svc.healthz),
        web.get("/metrics", svc.metrics),
        web.get("/ready", svc.ready),
        web.post("/admin/cold-start", svc.cold_start),
    ])
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of a tenant service."""
    p = argparse.ArgumentParser(prog="python -m chaosext.lab.service", description=__doc__.split("\n")[0])
    p.add_argument("--service", required=True, choices=sorted(SERVICES))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_arg, required=True)
    p.add_argument("--jwks-url", type=http_url, default="http://127.0.0.2:8440/.well-known/jwks.json")
    p.add_argument("--issuer", type=http_url, default="http://127.0.0.2:8440")
    p.add_argument("--audience", default="stellaops-api")
    p.add_argument("--tenant-header", default="X-StellaOps-Tenant")
    p.add_argument("--jwks-ttl", type=positive(float), default=300.0, help="soft TTL, seconds")
    p.add_argument("--jwks-max-stale", type=positive(float), default=3600.0,
                   help="hard limit after the last successful fetch, seconds; then fail closed")
    p.add_argument("--jwks-timeout", type=positive(float), default=2.0, help="timeout of one JWKS fetch, seconds")
    p.add_argument("--unknown-kid-interval", type=positive(float, allow_zero=True), default=5.0,
                   help="at most one unknown-kid refresh per this many seconds")
    p.add_argument("--rate-limit", type=positive(float), default=500.0, help="requests a second per tenant")
    p.add_argument("--rate-burst", type=positive(float), default=1000.0)
    p.add_argument("--audit-file", default=".chaosext-lab/audit.jsonl")
    p.add_argument("--cache-mode", choices=MODES, default="lkg")
    p.add_argument("--no-audit", action="store_true", help="misbehaviour knob: write no audit events")
    p.add_argument("--audit-drop", type=lambda v: tuple(a for a in v.split(",") if a), default=(),
                   help="misbehaviour knob: never audit these actions (e.g. auth.degraded,auth.recovered)")
    p.add_argument("--no-refetch-after-failure", action="store_true",
                   help="misbehaviour knob: after a failed JWKS fetch never fetch again (never recovers)")
    p.add_argument("--inject-5xx", type=positive(float, allow_zero=True), default=0.0,
                   help="misbehaviour knob: answer this fraction of authenticated requests with 503")
    p.add_argument("--jwks-swap", action="store_true",
                   help="misbehaviour knob: the key cache is replaced by whatever the JWKS answered (an error page, "
                        "an empty or foreign key set)")
    p.add_argument("--jwks-fetch-inline", action="store_true",
                   help="misbehaviour knob: once past the TTL every request waits for a JWKS fetch, which has no "
                        "timeout")
    p.add_argument("--jwks-unknown-kid-storm", action="store_true",
                   help="misbehaviour knob: every token with an unknown kid fetches the JWKS, awaited, no rate limit")
    p.add_argument("--jwks-pinned", action="store_true",
                   help="misbehaviour knob: the first key set fetched is kept for ever (a rotated key is never seen)")
    p.add_argument("--ready-without-keys", action="store_true",
                   help="misbehaviour knob: GET /ready answers 200 while the instance holds no key")
    p.add_argument("--fail-open", action="store_true",
                   help="misbehaviour knob (a security bug on purpose): accept unverifiable tokens during an outage")
    p.add_argument("--hole", action="append", choices=HOLES, default=[],
                   help="misbehaviour knob (a JWT validation hole on purpose; repeatable): " + ", ".join(HOLES))
    p.add_argument("--hole-tenant", action="append", default=[],
                   help="misbehaviour knob: the holes and --fail-open apply to this tenant only (the token's tenant "
                        "claim; repeatable; none = every tenant)")
    p.add_argument("--tenant-cap", type=positive(int), default=1000, help="distinct tenant label values")
    p.add_argument("--token-cache-ttl", type=positive(float, allow_zero=True), default=30.0,
                   help="verified-token cache lifetime, seconds (0 disables)")
    p.add_argument("--notify-drain-rate", type=positive(float), default=200.0,
                   help="notify worker: items a second per tenant")
    args = p.parse_args(argv)
    if args.jwks_max_stale < args.jwks_ttl:
        p.error(f"--jwks-max-stale ({args.jwks_max_stale:g}) must be >= --jwks-ttl ({args.jwks_ttl:g})")
    if args.rate_burst < 1:
        p.error("--rate-burst must be >= 1")
    if not args.audience.strip():
        p.error("--audience must not be empty")
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", args.tenant_header):
        p.error(f"--tenant-header {args.tenant_header!r} is not a valid HTTP header name")
    return args


async def _serve(args: argparse.Namespace) -> int:
    stop = stop_event()
    name = args.service
    try:
        audit = AuditLog(args.audit_file, name, enabled=not args.no_audit)
    except OSError as exc:
        print(f"error: cannot open audit file {args.audit_file}: {exc.strerror or exc}; choose a writable --audit-file",
              file=sys.stderr)
        return 1
    # --jwks-fetch-inline: a fetch without a timeout of its own (the library's default), which a slow JWKS holds open
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None) if args.jwks_fetch_inline \
        else aiohttp.ClientTimeout(total=args.jwks_timeout)
    session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True, limit=8))
    resource = f"jwks:{args.jwks_url}"
    states = {s: CACHE_STATE.labels(name, s) for s in STATES}
    fetches = {r: FETCHES.labels(name, r) for r in ("success", "error", "invalid")}
    for r in LOOKUP_RESULTS:
        LOOKUPS.labels(name, r)
    OVERFLOW.labels(name)

    async def fetch() -> bytes:
        async with session.get(args.jwks_url, headers={"Accept": "application/json"}) as resp:
            if resp.status != 200:
                raise JwksAnswer(resp.status, await resp.read(), args.jwks_url)
            return await resp.read()

    def on_state(state: str) -> None:
        for s, g in states.items():
            g.set(1 if s == state else 0)

    svc: TenantService | None = None

    def on_event(action: str, result: str) -> None:
        if action not in args.audit_drop:  # --audit-drop: a pipeline that loses these events (misbehaviour knob)
            audit.system(action, result, resource)
        if action == "auth.expired" and svc is not None:
            svc.tokens.clear()

    cache = JwksCache(fetch, ttl=args.jwks_ttl, max_stale=args.jwks_max_stale, mode=args.cache_mode,
                      unknown_kid_interval=args.unknown_kid_interval, on_event=on_event, on_state=on_state,
                      refetch_after_failure=not args.no_refetch_after_failure,
                      on_fetch=lambda result, detail: fetches[result].inc(), swap=args.jwks_swap,
                      fetch_inline=args.jwks_fetch_inline, unknown_kid_storm=args.jwks_unknown_kid_storm,
                      pinned=args.jwks_pinned)
    on_state("empty")
    CACHE_AGE.labels(name).set_function(cache.age)
    svc = TenantService(args, cache, audit)
    runner = web.AppRunner(build_app(svc), access_log=None, handle_signals=False)
    tasks: list[asyncio.Task[None]] = []
    try:
        await runner.setup()
        if args.cache_mode != "none":
            await cache.refresh()  # be ready with keys if the authority is up; start empty otherwise
        await listen(runner, args.host, args.port, f"the {name} service")
        tasks.append(asyncio.create_task(cache.run()))
        if name == "notify":
            tasks.append(asyncio.create_task(svc.drain_queues()))
        log.info("ready: http://%s:%d service %s jwks %s (%s, ttl %gs, max-stale %gs)%s%s", args.host, args.port,
                 name, cache.state, args.cache_mode, args.jwks_ttl, args.jwks_max_stale,
                 " FAIL-OPEN" if args.fail_open else "", " NO-AUDIT" if args.no_audit else "")
        await stop.wait()
        log.info("stopping")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        await session.close()
        audit.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m chaosext.lab.service``."""
    args = parse_args(argv)
    setup_logging(args.service)
    return run(lambda: _serve(args))


if __name__ == "__main__":
    sys.exit(main())
