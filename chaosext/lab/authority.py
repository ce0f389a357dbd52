"""The lab's identity provider: OIDC discovery, JWKS, RS256 tokens, key rotation with overlap.

``python -m chaosext.lab.authority --host 127.0.0.2 --port 8440 --ops-host 127.0.0.1 --ops-port 8441
--issuer http://127.0.0.2:8440 --audience stellaops-api --key-dir DIR --clients-file FILE [--rotate-overlap 600]
[--tenants t01,...]``

Public listener: ``/.well-known/openid-configuration``, ``/.well-known/jwks.json``, ``POST /token``, ``/healthz``.
``POST /token`` is a standard OAuth2 token endpoint for the client-credentials grant (RFC 6749 §4.4): form-encoded
``grant_type=client_credentials``, client authentication by ``client_secret_basic`` or ``client_secret_post``
(§2.3.1), errors per §5.2. The lab's tenant is the form parameter ``tenant`` (one lab client may ask for any lab
tenant); optional ``scope``, ``audience`` (the token's ``aud``) and the lab-only ``ttl`` (seconds). The clients live in
``--clients-file`` (JSON ``{"clients": [{"client_id": ..., "client_secret": ...}]}``, mode 0600), never in argv.
Lab only: the form parameters ``test_claims`` (a JSON object setting exp/nbf/iat/iss/aud) and ``omit`` (a comma list of
exp/iss/aud) mint the forgery catalogue's IdP-signed bad-claim tokens; a real IdP never does.
Ops listener (stays reachable during the egress fault): ``/healthz``, ``/metrics``, ``POST /admin/rotate``.
Keys live in ``--key-dir`` (``keys.json`` + one PEM a key), so a restarted authority serves the same keys.
"""
import argparse
import base64
import binascii
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from chaosext.core import safefs
from chaosext.lab.aioserve import http_url, listen, port_arg, positive, run, setup_logging, stop_event

__all__ = ["KeyStore", "KeyDirError", "build_apps", "main", "TENANT_RE", "load_clients", "TENANT_PARAM"]

log = logging.getLogger("chaosext.lab.authority")

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_TOKEN_TTL = 86400
#: the token request's form parameter that names the lab tenant (chaosext's TOKEN_TENANT_PARAM default)
TENANT_PARAM = "tenant"
FORM = "application/x-www-form-urlencoded"
#: claims a ``POST /token`` may set (``test_claims``) or drop (``omit``): the lab mints the forgery catalogue's
#: IdP-signed tokens with a bad exp/nbf/iss/aud (a real IdP never does; chaosext then skips those classes)
TESTABLE_CLAIMS = frozenset({"exp", "nbf", "iat", "iss", "aud"})
OMITTABLE_CLAIMS = frozenset({"exp", "iss", "aud"})

TOKENS = Counter("authority_tokens_issued_total", "Tokens issued by the lab authority")
REQUESTS = Counter("authority_requests_total", "Requests to the authority's public listener", ["endpoint", "status"])
ROTATIONS = Counter("authority_key_rotations_total", "Signing key rotations")
PUBLISHED = Gauge("authority_published_keys", "Keys published in the JWKS")


