"""JWKS cache for one issuer, and the verified-token cache that sits in front of it.

Pure logic: the clock, the random source and the fetcher are injected, so the state machine is unit-testable
without a network or real time. The service drives it with :meth:`JwksCache.run` (an asyncio task).

Behaviour (mirrors production libraries, see docs/lab-servers.md):

* ``ttl`` (soft): keys younger than ``ttl`` are *fresh*. A refresh is attempted ahead of the TTL, at a jittered
  point between 80 % and 90 % of it.
* ``max_stale`` (hard): while fetches fail, keys older than ``ttl`` are served as *stale* (last-known-good) until
  ``max_stale`` seconds after the last successful fetch; then the cache is *expired* and fails closed.
* single-flight: concurrent refreshes share one fetch.
* failed fetches back off exponentially with jitter (capped, so recovery is seen quickly).
* a payload is swapped in atomically only after it parsed into at least one usable RS256 key; a bad payload (an
  error status, an empty key set, a body that is no JWKS) keeps the old keys, and so does a key set that shares no
  key with a cache still within its lifetime (a correct IdP publishes a new key next to the old one before it signs
  with it: a set without any of the keys in use is a misconfigured or impersonated JWKS; it is taken once the cache
  expired).
* a lookup for an unknown ``kid`` triggers at most one refresh per ``unknown_kid_interval`` seconds; while the last
  fetch failed, that refresh runs in the background and the lookup answers at once.
* events: ``auth.degraded`` once per transition to stale, ``auth.expired`` at hard expiry, ``auth.recovered`` when a
  fetch succeeds after either.

Modes: ``lkg`` (the default above), ``hard-ttl`` (misbehaviour: no last-known-good, expired at ``ttl``), ``none``
(misbehaviour: no cache, one fetch per lookup). Misbehaviour knobs (``JWKS_FAILURE`` each catches one, docs/lab.md):
``swap`` (the cache is replaced by whatever the JWKS answered: an error page or an empty set empties it),
``fetch_inline`` (once past the TTL every lookup waits for a fetch, on the request path), ``unknown_kid_storm`` (every
unknown kid fetches, awaited, no rate limit), ``pinned`` (the key set of the first good fetch is kept for ever: a
rotated key is never picked up).
"""
import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from jwt.algorithms import RSAAlgorithm
from jwt.exceptions import InvalidKeyError

from chaosext.core.names import JWKS_CACHE_MODES

__all__ = [
    "MODES",
    "STATES",
    "InvalidJwks",
    "JwksAnswer",
    "JwksCache",
    "Lookup",
    "VerifiedTokenCache",
    "parse_jwks",
]

log = logging.getLogger("chaosext.lab.jwks")

MODES = JWKS_CACHE_MODES
STATES = ("fresh", "stale", "expired", "empty")

Fetcher = Callable[[], Awaitable[Any]]


class InvalidJwks(ValueError):
    """The JWKS payload holds no usable RS256 signing key."""


class JwksAnswer(RuntimeError):
    """The JWKS answered, with an error status: ``status`` and the ``body`` it sent (a fetcher raises it so that the
    ``swap`` knob can take the body for a key set, as a library that never checks the status does)."""

    def __init__(self, status: int, body: bytes, url: str = "") -> None:
        super().__init__(f"HTTP {status} from {url}" if url else f"HTTP {status}")
        self.status = status
        self.body = body


