"""Send the forgery catalogue to the services and judge the answers strictly.

A refusal is a status in ``REFUSED_STATUSES`` (default 401, 403). 2xx is acceptance: a fail-open finding naming
class, service, tenant, route and status. Anything else (404, 429, 5xx, no answer) is inconclusive — the service did
not say "no" to the token, so nothing is proven — and fails the check too, with a message saying which statuses to
allow if that really is the service's refusal.

``probe_round`` does the HTTP (bounded concurrency, a short timeout each, keep-alive per host);
``judge_attempts`` and ``merge_judgments`` are pure. ``KeyServer`` serves the attacker's key documents at the URL
the ``jku``/``x5u`` forgeries name, and counts every fetch (a service that fetched it trusted the token's URL).
"""
from __future__ import annotations

import asyncio
import http.server
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias, TypedDict
from urllib.parse import urlsplit

from chaosext.auth.forgery import CLASSES, Forgery

__all__ = ["probe_round", "judge_attempts", "merge_judgments", "select_round", "coverage", "with_coverage",
           "KeyServer", "WRITE_BODY", "Attempt", "Finding"]

#: one forged request and its answer (``class`` is a keyword, hence the functional form)
Attempt = TypedDict("Attempt", {"class": str, "variant": str, "service": str, "tenant": str, "route": str,
                                "method": str, "status": int, "t": float})
#: an accepted or inconclusive attempt as a judgment lists it: ``at_s`` seconds after the block (None: unknown)
Finding = TypedDict("Finding", {"class": str, "variant": str | None, "service": str | None,
                                "tenant": str | None, "method": str | None, "route": str | None, "status": int,
                                "at_s": float | None})
#: an open keep-alive connection
_Conn: TypeAlias = tuple[asyncio.StreamReader, asyncio.StreamWriter]

#: body of a forged write (a service that accepts it stores this harmless marker)
WRITE_BODY = b'{"chaosext":"forged-token probe; a 2xx here is a fail-open finding"}'
#: findings kept per list in a judgment
KEEP = 10


