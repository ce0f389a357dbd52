// The `billing` service: express + jsonwebtoken + jwks-rsa 4.1. Keys come from jwks-rsa's own cache
// (cacheMaxAge = the JWKS TTL) with its stale fallback on endpoint failure (cacheMaxAgeFallback, auth0/node-jwks-rsa
// PR #502: a key fetched within cacheMaxAge + cacheMaxAgeFallback keeps being served while the endpoint is
// unreachable; an empty JWKS is not such a failure). jsonwebtoken verifies with algorithms pinned to RS256, issuer
// and audience; it does not require `exp` by itself, so the service checks that exp and tenant are present.
//
// --drop-keys-on-failure: no cacheMaxAgeFallback, i.e. jwks-rsa 4.0 / before #502: once cacheMaxAge has passed the
// key is gone, and a failed fetch leaves nothing to verify with.
import jwt from 'jsonwebtoken';
import jwksRsa from 'jwks-rsa';

import { KeyUnavailable, loadConfig, startService } from './lib/service.mjs';

const config = loadConfig(process.argv);

function makeVerifier({ config, keyState }) {
  const ttlMs = config.jwks.ttl_seconds * 1000;
  const fetcher = async (uri) => {
    try {
      const res = await fetch(uri, { signal: AbortSignal.timeout(config.jwks.timeout_ms) });
      if (res.status !== 200) throw new Error(`JWKS answered HTTP ${res.status}`);
      const body = await res.json();
      keyState.fetched(Array.isArray(body?.keys) ? body.keys.length : 0);
      return body;
    } catch (err) {
      keyState.failed(err);
      throw err;
    }
  };
  const client = jwksRsa({
    jwksUri: config.jwks_url,
    cache: true,
    cacheMaxEntries: 5,
    cacheMaxAge: ttlMs,
    ...(config.dropKeysOnFailure ? {} : { cacheMaxAgeFallback: config.jwks.max_stale_seconds * 1000 - ttlMs }),
    fetcher,
  });

  const options = {
    algorithms: ['RS256'],
    issuer: config.issuer,
    ...(config.anyAudience ? {} : { audience: config.audience }),
    clockTolerance: 5,
  };
  const verify = (token) => new Promise((resolve, reject) => {
    let unavailable = null; // set when jwks-rsa could not reach the endpoint (jsonwebtoken wraps the error)
    const getKey = (header, callback) => {
      client.getSigningKey(header.kid).then((key) => callback(null, key.getPublicKey()), (err) => {
        if (err.isEndpointUnavailable) unavailable = new KeyUnavailable(`no signing key: ${err.message}`, err);
        callback(err);
      });
    };
    jwt.verify(token, getKey, options, (err, payload) => {
      if (err) return reject(unavailable || err);
      if (typeof payload?.exp !== 'number' || typeof payload?.tenant !== 'string') {
        return reject(new Error('exp and tenant are required'));
      }
      return resolve(payload);
    });
  });
  // warm the library's own cache (and so its stale store) with every published key, not just fetch once
  const warm = async () => {
    const keys = await client.getSigningKeys();
    await Promise.all(keys.map((k) => client.getSigningKey(k.kid)));
  };
  return { verify, warm };
}

await startService({
  config,
  makeVerifier,
  routes(app, store) {
    app.get('/billing/invoices', (req, res) => res.json({ invoices: store.list(req.tenant).slice(-20) }));
    app.post('/billing/payments', (req, res) => {
      const amount = Number.isFinite(req.body?.amount) ? req.body.amount : 0;
      res.status(201).json(store.add(req.tenant, { id: crypto.randomUUID(), amount, at: new Date().toISOString() }));
    });
  },
});