def parse_jwks(payload: Any) -> dict[str, Any]:
    """Turn a JWKS document (dict, str or bytes) into ``{kid: RSA public key}``.

    Keys that are not RSA, not for signing, not RS256 or have no ``kid`` are skipped. Raises :class:`InvalidJwks`
    when nothing usable is left, so the caller keeps its previous keys.
    """
    if isinstance(payload, (bytes, str)):
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise InvalidJwks(f"not JSON: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("keys"), list):
        raise InvalidJwks("no 'keys' list")
    keys: dict[str, Any] = {}
    for jwk in payload["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") != "RS256":
            continue
        try:
            key = RSAAlgorithm.from_jwk(jwk)
        except (InvalidKeyError, ValueError, KeyError, TypeError):
            continue
        keys[kid] = key.public_key() if isinstance(key, RSAPrivateKey) else key
    if not keys:
        raise InvalidJwks("no usable RS256 signing key")
    return keys


@dataclass(frozen=True, slots=True)
class Lookup:
    """Result of :meth:`JwksCache.get_key`: ``key`` is None on a miss, then ``reason`` says why."""

    key: Any
    source: str  # fresh | stale | none
    reason: str = "ok"  # ok | unknown_kid | no_keys


class JwksCache:
    """Keys of one issuer with soft TTL, hard max-stale, refresh-ahead, backoff and single-flight fetch."""

    def __init__(
        self,
        fetcher: Fetcher,
        *,
        ttl: float,
        max_stale: float,
        mode: str = "lkg",
        now: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        refresh_ahead: float = 0.2,
        unknown_kid_interval: float = 5.0,
        backoff_base: float = 0.5,
        backoff_max: float | None = None,
        on_event: Callable[[str, str], None] | None = None,
        on_state: Callable[[str], None] | None = None,
        on_fetch: Callable[[str, str], None] | None = None,
        refetch_after_failure: bool = True,
        swap: bool = False,
        fetch_inline: bool = False,
        unknown_kid_storm: bool = False,
        pinned: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"cache mode must be one of {', '.join(MODES)}, not {mode!r}")
        if ttl <= 0:
            raise ValueError("ttl must be > 0 seconds")
        if max_stale < ttl:
            raise ValueError("max_stale must be >= ttl")
        self.mode = mode
        self.ttl = float(ttl)
        self.max_stale = float(max_stale)
        self._fetcher = fetcher
        self._now = now
        self._rand = rand
        self._ahead = refresh_ahead
        self.unknown_kid_interval = unknown_kid_interval
        self._backoff_base = backoff_base
        # Capped so a recovered authority is noticed within a fraction of the TTL (.NET retries every 30 s).
        self._backoff_max = backoff_max if backoff_max is not None else min(30.0, max(1.0, self.ttl / 4))
        self._on_event = on_event or (lambda action, result: None)
        self._on_state = on_state or (lambda state: None)
        self._on_fetch = on_fetch or (lambda result, detail: None)
        #: False = misbehaviour knob: once a fetch failed, never fetch again (a service that never recovers)
        self.refetch_after_failure = refetch_after_failure
        #: misbehaviour knobs (module docstring)
        self.swap = swap
        self.fetch_inline = fetch_inline
        self.unknown_kid_storm = unknown_kid_storm
        self.pinned = pinned

        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._state = "empty"
        self._failures = 0
        self.last_fetch_ok: bool | None = None
        self.last_error = ""
        self._next_attempt = now()
        self._last_unknown_kid_refresh = -math.inf
        self._inflight: asyncio.Future[bool] | None = None
        self._background: asyncio.Future[bool] | None = None  # an unknown kid's refresh while the JWKS fails
        self._alerted = False  # degraded/expired announced and not yet recovered

    # ---- state ------------------------------------------------------------------------------------------------
    def _compute_state(self, now: float) -> str:
        if not self._keys:
            return "empty" if self._fetched_at is None else "expired"
        if self.mode == "none" or self.pinned:
            return "fresh"
        age = now - self._fetched_at  # type: ignore[operator]
        if age < self.ttl:
            return "fresh"
        if self.mode == "hard-ttl" or age >= self.max_stale:
            return "expired"
        return "stale"

    def _update_state(self) -> str:
        new = self._compute_state(self._now())
        if new != self._state:
            old, self._state = self._state, new
            log.log(logging.INFO if new == "fresh" else logging.WARNING, "jwks cache %s -> %s", old, new)
            if new == "stale":
                self._alerted = True
                self._on_event("auth.degraded", "degraded")
            elif new == "expired":
                self._alerted = True
                self._on_event("auth.expired", "expired")
            elif new == "fresh" and self._alerted:
                self._alerted = False
                self._on_event("auth.recovered", "recovered")
            self._on_state(new)
        return new

    @property
    def state(self) -> str:
        """fresh | stale | expired | empty, evaluated now."""
        return self._update_state()

    def age(self) -> float:
        """Seconds since the last successful fetch (0 if never)."""
        return 0.0 if self._fetched_at is None else max(0.0, self._now() - self._fetched_at)

    def kids(self) -> list[str]:
        """The kids currently held (usable or not)."""
        return sorted(self._keys)

    def usable(self, kid: str) -> bool:
        """True if ``kid`` may verify a token right now (its key is held and the cache is fresh or stale)."""
        if self.mode == "none":
            return False
        return self._update_state() in ("fresh", "stale") and kid in self._keys

    def in_outage(self) -> bool:
        """True while the last fetch failed or no key is usable (what ``--fail-open`` keys on)."""
        return self.last_fetch_ok is False or self._update_state() in ("expired", "empty")

    def snapshot(self) -> dict[str, Any]:
        """Plain-dict view for /healthz."""
        return {
            "state": self.state,
            "age_seconds": round(self.age(), 3),
            "mode": self.mode,
            "kids": self.kids(),
            "last_fetch_ok": self.last_fetch_ok,
            "consecutive_failures": self._failures,
        }

    # ---- fetching ---------------------------------------------------------------------------------------------
    async def _fetch_once(self) -> bool:
        result, detail, keys = "success", "", None
        answered: Any = None  # what the JWKS answered, also with an error status (the swap knob takes it)
        try:
            payload = await self._fetcher()
            answered = payload
        except asyncio.CancelledError:
            raise
        except JwksAnswer as exc:
            result, detail, answered = "error", str(exc), exc.body
        except Exception as exc:  # any transport/HTTP failure counts as an error
            result, detail = "error", (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:300]
        else:
            try:
                keys = parse_jwks(payload)
            except InvalidJwks as exc:
                result, detail = "invalid", str(exc)
        now = self._now()
        if keys is not None and self._keys and not set(keys) & set(self._keys) and not self.swap \
                and self._compute_state(now) in ("fresh", "stale"):
            # a set without any key in use, while the cache is still good: never replaces it (module docstring)
            result, detail, keys = "invalid", f"no key in common with the cached set {sorted(self._keys)}: kept", None
        if keys is None and self.swap and answered is not None:
            try:  # the swap knob: whatever answered replaces the cache, an empty set when it holds no key
                swapped = parse_jwks(answered)
            except InvalidJwks:
                swapped = {}
            self._keys, self._fetched_at = swapped, now
        if keys is not None:
            self._keys = keys  # atomic swap: only after a valid payload
            self._fetched_at = now
            self._failures = 0
            self.last_fetch_ok = True
            self.last_error = ""
            self._next_attempt = now + self.ttl * (1 - self._ahead * (0.5 + 0.5 * self._rand()))
        else:
            self._failures += 1
            self.last_fetch_ok = False
            self.last_error = detail
            delay = min(self._backoff_max, self._backoff_base * 2 ** (self._failures - 1))
            self._next_attempt = now + delay * (0.5 + 0.5 * self._rand())
            if self.mode == "none":
                self._keys = {}
            if self._failures == 1 or self._failures % 10 == 0:
                log.warning("jwks fetch %s (%d in a row): %s", result, self._failures, detail)
        self._on_fetch(result, detail)
        self._update_state()
        return keys is not None

    async def refresh(self) -> bool:
        """Fetch now, sharing a fetch already in flight. True if the keys were (or are being) renewed."""
        if not self.refetch_after_failure and self._failures:
            return False  # the --no-refetch-after-failure knob: stuck after the first failure
        if self.pinned and self._fetched_at is not None and self._keys:
            return False  # the pinned knob: the first good key set, for ever
        if self.mode == "none":
            return await self._fetch_once()
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._single_flight())
        return await asyncio.shield(self._inflight)

    async def _single_flight(self) -> bool:
        try:
            return await self._fetch_once()
        finally:
            self._inflight = None

    def _after(self, kid: str) -> Lookup:
        state = self._update_state()
        if state in ("fresh", "stale"):
            key = self._keys.get(kid)
            return Lookup(key, state) if key is not None else Lookup(None, "none", "unknown_kid")
        return Lookup(None, "none", "no_keys")

    async def get_key(self, kid: str) -> Lookup:
        """The key for ``kid``, fetching only when needed (cold start, unknown kid, mode none)."""
        if self.mode == "none":
            await self._fetch_once()
            return self._after(kid)
        state = self._update_state()
        if state == "stale" and self.fetch_inline:
            await self.refresh()  # the fetch_inline knob: the request waits for the JWKS (no timeout of its own)
            state = self._update_state()
        if state in ("fresh", "stale"):
            key = self._keys.get(kid)
            if key is not None:
                return Lookup(key, state)
            if self.unknown_kid_storm:
                await self._fetch_once()  # the knob: one fetch per unknown kid, awaited, no rate limit
                return self._after(kid)
            now = self._now()
            if self._inflight is not None or now - self._last_unknown_kid_refresh >= self.unknown_kid_interval:
                if self._inflight is None:
                    self._last_unknown_kid_refresh = now
                if self._failures:  # the JWKS is failing: refresh in the background, refuse this token now
                    self._background = asyncio.ensure_future(self.refresh())
                    return self._after(kid)
                await self.refresh()
            return self._after(kid)
        # empty or expired: wait for a fetch only while none has failed (cold start). Once the identity provider is
        # known to be failing, fail closed at once and leave the retries to the refresh task's backoff, or every
        # request would wait out a fetch timeout (seconds) just to be refused.
        if self._failures == 0 and (self._inflight is not None or self._now() >= self._next_attempt):
            await self.refresh()
        return self._after(kid)

    # ---- background driver ------------------------------------------------------------------------------------
    async def maintain(self) -> None:
        """One tick of the background task: update the state, refresh when due."""
        self._update_state()
        if self.mode != "none" and self._now() >= self._next_attempt:
            await self.refresh()

    def reset(self) -> None:
        """Forget every key, as a freshly started instance has none (the lab's cold start); the refresh task fetches
        again at once."""
        self._keys = {}
        self._fetched_at = None
        self._failures = 0
        self.last_fetch_ok = None
        self.last_error = ""
        self._next_attempt = self._now()
        self._last_unknown_kid_refresh = -math.inf
        self._alerted = False
        self._state = "empty"
        self._on_state("empty")

    def next_delay(self, cap: float = 1.0) -> float:
        """Seconds until the next thing to do (a refresh or a state boundary), between 0.01 and ``cap``."""
        now = self._now()
        due = [self._next_attempt - now]
        if self._fetched_at is not None:
            due += [self._fetched_at + self.ttl - now, self._fetched_at + self.max_stale - now]
        future = [d for d in due if d > 0]
        return max(0.01, min(future + [cap]))

    async def run(self) -> None:
        """Drive the cache forever (cancel the task to stop)."""
        if self.mode == "none":
            return
        while True:
            try:
                await self.maintain()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the refresh task die
                log.exception("jwks refresh task error")
            await asyncio.sleep(self.next_delay())