def select_round(forgeries: list[Forgery], tick: int | None) -> list[Forgery]:
    """Which forgeries a round sends. Forgeries carry their tenant (one catalogue per tenant the run drives).

    ``tick`` None (a live round: baseline, recovery): every class for every tenant — every variant for the first
    tenant, one variant for each other tenant (rotating with the tenant). A watch tick ``k``: every class once,
    class number ``i`` for tenant number ``(k + i) mod N`` (N = the tenants the class has forgeries for) and, for
    that tenant, its next variant: so with N at most the number of classes every tenant is attacked on every tick,
    and every class × tenant pair within N ticks (every variant over the pair's visits)."""
    by_class: dict[str, dict[str, list[Forgery]]] = {}
    for f in forgeries:
        by_class.setdefault(f.name, {}).setdefault(f.tenant, []).append(f)
    chosen: list[Forgery] = []
    for i, per_tenant in enumerate(by_class.values()):
        tenants = list(per_tenant)
        if tick is None:
            for j, tenant in enumerate(tenants):
                variants = per_tenant[tenant]
                chosen.extend(variants if j == 0 else [variants[j % len(variants)]])
        else:
            n = len(tenants)
            variants = per_tenant[tenants[(tick + i) % n]]
            chosen.append(variants[((tick + i) // n) % len(variants)])
    return chosen


def coverage(judgment: Mapping[str, Any], tenants: Iterable[str]) -> dict[str, Any]:
    """How much of the class × tenant matrix a judgment's forged requests covered, against the ``tenants`` the run
    drives: {tenants, attacked, missing (tenants never attacked), pairs, pairs_total}."""
    driven = list(dict.fromkeys(tenants))
    per_class = {name: set(ts) for name, ts in (judgment.get("class_tenants") or {}).items()}
    attacked = set().union(*per_class.values()) if per_class else set()
    return {"tenants": len(driven), "attacked": len(attacked & set(driven)),
            "missing": [t for t in driven if t not in attacked],
            "pairs": sum(len(ts & set(driven)) for ts in per_class.values()),
            "pairs_total": len(per_class) * len(driven)}


def with_coverage(judgment: dict[str, Any], tenants: Iterable[str], no_token: Iterable[str] = (),
                  ticks: int | None = None, tick_seconds: float = 0.0) -> dict[str, Any]:
    """``judgment`` with its ``coverage`` (:func:`coverage`) of the ``tenants`` the run drives; not ok when a driven
    tenant was never attacked (``no_token``: tenants without a valid token to forge from). For the watch's ticks
    (``ticks`` of ``tick_seconds``) the coverage also states the rotation's bound: every class × tenant pair within
    N ticks (N tenants)."""
    cov = coverage(judgment, tenants)
    if ticks is not None:
        cov.update(ticks=ticks, bound_ticks=cov["tenants"], bound_seconds=round(cov["tenants"] * tick_seconds, 1))
    out = {**judgment, "coverage": cov}
    if cov["missing"] and judgment.get("tried"):
        tokenless = [t for t in cov["missing"] if t in set(no_token)]
        shown = ", ".join(cov["missing"][:5]) + (" ..." if len(cov["missing"]) > 5 else "")
        why = f"{len(cov['missing'])} of {cov['tenants']} tenants never attacked ({shown})"
        if tokenless:
            why += f": no valid token for {', '.join(tokenless[:5])} (TOKENS_FILE / the IdP client), so no forgery"
        elif ticks is not None:
            why += f": the outage had {ticks} ticks; the rotation attacks every tenant within {cov['bound_ticks']}"
        out["ok"] = False
        out["why"] = "; ".join(filter(None, [str(judgment.get("why") or ""), why]))
    return out


async def _exchange(conn: _Conn | None, scheme: str, host: str, port: int, request: bytes,
                    ssl_ctx: ssl.SSLContext | None) -> tuple[int, _Conn | None]:
    """One HTTP/1.1 request on ``conn`` (opened when None): (status, the connection if it can be reused)."""
    if conn is None:
        conn = await asyncio.open_connection(host, port, ssl=ssl_ctx if scheme == "https" else None,
                                             server_hostname=host if scheme == "https" else None)
    reader, writer = conn
    writer.write(request)
    await writer.drain()
    line = await reader.readline()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP status line: {line[:60]!r}")
    status = int(parts[1])
    length, chunked, close = None, False, parts[0] == b"HTTP/1.0"
    while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = h.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value
        elif name == "connection":
            close = close or value == "close"
    if chunked:
        while (size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16)) > 0:
            await reader.readexactly(size + 2)
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
    elif length is not None:
        await reader.readexactly(length)
    else:
        await reader.read()
        close = True
    if close:
        writer.close()
        return status, None
    return status, conn


def _close(conn: _Conn | None) -> None:
    if conn is not None:
        conn[1].close()


async def _send_all(jobs: list[tuple[str, str, str, Forgery]], header: str, concurrency: int,
                    timeout: float) -> list[int]:
    """Every (url, method, path, forgery), at most ``concurrency`` at a time, keep-alive per host; 0 = no answer.

    ``concurrency`` workers take the jobs in turn; callers interleave the hosts (see probe_round) so concurrent
    requests go to different services and each host's connection is reused instead of opened per request."""
    idle: dict[tuple[str, str, int], list[_Conn]] = {}
    ssl_ctx = ssl.create_default_context()
    parsed: dict[tuple[str, str], tuple[str, str, int, bytes]] = {}
    results = [0] * len(jobs)
    todo = iter(enumerate(jobs))

    def route(url: str, method: str, path: str) -> tuple[str, str, int, bytes]:
        got = parsed.get((url, method + path))
        if got is None:
            u = urlsplit(url + path)
            scheme, host = u.scheme, u.hostname or ""
            target = (u.path or "/") + (f"?{u.query}" if u.query else "")
            got = parsed[(url, method + path)] = (
                scheme, host, u.port or (443 if scheme == "https" else 80),
                f"{method} {target} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
                f"X-Chaosext-Probe: forgery\r\nUser-Agent: chaosext-forgery\r\n".encode())
        return got

    async def one(url: str, method: str, path: str, forgery: Forgery) -> int:
        scheme, host, port, head = route(url, method, path)
        body = WRITE_BODY if method != "GET" else b""
        tenant_line = f"{header}: {forgery.tenant}\r\n" if header else ""
        request = head + (f"Authorization: Bearer {forgery.token}\r\n{tenant_line}"
                          f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        pool = idle.setdefault((scheme, host, port), [])
        for attempt in (0, 1):  # a reused keep-alive connection the server had closed: once more on a new one
            conn = pool.pop() if pool and attempt == 0 else None
            try:
                async with asyncio.timeout(timeout):
                    status, back = await _exchange(conn, scheme, host, port, request, ssl_ctx)
            except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError, TimeoutError):
                _close(conn)
                if conn is not None and attempt == 0:
                    continue
                return 0
            if back is not None:
                pool.append(back)
            return status
        return 0

    async def worker() -> None:
        for i, job in todo:
            results[i] = await one(*job)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(jobs))))))
        return results
    finally:
        for conns in idle.values():
            for c in conns:
                _close(c)


