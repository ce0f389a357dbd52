"""The lab cache's behaviour in every JWKS_FAILURE mode, healthy and each misbehaviour knob, driven by a controllable
clock and a fake fetcher (no network, no real time). Healthy: an error status, an empty or unparseable answer, or a
key set with no key in common never replaces good keys; an unknown kid while the JWKS fails refuses at once and
refreshes in the background; a cold start forgets every key. Knobs: swap (whatever answered replaces the cache),
fetch_inline (a stale lookup waits for a fetch), unknown_kid_storm (a fetch per unknown kid, awaited), pinned (the
first key set for ever)."""
import asyncio

import pytest

from chaosext.lab.jwks_cache import JwksAnswer, JwksCache
from tests.lab.test_jwks_cache import JWK_A, JWK_B, Clock, Fetcher, make, run

ROTATED = {"keys": [JWK_B]}  # a key set with none of the keys in use


class Answering(Fetcher):
    """A fetcher whose JWKS answers an error status with a body (what the impostor's http-error sends)."""

    def __init__(self, payload: object) -> None:
        super().__init__(payload)
        self.status = 200

    async def __call__(self) -> object:
        self.calls += 1
        if self.status != 200:
            raise JwksAnswer(self.status, b"<html>503 Service Unavailable</html>")
        return self.payload


def with_knob(**knobs: bool) -> tuple[JwksCache, Clock, Answering, list[str]]:
    clock, fetcher, fetches = Clock(), Answering({"keys": [JWK_A]}), []
    cache = JwksCache(fetcher, ttl=10, max_stale=100, now=clock, rand=lambda: 0.5,
                      on_fetch=lambda r, d: fetches.append(r), **knobs)
    run(cache.maintain())
    return cache, clock, fetcher, fetches


def answer_past_the_ttl(cache: JwksCache, clock: Clock, fetcher: Answering, answer: object) -> None:
    """The JWKS answers ``answer`` (``"error-status"``: a 503) from now on; the cache refreshes past its TTL."""
    if answer == "error-status":
        fetcher.status = 503
    else:
        fetcher.payload = answer
    clock.t += 9.5
    run(cache.maintain())


@pytest.mark.parametrize("answer", ["error-status", {"keys": []}, b"<html>", b'{"keys": [{"kty": "RSA", "n": "',
                                    ROTATED])
def test_healthy_cache_keeps_its_keys_whatever_the_jwks_answers(answer):
    cache, clock, fetcher, fetches = with_knob()
    answer_past_the_ttl(cache, clock, fetcher, answer)
    assert cache.kids() == ["kid-a"] and fetches[-1] in ("error", "invalid")
    assert run(cache.get_key("kid-a")).key is not None


def test_a_key_set_without_any_key_in_use_is_taken_once_the_cache_expired():
    cache, clock, fetcher, _ = with_knob()
    fetcher.payload = ROTATED
    for _ in range(250):  # 125 s: past max-stale (100 s), the foreign set kept being refused until then
        clock.t += 0.5
        run(cache.maintain())
    assert cache.kids() == ["kid-b"] and cache.state == "fresh"


@pytest.mark.parametrize("answer", ["error-status", {"keys": []}, b"not json", ROTATED])
def test_swap_knob_replaces_the_cache_with_whatever_answered(answer):
    cache, clock, fetcher, _ = with_knob(swap=True)
    answer_past_the_ttl(cache, clock, fetcher, answer)
    found = run(cache.get_key("kid-a"))
    assert found.key is None and cache.kids() == (["kid-b"] if answer is ROTATED else [])


def test_swap_knob_keeps_its_keys_when_nothing_answered():
    cache, clock, fetcher, _ = with_knob(swap=True)
    fetcher.down = True  # unreachable: there is no answer to swap in
    clock.t += 9.5
    run(cache.maintain())
    assert cache.kids() == ["kid-a"]


def test_an_unknown_kid_while_the_jwks_fails_is_refused_at_once_and_refreshed_in_the_background():
    cache, clock, fetcher, _ = with_knob()
    fetcher.down = True
    clock.t += 9.5
    run(cache.maintain())  # a failed refresh: the JWKS is known to fail

    async def lookup() -> object:
        fetcher.gate = asyncio.Event()  # the refresh would hang (a DROP outage)
        found = await asyncio.wait_for(cache.get_key("kid-new"), timeout=1.0)
        fetcher.gate.set()
        return found

    assert run(lookup()).reason == "unknown_kid"


def test_storm_knob_fetches_for_every_unknown_kid_awaited():
    cache, _clock, fetcher, _ = with_knob(unknown_kid_storm=True)
    for _ in range(5):
        run(cache.get_key("kid-new"))
    assert fetcher.calls == 1 + 5  # the healthy cache: one refresh per unknown_kid_interval


def test_fetch_inline_knob_makes_a_stale_lookup_wait_for_the_fetch():
    cache, clock, fetcher, _ = with_knob(fetch_inline=True)
    fetcher.down = True
    clock.t += 12  # past the ttl: stale
    before = fetcher.calls
    assert run(cache.get_key("kid-a")).key is not None
    assert fetcher.calls == before + 1  # the lookup itself fetched (the healthy cache never does while stale)
    healthy, clock2, fetcher2, _ = with_knob()
    fetcher2.down = True
    clock2.t += 12
    before = fetcher2.calls
    run(healthy.get_key("kid-a"))
    assert fetcher2.calls == before


def test_pinned_knob_never_takes_a_new_key():
    cache, clock, fetcher, _ = with_knob(pinned=True)
    fetcher.payload = {"keys": [JWK_A, JWK_B]}  # a rotation with overlap, as an IdP does it
    for _ in range(100):
        clock.t += 0.5
        run(cache.maintain())
    assert run(cache.get_key("kid-b")).key is None and cache.kids() == ["kid-a"] and cache.state == "fresh"


def test_reset_is_a_cold_start_with_no_key_until_the_next_fetch():
    cache, clock, fetcher, _events, _ = make()
    run(cache.maintain())
    cache.reset()
    assert cache.state == "empty" and cache.kids() == []
    fetcher.down = True
    assert run(cache.get_key("kid-a")).reason == "no_keys"
    fetcher.down = False
    clock.t += 5  # past the failed fetch's backoff
    run(cache.maintain())
    assert cache.state == "fresh"