class KeyDirError(RuntimeError):
    """The key directory is unusable (message says what to do)."""


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _thumbprint_kid(key: rsa.RSAPrivateKey) -> str:
    """RFC 7638 thumbprint of the public key, first 16 characters."""
    pub = key.public_key().public_numbers()
    canonical = json.dumps({"e": _b64(pub.e), "kty": "RSA", "n": _b64(pub.n)}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()[:16]


class KeyStore:
    """Signing keys persisted in a directory: ``keys.json`` ({active, keys: {kid: {created, retire_at}}}) and
    ``<kid>.pem`` (PKCS#8, mode 0600). The active key signs; retired keys stay published until ``retire_at``. The
    directory is opened root-safe (chaosext.core.safefs) and every file is read and written relative to it."""

    def __init__(self, key_dir: str | Path, overlap: float, now: Any = time.time) -> None:
        self.dir = Path(key_dir)
        self.overlap = float(overlap)
        self._now = now
        self.active = ""
        self.meta: dict[str, dict[str, Any]] = {}
        self._private: dict[str, rsa.RSAPrivateKey] = {}
        self._lock_fd: int | None = None
        self._sd: safefs.SafeDir | None = None

    @property
    def sd(self) -> safefs.SafeDir:
        if self._sd is None:
            raise KeyDirError(f"key dir {self.dir} is not open")
        return self._sd

    # -- persistence -----------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Lock the directory, load its keys, or create the first key."""
        try:
            self._sd = safefs.open_dir(self.dir, create=True)
            self._lock_fd = self._sd.open(".lock", os.O_WRONLY | os.O_CREAT)
        except OSError as exc:
            raise KeyDirError(f"cannot use key dir {self.dir}: {exc.strerror or exc}; choose a writable --key-dir") \
                from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise KeyDirError(
                f"key dir {self.dir} is in use by another authority; stop it or choose another --key-dir"
            ) from None
        if not self.sd.exists("keys.json"):
            self.rotate()
            return
        try:
            doc = json.loads(self.sd.read_text("keys.json"))
            self.active = doc["active"]
            self.meta = {k: dict(v) for k, v in doc["keys"].items()}
            for kid in self.meta:
                pem = self.sd.read_bytes(f"{kid}.pem")
                self._private[kid] = serialization.load_pem_private_key(pem, password=None)  # type: ignore[assignment]
            if self.active not in self._private:
                raise KeyError(self.active)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyDirError(
                f"key dir {self.dir} is corrupt ({type(exc).__name__}: {exc}); delete it to start with new keys"
            ) from None
        self._prune()

    def _save(self) -> None:
        doc = {"version": 1, "active": self.active, "keys": self.meta}
        self.sd.write("keys.json", json.dumps(doc, indent=1, sort_keys=True))

    def _prune(self) -> None:
        now = self._now()
        gone = [k for k, m in self.meta.items() if k != self.active and (m.get("retire_at") or now + 1) <= now]
        for kid in gone:
            self.meta.pop(kid)
            self._private.pop(kid, None)
            self.sd.unlink(f"{kid}.pem")
        if gone:
            self._save()
            log.info("retired keys removed: %s", ",".join(gone))
        PUBLISHED.set(len(self.meta))

    # -- operations ------------------------------------------------------------------------------------------------
    def rotate(self) -> dict[str, Any]:
        """A new key signs from now on; the previous one stays published for ``overlap`` seconds."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = _thumbprint_kid(key)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.sd.write(f"{kid}.pem", pem)
        now = self._now()
        previous = self.active
        if previous:
            self.meta[previous]["retire_at"] = now + self.overlap
        self.meta[kid] = {"created": now, "retire_at": None}
        self._private[kid] = key
        self.active = kid
        self._save()
        self._prune()
        log.info("signing key %s active (previous %s published for %ss)", kid, previous or "-", self.overlap)
        return {"active": kid, "previous": previous or None, "previous_published_for_seconds": self.overlap}

    def signing_key(self) -> tuple[str, rsa.RSAPrivateKey]:
        """(kid, private key) of the active key."""
        return self.active, self._private[self.active]

    def jwks(self) -> dict[str, Any]:
        """The published JWKS: the active key and retired keys still inside their overlap."""
        self._prune()
        keys = []
        for kid in sorted(self.meta, key=lambda k: k != self.active):
            jwk = RSAAlgorithm.to_jwk(self._private[kid].public_key(), as_dict=True)
            jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
            keys.append(jwk)
        return {"keys": keys}


def load_clients(path: str | Path) -> dict[str, str]:
    """``{client_id: client_secret}`` from a clients file; raises KeyDirError saying what is wrong."""
    try:
        doc = json.loads(Path(path).read_text())
        clients = {str(c["client_id"]): str(c["client_secret"]) for c in doc["clients"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyDirError(f"clients file {path} is unusable ({type(exc).__name__}: {exc}); give a JSON file "
                          f'{{"clients": [{{"client_id": "...", "client_secret": "..."}}]}}') from None
    if not clients or not all(clients.values()):
        raise KeyDirError(f"clients file {path} has no client with a non-empty client_secret")
    return clients


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """(client_id, client_secret) of an HTTP Basic header; both parts form-url-decoded (RFC 6749 §2.3.1)."""
    try:
        raw = base64.b64decode(header.split(" ", 1)[1].strip(), validate=True).decode("utf-8")
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = raw.partition(":")
    return (unquote_plus(client_id), unquote_plus(secret)) if sep else None


def build_apps(args: argparse.Namespace, store: KeyStore,
               clients: dict[str, str] | None = None) -> tuple[web.Application, web.Application]:
    """The public and the ops aiohttp applications; ``clients`` are the OAuth2 clients ({id: secret})."""
    clients = dict(clients or {})
    tenants = set(args.tenants.split(",")) if args.tenants else None
    discovery = {
        "issuer": args.issuer,
        "jwks_uri": f"{args.issuer}/.well-known/jwks.json",
        "token_endpoint": f"{args.issuer}/token",
        "response_types_supported": ["token"],
        "grant_types_supported": ["client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }

    def counted(endpoint: str, resp: web.Response) -> web.Response:
        REQUESTS.labels(endpoint, str(resp.status)).inc()
        return resp

    async def openid(_: web.Request) -> web.Response:
        return counted("discovery", web.json_response(discovery))

    async def jwks(_: web.Request) -> web.Response:
        resp = web.json_response(store.jwks(), headers={"Cache-Control": "public, max-age=300"})
        return counted("jwks", resp)

    def oauth_error(error: str, message: str, status: int = 400, basic: bool = False) -> web.Response:
        """An RFC 6749 §5.2 error response (``WWW-Authenticate`` when the client tried or needs HTTP Basic)."""
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        if basic:
            headers["WWW-Authenticate"] = 'Basic realm="chaosext-lab", charset="UTF-8"'
        body = {"error": error, "error_description": message}
        return counted("token", web.json_response(body, status=status, headers=headers))

    def bad(message: str) -> web.Response:
        return oauth_error("invalid_request", message)

    def authenticate(request: web.Request, form: dict[str, str]) -> tuple[str | None, web.Response | None]:
        """(client_id, None) when the client authenticated, else (None, the error response)."""
        header = request.headers.get("Authorization", "")
        has_post = "client_secret" in form
        if header[:6].lower() == "basic ":
            if has_post:
                return None, bad("use one client authentication method: HTTP Basic or client_secret in the body")
            creds = _basic_credentials(header)
            if creds is None:
                return None, oauth_error("invalid_client", "malformed HTTP Basic credentials", 401, basic=True)
            client_id, secret, basic = creds[0], creds[1], True
        elif has_post:
            client_id, secret, basic = form.get("client_id", ""), form["client_secret"], False
        else:
            return None, oauth_error("invalid_client", "client authentication required: HTTP Basic "
                                     "(client_secret_basic) or client_id and client_secret in the body", 401, True)
        expected = clients.get(client_id)
        if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
            return None, oauth_error("invalid_client", "unknown client or wrong secret", 401, basic=basic)
        return client_id, None

    async def token(request: web.Request) -> web.Response:
        if request.content_type != FORM:
            return bad("the token endpoint takes a form-encoded body (application/x-www-form-urlencoded) with "
                       "grant_type=client_credentials (RFC 6749 section 4.4)")
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        client_id, error = authenticate(request, form)
        if error is not None:
            return error
        grant = form.get("grant_type")
        if not grant:
            return bad("'grant_type' is required; this endpoint supports grant_type=client_credentials")
        if grant != "client_credentials":
            return oauth_error("unsupported_grant_type",
                               f"grant_type {grant!r} is not supported; use client_credentials")
        tenant = form.get(TENANT_PARAM)
        if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
            return bad(f"'{TENANT_PARAM}' is required: 1-64 characters of letters, digits, '_', '.', '-'")
        if tenants is not None and tenant not in tenants:
            return bad(f"unknown tenant {tenant!r}; lab tenants are {','.join(sorted(tenants))}")
        scope = form.get("scope", "")
        aud = form.get("audience") or args.audience
        try:
            ttl = int(form.get("ttl", args.token_ttl))
        except (TypeError, ValueError):
            return bad("'ttl' must be an integer number of seconds")
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return bad(f"'ttl' must be between 1 and {MAX_TOKEN_TTL} seconds")
        now = int(time.time())
        claims = {
            "iss": args.issuer,
            "aud": aud,
            "sub": client_id,
            "client_id": client_id,
            "tenant": tenant,
            "scope": scope,
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        try:
            test_claims = json.loads(form.get("test_claims") or "{}")
        except ValueError:
            return bad("'test_claims' must be a JSON object")
        omit = [name for name in (form.get("omit") or "").split(",") if name]
        if not isinstance(test_claims, dict) or set(test_claims) - TESTABLE_CLAIMS or not all(
                isinstance(v, (int, str)) for v in test_claims.values()):
            return bad(f"'test_claims' may only set {sorted(TESTABLE_CLAIMS)} (integers or strings)")
        if not isinstance(omit, list) or set(omit) - OMITTABLE_CLAIMS:
            return bad(f"'omit' may only list {sorted(OMITTABLE_CLAIMS)}")
        claims.update(test_claims)  # lab only: the forgery catalogue's IdP-signed bad-claim tokens
        if test_claims or omit:
            claims["chaosext_test_token"] = True  # the services keep it out of the tenant's own auth-failure count
        for name in omit:
            claims.pop(name, None)
        kid, key = store.signing_key()
        encoded = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
        TOKENS.inc()
        body = {"access_token": encoded, "token_type": "Bearer", "expires_in": ttl, "scope": scope}
        return counted("token", web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"}))

    async def health(_: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "component": "authority", "issuer": args.issuer, "active_kid": store.active,
             "published_kids": [k["kid"] for k in store.jwks()["keys"]]}
        )

    async def metrics(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest())
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        resp.charset = "utf-8"
        return resp

    async def rotate(_: web.Request) -> web.Response:
        ROTATIONS.inc()
        return web.json_response(store.rotate())

    public = web.Application()
    public.add_routes(
        [
            web.get("/.well-known/openid-configuration", openid),
            web.get("/.well-known/jwks.json", jwks),
            web.post("/token", token),
            web.get("/healthz", health),
        ]
    )
    ops = web.Application()
    ops.add_routes([web.get("/healthz", health), web.get("/metrics", metrics), web.post("/admin/rotate", rotate)])
    return public, ops


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the authority."""
    p = argparse.ArgumentParser(prog="python -m chaosext.lab.authority", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.2", help="public listener address (the egress fault's target)")
    p.add_argument("--port", type=port_arg, default=8440)
    p.add_argument("--ops-host", default="127.0.0.1", help="ops listener address (/metrics, /healthz, /admin/rotate)")
    p.add_argument("--ops-port", type=port_arg, default=8441)
    p.add_argument("--issuer", type=http_url, default="http://127.0.0.2:8440")
    p.add_argument("--audience", default="stellaops-api")
    p.add_argument("--key-dir", required=True, help="where signing keys persist across restarts")
    p.add_argument("--clients-file", required=True,
                   help='OAuth2 clients, JSON {"clients": [{"client_id": ..., "client_secret": ...}]} (mode 0600)')
    p.add_argument("--rotate-overlap", type=positive(float, allow_zero=True), default=600.0,
                   help="seconds a rotated-out key stays published (default 600)")
    p.add_argument("--tenants", default="", help="comma-separated lab tenants; empty: any well-formed tenant")
    p.add_argument("--token-ttl", type=positive(int), default=3600, help="default token lifetime in seconds")
    args = p.parse_args(argv)
    if not args.audience.strip():
        p.error("--audience must not be empty")
    if args.tenants:
        bad = [t for t in args.tenants.split(",") if not TENANT_RE.match(t)]
        if bad:
            p.error(f"--tenants: invalid tenant names {bad}; use letters, digits, '_', '.', '-'")
    if args.token_ttl > MAX_TOKEN_TTL:
        p.error(f"--token-ttl must be at most {MAX_TOKEN_TTL}")
    if (args.host, args.port) == (args.ops_host, args.ops_port):
        p.error("--ops-host/--ops-port must differ from --host/--port")
    return args


async def _serve(args: argparse.Namespace) -> int:
    stop = stop_event()
    store = KeyStore(args.key_dir, args.rotate_overlap)
    try:
        store.open()
    except KeyDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        clients = load_clients(args.clients_file)
    except KeyDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    public, ops = build_apps(args, store, clients)
    runners = [web.AppRunner(public, access_log=None), web.AppRunner(ops, access_log=None)]
    try:
        for r in runners:
            await r.setup()
        await listen(runners[0], args.host, args.port, "the authority (public)")
        await listen(runners[1], args.ops_host, args.ops_port, "the authority (ops)")
        log.info("ready: public http://%s:%d ops http://%s:%d issuer %s active kid %s",
                 args.host, args.port, args.ops_host, args.ops_port, args.issuer, store.active)
        await stop.wait()
        log.info("stopping")
    finally:
        for r in runners:
            await r.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m chaosext.lab.authority``."""
    args = parse_args(argv)
    setup_logging("authority")
    return run(lambda: _serve(args))


if __name__ == "__main__":
    sys.exit(main())
