"""A stand-in tenant service for the load tests that do not need the lab (real aiohttp process on loopback).

Answers OIDC discovery and the client-credentials ``POST /token`` like the Authority (client ``fake-client`` /
``fake-secret`` by HTTP Basic or in the form; anything else is 401 invalid_client), and every other path like a tenant
service that insists on a bearer token and the tenant header (401 without them). ``GET /stats`` returns what it saw.
Run: ``python3 fake_service.py [--header X-StellaOps-Tenant] [--delay 0]``; it prints its port on the first line.
"""
import argparse
import asyncio
import base64
import socket
import sys
from collections import Counter

from aiohttp import web

CLIENT_ID, CLIENT_SECRET = "fake-client", "fake-secret"


def main() -> None:
    """Bind a free loopback port, print it, serve until killed."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--header", default="X-StellaOps-Tenant")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait before answering")
    ap.add_argument("--status", type=int, default=200, help="status of the service routes")
    args = ap.parse_args()
    seen: Counter = Counter()
    tenants: Counter = Counter()

    async def discovery(request: web.Request) -> web.Response:
        return web.json_response({"token_endpoint": f"http://{request.host}/token"})

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        auth = request.headers.get("Authorization", "")
        creds = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else \
            f"{form.get('client_id')}:{form.get('client_secret')}"
        if creds != f"{CLIENT_ID}:{CLIENT_SECRET}":
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        return web.json_response({"access_token": f"tok-{form['tenant']}", "expires_in": 300})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"requests": {"|".join(k): v for k, v in seen.items()}, "tenants": dict(tenants)})

    async def service(request: web.Request) -> web.Response:
        tenant = request.headers.get(args.header, "")
        auth = request.headers.get("Authorization", "")
        ok = bool(tenant) and auth == f"Bearer tok-{tenant}"
        seen[(request.method, request.path.rsplit("/", 1)[0] if request.path[-1].isdigit() else request.path,
              "ok" if ok else "rejected")] += 1
        tenants[tenant] += 1
        if args.delay:
            await asyncio.sleep(args.delay)
        return web.Response(status=args.status if ok else 401, text="{}")

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_post("/token", token)
    app.router.add_get("/stats", stats)
    app.router.add_route("*", "/{tail:.*}", service)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None)


if __name__ == "__main__":
    sys.exit(main())
