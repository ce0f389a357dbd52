"""Strict judging of forged requests: refusals only in REFUSED_STATUSES, 2xx acceptance, the rest inconclusive;
and one round against a real local HTTP server (routes, tenants, rotation, key server)."""
from __future__ import annotations

import http.server
import re
import socketserver
import threading
from typing import ClassVar

import pytest
import requests

from chaosext.auth.forgery import Forgery
from chaosext.auth.judge import (
    KeyServer,
    judge_attempts,
    merge_judgments,
    probe_round,
    select_round,
    with_coverage,
)
from chaosext.core.config import parse_routes


def _a(cls: str, status: int, t: float = 110.0, service: str = "policy") -> dict:
    return {"class": cls, "variant": "v", "service": service, "tenant": "t01", "route": "/api/v1/policies",
            "method": "GET", "status": status, "t": t}


def test_only_listed_statuses_are_refusals() -> None:
    j = judge_attempts([_a("alg-none", 401), _a("alg-none", 403), _a("jku", 404), _a("x5c", 0), _a("x5c", 503)],
                       (401, 403), {"x5u": "switched off by FORGERY_SKIP"}, block_time=100.0)
    assert j["ok"] is False and j["accepted_count"] == 0 and j["inconclusive_count"] == 3
    assert j["classes"]["alg-none"] == {"tried": 2, "refused": 2, "accepted": 0, "inconclusive": 0,
                                        "first_accepted_s": None}
    assert j["classes"]["x5u"] == {"skipped": "switched off by FORGERY_SKIP"}
    assert "REFUSED_STATUSES=401,403,404" in j["why"] and "INCONCLUSIVE" in j["why"]


def test_2xx_is_acceptance_naming_class_service_tenant_route_status() -> None:
    j = judge_attempts([_a("alg-none", 401), _a("expired", 200, t=107.5, service="vuln"), _a("expired", 201, t=104)],
                       (401, 403), block_time=100.0)
    assert j["ok"] is False and j["accepted_count"] == 2
    assert j["classes"]["expired"]["first_accepted_s"] == 4.0
    first = j["accepted"][0]
    assert (first["class"], first["service"], first["tenant"], first["route"], first["status"]) == (
        "expired", "vuln", "t01", "/api/v1/policies", 200)
    assert j["why"].startswith("FAIL-OPEN") and "expired" in j["why"]


def test_all_refused_passes_and_nothing_tried_fails() -> None:
    assert judge_attempts([_a("alg-none", 401)], (401,))["ok"] is True
    assert judge_attempts([], (401,))["ok"] is False


def test_merge_adds_up_ticks() -> None:
    one = judge_attempts([_a("alg-none", 401), _a("jku", 200, t=120)], (401, 403), {"x5u": "off"}, 100.0)
    two = judge_attempts([_a("alg-none", 401), _a("jku", 200, t=105)], (401, 403), {"x5u": "off"}, 100.0)
    m = merge_judgments([one, two])
    assert m["classes"]["alg-none"]["tried"] == 2 and m["classes"]["jku"]["accepted"] == 2
    assert m["classes"]["jku"]["first_accepted_s"] == 5.0 and m["classes"]["x5u"] == {"skipped": "off"}
    assert m["ok"] is False and m["refused_statuses"] == [401, 403]


def test_rotation_sends_every_class_each_tick_and_every_variant_over_ticks() -> None:
    fs = [Forgery("a", str(i), "tok", "t01", "") for i in range(3)] + [Forgery("b", "0", "tok", "t01", "")]
    assert [f.name for f in select_round(fs, 0)] == ["a", "b"]
    assert {select_round(fs, t)[0].variant for t in range(3)} == {"0", "1", "2"}
    assert select_round(fs, None) == fs


TENANTS = ("t01", "t02", "t03")
PER_TENANT = [Forgery(c, v, f"tok-{c}{v}-{t}", t, "") for t in TENANTS
              for c, variants in (("a", ("0", "1")), ("b", ("0",)), ("c", ("0",))) for v in variants]


def test_rotation_attacks_every_tenant_every_tick_and_every_pair_within_n_ticks() -> None:
    """One catalogue per tenant: a tick sends every class once, class i for tenant (tick + i) mod N, so with N
    tenants and at least N classes every tenant is attacked on every tick and every class x tenant pair within N
    ticks, each pair's variants over its visits; a live round covers every pair and every variant."""
    for k in range(5):
        tick = select_round(PER_TENANT, k)
        assert sorted(f.name for f in tick) == ["a", "b", "c"] and {f.tenant for f in tick} == set(TENANTS)
    pairs = {(f.name, f.tenant) for k in range(3) for f in select_round(PER_TENANT, k)}
    assert pairs == {(c, t) for c in "abc" for t in TENANTS}
    assert {f.variant for k in range(6) for f in select_round(PER_TENANT, k) if (f.name, f.tenant) == ("a", "t02")} \
        == {"0", "1"}
    live = select_round(PER_TENANT, None)
    assert {(f.name, f.tenant) for f in live} == pairs
    assert {f.variant for f in live if f.name == "a"} == {"0", "1"} and len(live) == 3 * 3 + 1


