// The part the two tenant services share (one team, one house style): configuration from a JSON file and
// command-line switches, an express app with prom-client metrics (express-prom-bundle's default
// http_request_duration_seconds{status_code,method,path}, plus `service` on every series through prom-client's
// setDefaultLabels and `tenant` through the bundle's customLabels/transformLabels), audit lines written by pino to a
// file, the bearer-token middleware, /health, /ready and /metrics.
//
// How requests are labelled (the chaosext error rule, docs/experiment.md "What counts as an error"):
//   - a verified token: tenant = its `tenant` claim;
//   - a token that failed for a reason of its own (bad signature, unknown key while keys are usable, claims, alg...):
//     tenant = "__unauthenticated__" (client noise, not the service's failure);
//   - the service had no usable key at all (cache empty or expired, JWKS unreachable): the tenant the request is for
//     (its X-Tenant-ID), if that tenant was admitted before (bounded), else "__unauthenticated__".
//
// Switches (the planted variants):
//   --fail-open             accept a token whose key could not be had while the JWKS is unreachable (the bug)
//   --drop-keys-on-failure  the verifier's cache loses its keys on the first failed fetch (no stale fallback)
//   --any-audience          the verifier is not given the API's audience: a token for another API is let in
import { readFileSync } from 'node:fs';

import express from 'express';
import promBundle from 'express-prom-bundle';
import { decodeJwt } from 'jose';
import pino from 'pino';
import client from 'prom-client';

import { KeyState } from './keystate.mjs';

export const UNAUTHENTICATED = '__unauthenticated__';

/** A key for the token could not be had because the JWKS could not be fetched (not the token's fault). */
export class KeyUnavailable extends Error {
  constructor(message, cause) {
    super(message, { cause });
    this.name = 'KeyUnavailable';
  }
}

export function loadConfig(argv) {
  const args = argv.slice(2);
  const file = args.find((a) => !a.startsWith('--'));
  if (!file) throw new Error('usage: node <service>.mjs <config.json> [--fail-open] [--drop-keys-on-failure] [--any-audience]');
  const config = JSON.parse(readFileSync(file, 'utf8'));
  return {
    ...config,
    failOpen: args.includes('--fail-open'),
    dropKeysOnFailure: args.includes('--drop-keys-on-failure'),
    anyAudience: args.includes('--any-audience'),
  };
}

/**
 * Build and start a service.
 * makeVerifier({config, keyState, audit}) -> {verify(token) -> claims, warm()}: verify throws KeyUnavailable when
 * the key could not be had (JWKS unreachable), anything else when the token is bad.
 * routes(app, store): registers the service's own routes (called after authentication).
 */
