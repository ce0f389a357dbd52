"""What an Envoy that validates tokens itself (jwt_authn, remote_jwks) does during a JWKS outage — measured, real Envoy.

One Envoy 1.40.0 runs the lab's JWKS egress listener (with the chaosext fault filter) and a jwt gateway listener
(chaosext.lab.envoy.add_jwt_gateway) whose remote_jwks fetch goes through that egress listener. The findings are the
behaviour table in docs/egress.md: the cached JWKS is used until cache_duration after the last good fetch, then every
request is refused with 401 "Jwks remote fetch is failed" (with or without async_fetch; drop adds the fetch timeout
to each refused request), and the first request after the restore fetches again and passes.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from chaosext.egress.base import make_spec
from chaosext.egress.envoy import EnvoyDriver
from chaosext.lab.envoy import add_jwt_gateway, bootstrap, envoy_argv, write_bootstrap
from chaosext.lab.testing import free_ports
from tests.egress.egress_util import wait_for
from tests.egress.envoy_util import require_envoy

pytestmark = pytest.mark.e2e

CACHE = 4  # jwt_authn cache_duration, seconds
ISSUER, AUDIENCE = "http://authority.lab", "stellaops-api"
FAILED = "Jwks remote fetch is failed"


class Gateway:
    def __init__(self, admin: str, egress: str, gateway: str, key: Any, jwks_hits: list[float]) -> None:
        self.admin, self.egress, self.gateway, self.key, self.jwks_hits = admin, egress, gateway, key, jwks_hits
        self.token = self.new_token()

    def new_token(self) -> str:
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "t01", "exp": int(time.time()) + 3600,
                  "jti": str(time.monotonic_ns())}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "k1"})

    def call(self, token: str = "") -> tuple[int, str, float]:
        start = time.monotonic()
        r = requests.get(f"{self.gateway}/api", headers={"Authorization": f"Bearer {token or self.token}"},
                         timeout=10)
        return r.status_code, r.text, time.monotonic() - start

    def fault(self, mode: str):
        return make_spec(f"{self.egress}/.well-known/jwks.json", "envoy", self.admin, mode, 120, resolve=False)

    def stat(self, name: str) -> int:
        stats = requests.get(f"{self.admin}/stats", params={"format": "json", "filter": f"^{name}$"},
                             timeout=5).json()["stats"]
        return int(stats[0]["value"]) if stats else -1


def _server(handler: Any) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(params=[False, True], ids=["sync", "async_fetch"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gateway]:
    with running_gateway(tmp_path, async_fetch=request.param) as gw:
        yield gw


@contextlib.contextmanager
def running_gateway(tmp_path: Path, async_fetch: bool = False, jwt_cache_size: int = 0) -> Iterator[Gateway]:
    """A JWKS server, a backend, and one real Envoy with the egress listener and the jwt gateway; always stopped."""
    binary = require_envoy()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key())) | {"kid": "k1", "use": "sig", "alg": "RS256"}
    body = json.dumps({"keys": [jwk]}).encode()
    hits: list[float] = []

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(time.monotonic())
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    class Backend(Jwks):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    servers = [_server(Jwks), _server(Backend)]
    proc = None
    try:
        admin_port, egress_port, gw_port = free_ports(["127.0.0.1"] * 3)
        config = bootstrap(("127.0.0.1", admin_port), ("127.0.0.1", egress_port),
                           ("127.0.0.1", servers[0].server_address[1]))
        add_jwt_gateway(config, ("127.0.0.1", gw_port), ("127.0.0.1", servers[1].server_address[1]), ISSUER,
                        [AUDIENCE], cache_duration_s=CACHE, async_fetch=async_fetch, fetch_timeout_s=1.0,
                        jwt_cache_size=jwt_cache_size)
        path = write_bootstrap(tmp_path / "envoy.json", config)
        with open(tmp_path / "envoy.log", "wb") as log:  # Envoy keeps its own copy of the descriptor
            proc = subprocess.Popen(envoy_argv(binary, path), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        admin = f"http://127.0.0.1:{admin_port}"

        def live() -> bool:
            try:
                return requests.get(f"{admin}/ready", timeout=1).text.strip() == "LIVE"
            except requests.RequestException:
                return False

        assert wait_for(live, timeout=30), (tmp_path / "envoy.log").read_text()[-2000:]
        yield Gateway(admin, f"http://127.0.0.1:{egress_port}", f"http://127.0.0.1:{gw_port}", key, hits)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.mark.parametrize("mode", ["reject", "drop"])
def test_jwt_authn_serves_the_cached_jwks_until_cache_duration_then_fails_closed_with_401(gateway, mode):
    status, _, _ = gateway.call()
    assert status == 200 and gateway.jwks_hits  # the JWKS was fetched through the egress listener
    last_good = gateway.jwks_hits[-1]
    hits = len(gateway.jwks_hits)
    driver = EnvoyDriver()
    spec = gateway.fault(mode)
    driver.apply(spec)
    try:
        status, _, _ = gateway.call()
        if time.monotonic() - last_good < CACHE - 1:  # still inside cache_duration (always, unless very loaded)
            assert status == 200  # the cached JWKS keeps validating
        # after cache_duration every request fails closed: 401, Envoy's own body, no JWKS reached the Authority
        assert wait_for(lambda: gateway.call()[0] == 401, timeout=CACHE + 20, interval=0.5)
        status, text, seconds = gateway.call()
        assert status == 401 and text == FAILED
        if mode == "drop":
            assert seconds >= 0.9  # each refused request waited for the remote_jwks fetch timeout (1 s)
        assert gateway.stat("http.jwt_gateway.jwt_authn.jwks_fetch_failed") >= 1
        counter = "aborts_injected" if mode == "reject" else "delays_injected"
        assert gateway.stat(f"http.jwks_egress.fault.{counter}") >= 1
        assert len(gateway.jwks_hits) == hits
    finally:
        driver.revert(spec)
    # the first request after the restore fetches the JWKS again and passes (async_fetch may retry in between)
    assert wait_for(lambda: gateway.call()[0] == 200, timeout=20, interval=0.5)
    assert len(gateway.jwks_hits) > hits


def test_a_verified_token_cache_keeps_accepting_seen_tokens_after_the_jwks_expired(tmp_path):
    """jwt_cache_config: a token verified before the outage keeps passing after cache_duration (until its own exp),
    while a token not seen before is refused: the verified-token cache outlives the key that verified it."""
    with running_gateway(tmp_path, jwt_cache_size=100) as gateway:
        assert gateway.call()[0] == 200
        driver, spec = EnvoyDriver(), gateway.fault("reject")
        driver.apply(spec)
        try:
            assert wait_for(lambda: gateway.call(gateway.new_token())[0] == 401, timeout=CACHE + 20, interval=0.5)
            assert gateway.call()[0] == 200  # the seen token: still accepted, the JWKS long expired
            assert gateway.stat("http.jwt_gateway.jwt_authn.jwt_cache_hit") >= 1
        finally:
            driver.revert(spec)
