"""The JWKS cache state machine, driven by a controllable clock and a fake fetcher (no network, no real time)."""
import asyncio
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from chaosext.lab.audit import AuditLog, trace_id_from
from chaosext.lab.jwks_cache import InvalidJwks, JwksCache, VerifiedTokenCache, parse_jwks
from chaosext.lab.tenancy import OVERFLOW, RateLimiter, TenantLabels


def make_jwk(kid: str) -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return jwk


JWK_A = make_jwk("kid-a")
JWK_B = make_jwk("kid-b")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Fetcher:
    """Returns ``payload``, or raises while ``down``; counts calls; can be gated to hold a fetch in flight."""

    def __init__(self, payload: object) -> None:
        self.payload = payload
        self.down = False
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> object:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ConnectionError("authority unreachable")
        return self.payload


def make(mode: str = "lkg", ttl: float = 10, max_stale: float = 40, payload: object = None):
    clock, fetcher, events, fetches = Clock(), Fetcher(payload or {"keys": [JWK_A]}), [], []
    cache = JwksCache(fetcher, ttl=ttl, max_stale=max_stale, mode=mode, now=clock, rand=lambda: 0.5,
                      on_event=lambda a, r: events.append(a), on_fetch=lambda r, d: fetches.append(r))
    return cache, clock, fetcher, events, fetches


def run(coro):
    return asyncio.run(coro)


def test_cold_start_fetches_once_and_is_fresh():
    cache, _clock, fetcher, events, fetches = make()
    assert cache.state == "empty"
    found = run(cache.get_key("kid-a"))
    assert found.key is not None and found.source == "fresh"
    assert (cache.state, fetcher.calls, fetches, events) == ("fresh", 1, ["success"], [])


def test_refresh_ahead_happens_before_ttl():
    cache, clock, fetcher, *_ = make(ttl=10)
    run(cache.maintain())
    assert fetcher.calls == 1
    clock.t += 7.0  # before the refresh-ahead point (80-90 % of ttl)
    run(cache.maintain())
    assert fetcher.calls == 1
    clock.t += 2.0  # 9 s: past the jittered refresh point (8.5 s with rand 0.5), still before the ttl
    run(cache.maintain())
    assert fetcher.calls == 2 and cache.state == "fresh"
    assert cache.age() == 0.0


def test_outage_serves_stale_keys_and_degrades_once_then_recovers():
    cache, clock, fetcher, events, fetches = make(ttl=10, max_stale=100)
    run(cache.maintain())
    fetcher.down = True
    for _ in range(60):  # 30 s of failing refreshes, ticking every 0.5 s
        clock.t += 0.5
        run(cache.maintain())
    assert cache.state == "stale"
    found = run(cache.get_key("kid-a"))
    assert found.key is not None and found.source == "stale"
    assert events == ["auth.degraded"]
    assert "error" in fetches and cache.last_fetch_ok is False
    # backoff: far fewer fetches than ticks
    assert fetcher.calls < 30
    fetcher.down = False
    for _ in range(10):
        clock.t += 0.5
        run(cache.maintain())
    assert cache.state == "fresh"
    assert events == ["auth.degraded", "auth.recovered"]


def expire(cache, clock, fetcher, ticks: int = 12) -> None:
    """Fetch once, then let the authority fail for ``ticks`` 0.5 s ticks (default 6 s: past max-stale of
    ``make(2, 4)``); the cache must then be expired."""
    run(cache.maintain())
    fetcher.down = True
    for _ in range(ticks):
        clock.t += 0.5
        run(cache.maintain())
    assert cache.state == "expired"


def test_hard_expiry_fails_closed():
    cache, clock, fetcher, events, _ = make(ttl=2, max_stale=4)
    expire(cache, clock, fetcher)
    found = run(cache.get_key("kid-a"))
    assert found.key is None and found.reason == "no_keys"
    assert not cache.usable("kid-a")
    assert events == ["auth.degraded", "auth.expired"]