def probe_round(services: dict[str, str], forgeries: list[Forgery], tenant_header: str,
                routes: dict[str, tuple[tuple[str, str], ...]], tick: int | None = None,
                concurrency: int = 32, timeout: float = 5.0) -> list[Attempt]:
    """Send the forgeries (all, or this tick's rotation: :func:`select_round`) to every route of every service
    (``routes``: per service, its (method, path) forgery routes; a ``tenant_header`` of '' sends the tenant in the
    token only).

    One asyncio loop with a small HTTP/1.1 client (keep-alive per host: a tick of 1700 requests must not cost
    seconds of CPU), at most ``concurrency`` requests in flight, each answered within ``timeout`` seconds or 0.
    Returns one attempt a request: {class, variant, service, tenant, route, method, status (0 = no answer), t}."""
    chosen = select_round(forgeries, tick)
    attempts: list[Attempt] = []
    jobs: list[tuple[str, str, str, Forgery]] = []
    per_service_index: list[int] = []
    for service, url in services.items():
        k = 0
        for method, path in routes.get(service, ()):
            for f in chosen:
                attempts.append({"class": f.name, "variant": f.variant, "service": service, "tenant": f.tenant,
                                 "route": path, "method": method, "status": 0, "t": 0.0})  # both set below
                jobs.append((url.rstrip("/"), method, path, f))
                per_service_index.append(k)
                k += 1
    # interleave the services: concurrent requests then go to different hosts and reuse each host's connection
    order = sorted(range(len(jobs)), key=lambda i: (per_service_index[i], i))
    statuses = asyncio.run(_send_all([jobs[i] for i in order], tenant_header, concurrency, timeout)) if jobs else []
    now = time.time()
    for i, status in zip(order, statuses, strict=True):
        attempts[i]["status"], attempts[i]["t"] = status, now
    return attempts


def _empty() -> dict[str, Any]:
    return {"tried": 0, "refused": 0, "accepted": 0, "inconclusive": 0, "first_accepted_s": None}


def judge_attempts(attempts: Iterable[Mapping[str, Any]], refused_statuses: Iterable[int],
                   skipped: dict[str, str] | None = None, block_time: float | None = None) -> dict[str, Any]:
    """Per class: tried, refused, accepted, inconclusive, first acceptance (seconds after ``block_time``).

    ``ok`` only when something was tried and every answer was a refusal. ``accepted``/``inconclusive`` list the
    first findings (class, variant, service, tenant, method, route, status, at_s)."""
    refused = set(int(s) for s in refused_statuses)
    classes: dict[str, dict[str, Any]] = {}
    accepted: list[Finding] = []
    inconclusive: list[Finding] = []
    class_tenants: dict[str, set[str]] = {}
    for a in attempts:
        c = classes.setdefault(a["class"], _empty())
        c["tried"] += 1
        class_tenants.setdefault(a["class"], set()).add(str(a.get("tenant")))
        status = int(a.get("status") or 0)
        at = round(a["t"] - block_time, 1) if block_time is not None and a.get("t") is not None else None
        finding: Finding = {"class": a["class"], "variant": a.get("variant"), "service": a.get("service"),
                            "tenant": a.get("tenant"), "method": a.get("method"), "route": a.get("route"),
                            "status": status, "at_s": at}
        if status in refused:
            c["refused"] += 1
        elif 200 <= status < 300:
            c["accepted"] += 1
            if at is not None and (c["first_accepted_s"] is None or at < c["first_accepted_s"]):
                c["first_accepted_s"] = at
            if len(accepted) < KEEP:
                accepted.append(finding)
        else:
            c["inconclusive"] += 1
            if len(inconclusive) < KEEP:
                inconclusive.append(finding)
    return _finish(classes, accepted, inconclusive, skipped or {}, sorted(refused), class_tenants)


