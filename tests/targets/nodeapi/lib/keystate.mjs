// What a team exports about its JWKS cache: the state the verifier is in, derived from the outcomes of the
// library's own fetches (both libraries let the caller see each fetch: jose through its `customFetch` option,
// jwks-rsa through its `fetcher` option) and from the windows the library is configured with.
//
//   empty    no JWKS fetched yet (starting)
//   fresh    the last fetch succeeded, or the keys of the last good fetch are still within the TTL
//   stale    the last fetch failed, the TTL has passed; the library still serves the last good keys (max-stale)
//   expired  the last fetch failed and no key is usable: past max-stale, or past the TTL in a cache that drops its
//            keys on a failed fetch
//
// Transitions are audited (jwks.stale, jwks.expired, jwks.recovered) once each, checked on every fetch outcome and
// once a second (expiry happens with no fetch at all).

export class KeyState {
  constructor({ ttlMs, maxStaleMs, dropKeysOnFailure, audit, onFetch }) {
    this.ttlMs = ttlMs;
    this.maxStaleMs = maxStaleMs;
    this.dropKeysOnFailure = dropKeysOnFailure;
    this.audit = audit;
    this.onFetch = onFetch || (() => {});
    this.lastSuccess = null; // ms
    this.lastFailure = null; // ms
    this.failing = false;
    this.keyCount = 0;
    this.current = 'empty';
    this.timer = setInterval(() => this.update(), 1000);
    this.timer.unref();
  }

  fetched(keyCount) {
    this.lastSuccess = Date.now();
    this.failing = false;
    this.keyCount = keyCount;
    this.onFetch('success');
    this.update();
  }

  failed(err) {
    this.lastFailure = Date.now();
    this.failing = true;
    this.lastError = err instanceof Error ? `${err.name}: ${err.cause?.code || err.message}` : String(err);
    this.onFetch('error');
    this.update();
  }

  state() {
    if (this.lastSuccess === null) return 'empty';
    const age = Date.now() - this.lastSuccess;
    if (!this.failing || age < this.ttlMs) return 'fresh';
    if (this.dropKeysOnFailure) return 'expired';
    return age < this.maxStaleMs ? 'stale' : 'expired';
  }

  /** Keys the verifier can use right now (0 when empty or expired). */
  usableKeys() {
    const s = this.state();
    return s === 'fresh' || s === 'stale' ? this.keyCount : 0;
  }

  ageSeconds() {
    return this.lastSuccess === null ? null : (Date.now() - this.lastSuccess) / 1000;
  }

  update() {
    const next = this.state();
    const prev = this.current;
    if (next === prev) return;
    this.current = next;
    const detail = { from: prev, age_seconds: this.ageSeconds(), error: this.failing ? this.lastError : undefined };
    if (next === 'stale') this.audit('jwks.stale', detail);
    else if (next === 'expired') this.audit('jwks.expired', detail);
    else if (next === 'fresh' && (prev === 'stale' || prev === 'expired')) this.audit('jwks.recovered', detail);
  }
}