export async function startService({ config, makeVerifier, routes }) {
  const name = config.service;
  const audit = pino(
    { base: { svc: name }, messageKey: 'msg' },
    pino.destination({ dest: config.audit_file, append: true, mkdir: true, sync: true }),
  );
  const auditEvent = (event, fields = {}) => audit.info({ event, ...fields });

  client.register.setDefaultLabels({ service: name });
  const fetches = new client.Counter({
    name: 'auth_jwks_fetches_total',
    help: 'JWKS fetches by result',
    labelNames: ['result'],
  });
  for (const result of ['success', 'error']) fetches.inc({ result }, 0);
  const keyState = new KeyState({
    ttlMs: config.jwks.ttl_seconds * 1000,
    maxStaleMs: config.jwks.max_stale_seconds * 1000,
    dropKeysOnFailure: config.dropKeysOnFailure,
    audit: auditEvent,
    onFetch: (result) => fetches.inc({ result }),
  });
  new client.Gauge({
    name: 'auth_jwks_keys_usable',
    help: 'Signing keys the token verifier can use now (0: it fails closed)',
    collect() { this.set(keyState.usableKeys()); },
  });
  new client.Gauge({
    name: 'auth_jwks_refresh_failing',
    help: '1 while the last JWKS fetch failed',
    collect() { this.set(keyState.failing ? 1 : 0); },
  });
  new client.Gauge({
    name: 'auth_jwks_last_refresh_success_timestamp_seconds',
    help: 'When the JWKS was last fetched successfully',
    collect() { if (keyState.lastSuccess !== null) this.set(keyState.lastSuccess / 1000); },
  });
  const unverified = new client.Counter({
    name: 'auth_unverified_accepts_total',
    help: 'Requests let in although their token could not be verified (--fail-open)',
  });
  const rejected = new client.Counter({
    name: 'auth_rejected_tokens_total',
    help: 'Tokens refused, by reason',
    labelNames: ['reason'],
  });

  const verifier = makeVerifier({ config, keyState, audit: auditEvent });
  const admitted = new Set(); // tenants whose tokens this process verified (bounded by the IdP's clients)
  const tenants = new Set(config.tenants);
  const infra = new Set(['/health', '/ready', '/metrics']);

  const app = express();
  app.disable('x-powered-by');
  app.use(promBundle({
    includeMethod: true,
    includePath: true,
    includeUp: false,
    customLabels: { tenant: null },
    transformLabels: (labels, req) => { labels.tenant = req.tenantLabel || UNAUTHENTICATED; },
    bypass: (req) => infra.has(req.path),
    promClient: { collectDefaultMetrics: {} },
  }));
  app.use(express.json({ limit: '16kb' }));

  app.get('/health', (req, res) => {
    const state = keyState.state();
    const words = { empty: 'starting', fresh: 'ok', stale: 'degraded', expired: 'down' };
    res.json({
      status: state === 'expired' ? 'down' : 'ok',
      service: name,
      jwks: { status: words[state], ageSeconds: keyState.ageSeconds(), keys: keyState.usableKeys() },
    });
  });
  app.get('/ready', (req, res) => res.status(keyState.usableKeys() > 0 ? 200 : 503).json({ ready: keyState.usableKeys() > 0 }));

  app.use(async (req, res, next) => {
    const claimed = req.get(config.tenant_header) || '';
    const match = /^Bearer ([A-Za-z0-9._~+/=-]+)$/.exec(req.get('authorization') || '');
    const refuse = (reason, label) => {
      req.tenantLabel = label || UNAUTHENTICATED;
      rejected.inc({ reason });
      auditEvent('token.rejected', { reason, claimed_tenant: tenants.has(claimed) ? claimed : undefined });
      res.set('WWW-Authenticate', `Bearer error="invalid_token"`).status(401).json({ error: 'invalid_token', reason });
    };
    if (!match) return refuse('missing');
    let claims;
    try {
      claims = await verifier.verify(match[1]);
    } catch (err) {
      if (!(err instanceof KeyUnavailable)) return refuse('invalid');
      if (config.failOpen) {
        try {
          claims = decodeJwt(match[1]);
        } catch {
          return refuse('invalid');
        }
        unverified.inc();
      } else {
        // the service's own failure only when it had no key at all; a token whose kid is not among usable keys is
        // the token's problem
        const own = keyState.usableKeys() === 0 && admitted.has(claimed);
        return refuse(own ? 'no_keys' : 'unknown_key', own ? claimed : UNAUTHENTICATED);
      }
    }
    const tenant = typeof claims.tenant === 'string' ? claims.tenant : '';
    if (!tenants.has(tenant)) return refuse('no_tenant');
    if (claimed !== tenant) {
      req.tenantLabel = tenant;
      auditEvent('tenant.mismatch', { tenant, claimed_tenant: tenants.has(claimed) ? claimed : undefined });
      return res.status(403).json({ error: 'forbidden' });
    }
    admitted.add(tenant);
    req.tenantLabel = tenant;
    req.tenant = tenant;
    next();
  });

  const store = new Map(); // tenant -> [records]
  routes(app, {
    list: (tenant) => store.get(tenant) || [],
    add: (tenant, record) => {
      const list = store.get(tenant) || [];
      if (list.length >= 1000) list.shift();
      list.push(record);
      store.set(tenant, list);
      return record;
    },
  });
  app.use((req, res) => res.status(404).json({ error: 'not_found' }));
  // eslint-disable-next-line no-unused-vars
  app.use((err, req, res, next) => {
    console.error(`${name} error`, err);
    res.status(500).json({ error: 'internal' });
  });

  try {
    await verifier.warm();
  } catch (err) {
    console.error(`${name}: JWKS not fetched at start (${err.message}); the first request will try again`);
  }
  const server = app.listen(config.listen.port, config.listen.host, () => {
    console.log(`${name} ready on http://${config.listen.host}:${config.listen.port}` +
      `${config.failOpen ? ' --fail-open' : ''}${config.dropKeysOnFailure ? ' --drop-keys-on-failure' : ''}`);
  });
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      server.close();
      server.closeAllConnections();
      audit.flushSync();
      process.exit(0);
    });
  }
  return server;
}
