"""A small authenticating reverse proxy on loopback (aiohttp, in a thread) for tests of authenticated backends.

    with AuthProxy(upstream, require={"Authorization": "Bearer t0k", "X-Scope-OrgID": "team-a"}, tls=ca) as p:
        p.url       # https://127.0.0.1:<port> (or http:// without tls)
        p.refused   # how many requests it refused (401)

Every request must carry all the ``require`` headers with exactly those values, else 401 with
``WWW-Authenticate``; accepted requests are forwarded (method, path, query, body) to ``upstream`` — the way Mimir,
Cortex or an auth gateway sit in front of a real Prometheus/Alertmanager. ``make_ca`` writes a CA and a server
certificate for 127.0.0.1 so a test can check CA-bundle verification.
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["AuthProxy", "make_ca"]


def make_ca(directory: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1: {"ca": pem, "cert": pem, "key": pem}."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chaosext test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    out["key"].chmod(0o600)
    return out


class AuthProxy:
    """Reverse proxy that insists on ``require`` headers; see the module docstring."""

    def __init__(self, upstream: str, require: dict[str, str], tls: dict[str, Path] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.require = require
        self.tls = tls
        self.refused = 0
        self.forwarded = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if any(request.headers.get(k) != v for k, v in self.require.items()):
            self.refused += 1
            return web.json_response({"status": "error", "error": "unauthorized"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="test-gateway"'})
        self.forwarded += 1
        assert self._client is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        async with self._client.request(request.method, self.upstream + request.rel_url.path_qs, data=body or None,
                                        headers=headers) as up:
            payload = await up.read()
            return web.Response(status=up.status, body=payload,
                                headers={"Content-Type": up.headers.get("Content-Type", "application/json")})

    async def _start(self) -> None:
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.tls["cert"], self.tls["key"])
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=ctx).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def __enter__(self) -> AuthProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(15)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(15)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