class VerifiedTokenCache:
    """token string -> claims, so a hot token is verified once, never beyond its key's life.

    An entry expires at ``min(token exp, inserted + ttl)`` and is dropped on access as soon as its kid is no longer
    usable in the JWKS cache (key rotated out, cache expired).
    """

    def __init__(
        self,
        jwks: JwksCache,
        ttl: float = 30.0,
        max_entries: int = 50_000,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._jwks = jwks
        self.ttl = ttl
        self.max_entries = max_entries
        self._wall = wall
        self._entries: dict[str, tuple[dict[str, Any], str, float]] = {}

    @property
    def enabled(self) -> bool:
        """Off when ttl is 0 or the JWKS cache runs in mode ``none``."""
        return self.ttl > 0 and self._jwks.mode != "none"

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> dict[str, Any] | None:
        """Claims of a previously verified token, or None."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        claims, kid, until = entry
        if self._wall() >= until or not self._jwks.usable(kid):
            self._entries.pop(token, None)
            return None
        return claims

    def put(self, token: str, claims: dict[str, Any], kid: str) -> None:
        """Remember a token verified with ``kid``."""
        if not self.enabled:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        until = min(float(claims.get("exp", 0)), self._wall() + self.ttl)
        self._entries[token] = (claims, kid, until)

    def clear(self) -> None:
        """Drop every entry."""
        self._entries.clear()