def test_expired_cache_fails_closed_at_once_while_the_authority_is_known_down():
    """Past max-stale with fetches failing, a lookup must not wait on a fetch (a DROP outage makes each one a
    timeout): the refresh task retries on its backoff, requests get no_keys immediately, and recover with it."""
    cache, clock, fetcher, *_ = make(ttl=2, max_stale=4)
    expire(cache, clock, fetcher)

    async def lookup_while_a_fetch_hangs() -> tuple[object, int]:
        fetcher.gate = asyncio.Event()  # the next fetch hangs like a dropped connection
        clock.t += 60  # the backoff allows a new attempt
        background = asyncio.ensure_future(cache.maintain())
        await asyncio.sleep(0)
        found = await asyncio.wait_for(cache.get_key("kid-a"), timeout=1.0)
        fetcher.down = False
        fetcher.gate.set()
        await background
        return found, fetcher.calls

    calls_before = fetcher.calls
    found, calls = run(lookup_while_a_fetch_hangs())
    assert found.key is None and found.reason == "no_keys"
    assert calls == calls_before + 1  # only the refresh task fetched
    fetcher.gate = None
    assert run(cache.get_key("kid-a")).key is not None and cache.state == "fresh"


def test_cold_start_lookups_wait_for_the_first_fetch():
    cache, _clock, fetcher, *_ = make()

    async def two_lookups() -> list:
        fetcher.gate = asyncio.Event()
        pending = [asyncio.ensure_future(cache.get_key("kid-a")) for _ in range(2)]
        await asyncio.sleep(0)
        fetcher.gate.set()
        return await asyncio.gather(*pending)

    assert all(f.key is not None for f in run(two_lookups())) and fetcher.calls == 1


def test_unknown_kid_refresh_is_rate_limited():
    cache, clock, fetcher, *_ = make()
    run(cache.get_key("kid-a"))
    assert fetcher.calls == 1
    found = run(cache.get_key("kid-x"))
    assert (found.key, found.reason, fetcher.calls) == (None, "unknown_kid", 2)
    clock.t += 1.0
    for _ in range(20):
        run(cache.get_key("kid-x"))
    assert fetcher.calls == 2
    # a rotated key appears: the next allowed unknown-kid refresh picks it up
    fetcher.payload = {"keys": [JWK_A, JWK_B]}
    clock.t += 5.0
    found = run(cache.get_key("kid-b"))
    assert found.key is not None and fetcher.calls == 3


@pytest.mark.parametrize("bad", [{"keys": []}, {"nokeys": 1}, b"not json", {"keys": [{"kty": "EC", "kid": "e"}]},
                                 {"keys": [dict(JWK_B, alg="HS256")]}])
def test_bad_payload_keeps_old_keys(bad):
    cache, clock, fetcher, _events, fetches = make(ttl=10, max_stale=100)
    run(cache.maintain())
    fetcher.payload = bad
    clock.t += 9.5
    run(cache.maintain())
    assert fetches == ["success", "invalid"]
    assert cache.kids() == ["kid-a"]
    assert run(cache.get_key("kid-a")).key is not None


def test_single_flight():
    cache, _clock, fetcher, *_ = make()

    async def scenario():
        fetcher.gate = asyncio.Event()
        lookups = [asyncio.create_task(cache.get_key("kid-a")) for _ in range(50)]
        await asyncio.sleep(0)
        fetcher.gate.set()
        return await asyncio.gather(*lookups)

    results = run(scenario())
    assert fetcher.calls == 1
    assert all(r.key is not None for r in results)


def test_hard_ttl_mode_has_no_last_known_good():
    cache, clock, fetcher, events, _ = make(mode="hard-ttl", ttl=10, max_stale=100)
    expire(cache, clock, fetcher, ticks=22)  # 11 s: past the 10 s TTL, far within max-stale
    assert run(cache.get_key("kid-a")).reason == "no_keys"
    assert events == ["auth.expired"]


def test_none_mode_fetches_on_every_lookup():
    cache, _clock, fetcher, _events, _ = make(mode="none")
    for _ in range(5):
        assert run(cache.get_key("kid-a")).key is not None
    assert fetcher.calls == 5
    fetcher.down = True
    assert run(cache.get_key("kid-a")).reason == "no_keys"
    assert cache.state == "expired"


