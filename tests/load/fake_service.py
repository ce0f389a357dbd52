"""A stand-in tenant service for the load tests that do not need the lab (real aiohttp process on loopback).

Answers OIDC discovery and the client-credentials ``POST /token`` like the Authority (client ``fake-client`` /
``fake-secret`` by HTTP Basic or in the form; anything else is 401 invalid_client), and every other path like a tenant
service that insists on a bearer token and the tenant header (401 without them; ``--header ''``: the tenant travels
only in the token). ``GET /stats`` returns what it saw: requests by ``METHOD|path|ok`` (or ``|rejected``; the path as
sent, ids included), tenants, and whether a JSON body came with the JSON content type.
Run: ``python3 fake_service.py [--header X-Tenant] [--delay 0]``; it prints its port on the first line.
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
    ap.add_argument("--header", default="X-Tenant", help="the tenant header ('': none, the token names the tenant)")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait before answering")
    ap.add_argument("--status", type=int, default=200, help="status of the service routes")
    args = ap.parse_args()
    seen: Counter = Counter()
    tenants: Counter = Counter()
    bodies: Counter = Counter()

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
        return web.json_response({"requests": {"|".join(k): v for k, v in seen.items()}, "tenants": dict(tenants),
                                  "bodies": {"|".join(k): v for k, v in bodies.items()}})

    async def service(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if args.header:
            tenant = request.headers.get(args.header, "")
            ok = bool(tenant) and auth == f"Bearer tok-{tenant}"
        else:
            tenant = auth.removeprefix("Bearer tok-") if auth.startswith("Bearer tok-") else ""
            ok = bool(tenant)
        seen[(request.method, request.path, "ok" if ok else "rejected")] += 1
        tenants[tenant] += 1
        body = await request.text()
        if body:
            bodies[(request.method, request.path.rstrip("0123456789"), body, request.content_type)] += 1
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
