// The `orders` service: express + jose. Tokens are verified with jose's jwtVerify against jose's own remote JWKS
// cache (createRemoteJWKSet: cacheMaxAge = the JWKS TTL, cooldownDuration, timeoutDuration); algorithms pinned to
// RS256, issuer, audience, the access-token type (RFC 9068 `at+jwt`) and exp/iat/tenant required.
//
// jose's cache has a hard TTL: once cacheMaxAge has passed it must fetch again, and when that fetch fails the
// verification fails. Like many teams, this one adds a stale-if-error fallback of its own: while the JWKS cannot be
// fetched, the last good key set (`remote.jwks()`) keeps verifying tokens up to max-stale after the last good fetch,
// and a failed fetch is retried after `retry_seconds`, not on every request.
// --drop-keys-on-failure removes that fallback: jose as it comes, no stale keys.
import { createLocalJWKSet, createRemoteJWKSet, customFetch, errors, jwtVerify } from 'jose';

import { KeyUnavailable, loadConfig, startService } from './lib/service.mjs';

const config = loadConfig(process.argv);

function makeVerifier({ config, keyState }) {
  const observedFetch = async (url, options) => {
    let res;
    try {
      res = await fetch(url, options);
    } catch (err) {
      keyState.failed(err);
      throw err;
    }
    const body = res.status === 200 ? await res.clone().json().catch(() => null) : null;
    if (body && Array.isArray(body.keys) && body.keys.length) keyState.fetched(body.keys.length);
    else keyState.failed(new Error(`JWKS answered HTTP ${res.status} without keys`));
    return res;
  };
  const remote = createRemoteJWKSet(new URL(config.jwks_url), {
    cacheMaxAge: config.jwks.ttl_seconds * 1000,
    cooldownDuration: config.jwks.cooldown_seconds * 1000,
    timeoutDuration: config.jwks.timeout_ms,
    [customFetch]: observedFetch,
  });
  const fetchFailed = (err) => err instanceof TypeError || err instanceof errors.JWKSTimeout
    || err instanceof errors.JWKSInvalid || err?.constructor === errors.JOSEError;

  const lastGood = async (header, token, cause) => {
    if (config.dropKeysOnFailure || keyState.usableKeys() === 0) {  // jose as it comes: no stale keys
      throw new KeyUnavailable('the JWKS cannot be fetched and no key is usable', cause);
    }
    try {
      return await createLocalJWKSet(remote.jwks())(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey) {
        throw new KeyUnavailable('no such key among the last good keys, and the JWKS cannot be fetched', err);
      }
      throw err;
    }
  };

  const getKey = async (header, token) => {
    const backingOff = !config.dropKeysOnFailure && keyState.failing
      && Date.now() - keyState.lastFailure < config.jwks.retry_seconds * 1000;
    if (backingOff) return lastGood(header, token);
    try {
      return await remote(header, token);
    } catch (err) {
      if (!fetchFailed(err)) throw err;
      return lastGood(header, token, err);
    }
  };

  const options = {
    issuer: config.issuer,
    ...(config.anyAudience ? {} : { audience: config.audience }),
    algorithms: ['RS256'],
    typ: 'at+jwt',
    requiredClaims: ['exp', 'iat', 'tenant'],
    clockTolerance: 5,
  };
  return {
    verify: async (token) => (await jwtVerify(token, getKey, options)).payload,
    warm: () => remote.reload(),
  };
}

await startService({
  config,
  makeVerifier,
  routes(app, store) {
    app.get('/v2/orders', (req, res) => res.json({ orders: store.list(req.tenant).slice(-20) }));
    app.get('/v2/orders/:id', (req, res) => {
      const order = store.list(req.tenant).find((o) => o.id === req.params.id);
      return order ? res.json(order) : res.status(404).json({ error: 'not_found' });
    });
    app.post('/v2/orders', (req, res) => {
      const sku = typeof req.body?.sku === 'string' ? req.body.sku.slice(0, 64) : 'unknown';
      const qty = Number.isInteger(req.body?.qty) ? req.body.qty : 1;
      res.status(201).json(store.add(req.tenant, { id: crypto.randomUUID(), sku, qty, at: new Date().toISOString() }));
    });
  },
});