def merge_judgments(judgments: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add up several judgments (e.g. one a watch tick) into one."""
    classes: dict[str, dict[str, Any]] = {}
    accepted: list[Finding] = []
    inconclusive: list[Finding] = []
    skipped: dict[str, str] = {}
    refused: list[int] = []
    class_tenants: dict[str, set[str]] = {}
    for j in judgments:
        refused = j.get("refused_statuses") or refused
        for name, tenants in (j.get("class_tenants") or {}).items():
            class_tenants.setdefault(name, set()).update(tenants)
        skipped.update(j.get("skipped") or {})
        for name, c in (j.get("classes") or {}).items():
            if c.get("skipped"):
                continue
            m = classes.setdefault(name, _empty())
            for k in ("tried", "refused", "accepted", "inconclusive"):
                m[k] += c.get(k, 0)
            first = c.get("first_accepted_s")
            if first is not None and (m["first_accepted_s"] is None or first < m["first_accepted_s"]):
                m["first_accepted_s"] = first
        accepted.extend(j.get("accepted") or [])
        inconclusive.extend(j.get("inconclusive") or [])
    return _finish(classes, accepted[:KEEP], inconclusive[:KEEP], skipped, refused, class_tenants)


def _finish(classes: dict[str, dict[str, Any]], accepted: list[Finding], inconclusive: list[Finding],
            skipped: dict[str, str], refused: list[int], class_tenants: dict[str, set[str]]) -> dict[str, Any]:
    ordered = {n: classes[n] for n in list(CLASSES) + sorted(set(classes) - set(CLASSES)) if n in classes}
    for name, reason in skipped.items():
        if name not in ordered:
            ordered[name] = {"skipped": reason}
    tried = sum(c.get("tried", 0) for c in ordered.values())
    n_acc = sum(c.get("accepted", 0) for c in ordered.values())
    n_inc = sum(c.get("inconclusive", 0) for c in ordered.values())
    why: list[str] = []
    if n_acc:
        names = sorted({a["class"] for a in accepted} | {n for n, c in ordered.items() if c.get("accepted")})
        first: Mapping[str, Any] = accepted[0] if accepted else {}
        why.append(f"FAIL-OPEN: {n_acc} forged request(s) accepted, classes {', '.join(names)}; first: "
                   f"{first.get('class')} ({first.get('variant')}) on {first.get('service')} tenant "
                   f"{first.get('tenant')} {first.get('method')} {first.get('route')} -> {first.get('status')}")
    if n_inc:
        statuses = sorted({i["status"] for i in inconclusive})
        why.append(f"INCONCLUSIVE: {n_inc} forged request(s) got neither a refusal ({'/'.join(map(str, refused))}) "
                   f"nor 2xx but {statuses} (0 = no answer); if that status really is the service's refusal of a bad "
                   f"token, add it to REFUSED_STATUSES (e.g. REFUSED_STATUSES={','.join(map(str, refused))},"
                   f"{next((s for s in statuses if s), 404)}), else fix the route (FORGERY_ROUTES) or the service")
    if not tried:
        why.append("no forged request was sent")
    return {"ok": tried > 0 and not n_acc and not n_inc, "tried": tried, "accepted_count": n_acc,
            "inconclusive_count": n_inc, "classes": ordered, "accepted": accepted, "inconclusive": inconclusive,
            "skipped": dict(skipped), "refused_statuses": list(refused), "why": "; ".join(why),
            "class_tenants": {n: sorted(class_tenants[n]) for n in ordered if n in class_tenants}}


class KeyServer:
    """Serves ``documents`` ({path: (content type, body)}) on ``host:port`` in a thread; ``fetches`` counts hits.

    Use as a context manager. The jku/x5u forgeries point here: any fetch means a service followed a key URL the
    token named."""

    def __init__(self, documents: dict[str, tuple[str, bytes]], host: str = "127.0.0.1", port: int = 0) -> None:
        self.documents = documents
        self.fetches: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches.append(self.path)
                doc = server.documents.get(self.path.split("?")[0])
                if doc is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", doc[0])
                self.send_header("Content-Length", str(len(doc[1])))
                self.end_headers()
                self.wfile.write(doc[1])

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="chaosext-keyserver", daemon=True)  # quick shutdown: one per tick

    def __enter__(self) -> KeyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