def test_coverage_states_the_bound_and_fails_for_a_tenant_never_attacked() -> None:
    one_tick = judge_attempts([{**_a(f.name, 401), "tenant": f.tenant} for f in select_round(PER_TENANT, 0)], (401,))
    j = with_coverage(one_tick, TENANTS, ticks=1, tick_seconds=5)
    assert j["ok"] is True and j["coverage"] == {"tenants": 3, "attacked": 3, "missing": [], "pairs": 3,
                                                 "pairs_total": 9, "ticks": 1, "bound_ticks": 3,
                                                 "bound_seconds": 15.0}
    four = with_coverage(one_tick, (*TENANTS, "t04"), ["t04"])
    assert four["ok"] is False and four["coverage"]["missing"] == ["t04"]
    assert "1 of 4 tenants never attacked (t04): no valid token for t04" in four["why"]
    merged = merge_judgments([judge_attempts([{**_a(f.name, 401), "tenant": f.tenant}
                                              for f in select_round(PER_TENANT, k)], (401,)) for k in range(3)])
    assert with_coverage(merged, TENANTS, ticks=3, tick_seconds=5)["coverage"]["pairs"] == 9


def test_routes_parse_and_bad_entries_say_what_to_do() -> None:
    assert parse_routes("policy=GET /a|POST /b;vuln=PUT /c/1") == {
        "policy": (("GET", "/a"), ("POST", "/b")), "vuln": (("PUT", "/c/1"),)}
    with pytest.raises(ValueError, match="METHOD /path"):
        parse_routes("policy=/a")


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str | None, ...]]] = []

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.seen.append((self.command, self.path, self.headers.get("X-Tenant"),
                          self.headers.get("Authorization")))
        self.send_response(401 if self.command == "GET" else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


def test_probe_round_sends_read_and_write_with_the_real_tenant() -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        fs = [Forgery("alg-none", "none", "aaa.bbb.", "t02", "")]
        routes = {"policy": (("GET", "/api/v1/policies"), ("POST", "/api/v1/policies")),
                  "gone": (("GET", "/"), ("POST", "/"))}
        attempts = probe_round({"policy": url, "gone": "http://127.0.0.1:9"}, fs, "X-Tenant", routes, tick=0,
                               timeout=2.0)
    finally:
        srv.shutdown()
        srv.server_close()
    got = {(a["service"], a["method"], a["route"]): a["status"] for a in attempts}
    assert got == {("policy", "GET", "/api/v1/policies"): 401, ("policy", "POST", "/api/v1/policies"): 200,
                   ("gone", "GET", "/"): 0, ("gone", "POST", "/"): 0}
    assert {(m, p, t, a) for m, p, t, a in _Recorder.seen} == {
        ("GET", "/api/v1/policies", "t02", "Bearer aaa.bbb."), ("POST", "/api/v1/policies", "t02", "Bearer aaa.bbb.")}
    j = judge_attempts(attempts, (401, 403))
    assert j["accepted_count"] == 1 and j["inconclusive_count"] == 2


def test_without_a_tenant_header_the_tenant_travels_only_in_the_token() -> None:
    """TENANT_HEADER none: the forged requests carry no tenant header at all (not a line with an empty header name,
    which a strict service refuses with 400 for the wrong reason). Read from the raw bytes on the wire: Python's own
    HTTP server would drop such a line silently."""
    heads: list[bytes] = []

    class Raw(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += self.rfile.readline()
            heads.append(head)
            self.wfile.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Raw) as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            attempts = probe_round({"orders": f"http://127.0.0.1:{srv.server_address[1]}"},
                                   [Forgery("alg-none", "none", "aaa.bbb.", "t02", "")], "",
                                   {"orders": (("GET", "/v2/orders"),)}, timeout=2.0)
        finally:
            srv.shutdown()
    assert [(a["route"], a["status"]) for a in attempts] == [("/v2/orders", 401)]
    (head,) = heads
    lines = head.decode().split("\r\n")[1:-2]
    assert "Authorization: Bearer aaa.bbb." in lines and all(re.match(r"[!-9;-~]+: ", x) for x in lines), lines
    assert b"t02" not in head


def test_key_server_serves_and_counts_fetches() -> None:
    with KeyServer({"/jwks.json": ("application/json", b'{"keys":[]}')}) as ks:
        assert requests.get(ks.url + "/jwks.json", timeout=5).json() == {"keys": []}
        assert requests.get(ks.url + "/nope", timeout=5).status_code == 404
    assert ks.fetches == ["/jwks.json", "/nope"]


class _KeepAlive(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive; GET answers chunked 401, POST 403 with a body; every 5th request per connection the
    server drops the connection after answering without saying so (an idle-timeout close)."""
    protocol_version = "HTTP/1.1"
    connections = 0

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1
        self.served = 0

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.served += 1
        if self.command == "GET":
            self.send_response(401)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n3;x=1\r\nabc\r\n0\r\n\r\n")
        else:
            self.send_response(403)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no")
        if self.served % 5 == 0:
            self.close_connection = True

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


def test_keep_alive_chunked_and_server_closed_connections_are_all_answers() -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        fs = [Forgery("alg-none", str(i), "aaa.bbb.", "t01", "") for i in range(60)]
        attempts = probe_round({"policy": f"http://127.0.0.1:{srv.server_address[1]}"}, fs, "X-Tenant",
                               {"policy": (("GET", "/p"), ("POST", "/p"))}, tick=None, concurrency=4, timeout=5.0)
    finally:
        srv.shutdown()
        srv.server_close()
    statuses = [(a["method"], a["status"]) for a in attempts]
    assert statuses.count(("GET", 401)) == 60 and statuses.count(("POST", 403)) == 60, statuses
    assert _KeepAlive.connections < 60  # connections were reused