def test_verified_token_cache_never_outlives_its_key():
    cache, clock, fetcher, *_ = make(ttl=2, max_stale=4)
    wall = Clock()
    tokens = VerifiedTokenCache(cache, ttl=30, wall=wall)
    run(cache.maintain())
    tokens.put("tok", {"exp": wall.t + 3600, "tenant": "t01"}, "kid-a")
    assert tokens.get("tok") == {"exp": wall.t + 3600, "tenant": "t01"}
    # the kid is rotated out of the JWKS (after an overlap, as an IdP rotates): the entry goes at once
    fetcher.payload = {"keys": [JWK_A, JWK_B]}
    clock.t += 1.9
    run(cache.maintain())
    fetcher.payload = {"keys": [JWK_B]}
    clock.t += 1.9
    run(cache.maintain())
    assert cache.kids() == ["kid-b"]
    assert tokens.get("tok") is None
    # the cache expires: entries for a still-published kid go too
    tokens.put("tok2", {"exp": wall.t + 3600}, "kid-b")
    fetcher.down = True
    for _ in range(10):
        clock.t += 0.5
        run(cache.maintain())
    assert cache.state == "expired"
    assert tokens.get("tok2") is None


def test_verified_token_cache_honours_token_exp():
    cache, _clock, _fetcher, *_ = make()
    wall = Clock()
    tokens = VerifiedTokenCache(cache, ttl=30, wall=wall)
    run(cache.maintain())
    tokens.put("tok", {"exp": wall.t + 5}, "kid-a")
    wall.t += 5
    assert tokens.get("tok") is None


def test_parse_jwks_rejects_unusable_documents():
    with pytest.raises(InvalidJwks):
        parse_jwks(json.dumps({"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "zz!"}]}))
    assert list(parse_jwks(json.dumps({"keys": [JWK_A, {"kty": "oct"}]}))) == ["kid-a"]


def test_rate_limiter_and_tenant_labels():
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, now=clock)
    assert [limiter.allow("t") for _ in range(5)] == [True, True, True, False, False]
    clock.t += 1.0
    assert [limiter.allow("t") for _ in range(3)] == [True, True, False]
    assert limiter.allow("other")
    overflow = []
    labels = TenantLabels(2, on_overflow=lambda: overflow.append(1))
    assert [labels.label(t) for t in ("a", "b", "c", "a", "d")] == ["a", "b", OVERFLOW, "a", OVERFLOW]
    assert len(overflow) == 2 and labels.known_or("zzz") != "zzz"


def test_audit_lines_and_flood_limit(tmp_path):
    clock = Clock()
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path), "policy", rate=1, burst=2, now=clock)
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    results = [audit.request("auth.rejected", "t01", "u", "GET /x", "expired", tp) for _ in range(5)]
    audit.system("auth.degraded", "degraded", "jwks:http://a")  # never limited
    audit.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert results == [True, True, False, False, False] and audit.suppressed == 3
    assert [line["action"] for line in lines] == ["auth.rejected", "auth.rejected", "auth.degraded"]
    assert list(lines[0]) == ["timestamp", "service", "tenant", "subject", "action", "resource", "result", "traceId"]
    assert lines[0]["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert lines[2]["tenant"] == "*" and lines[2]["subject"] == "system"
    assert len(trace_id_from("garbage")) == 32


def test_no_refetch_after_failure_knob_never_recovers():
    """The misbehaviour knob behind the recovery check: once a fetch failed, the cache never fetches again, so it
    stays stale (then expired) after the authority is back — the system the experiment's recovery must catch."""
    cache, clock, fetcher, events, _ = make(ttl=10, max_stale=100)
    cache.refetch_after_failure = False
    run(cache.maintain())
    fetcher.down = True
    for _ in range(30):
        clock.t += 0.5
        run(cache.maintain())
    calls = fetcher.calls
    fetcher.down = False
    for _ in range(40):
        clock.t += 0.5
        run(cache.maintain())
    assert fetcher.calls == calls and cache.state == "stale" and events == ["auth.degraded"]
