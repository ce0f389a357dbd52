// The target's identity provider: oidc-provider (a certified OpenID Connect implementation), configured as a platform
// team would for service-to-service tokens:
//   - one confidential client per tenant, client_credentials grant only, client_secret_basic or client_secret_post;
//   - RS256 JWT access tokens for the API resource (RFC 8707 resource indicators, getResourceServerInfo), the tenant
//     as the `tenant` claim (extraTokenClaims); a second resource (`other_resource`) exists, as in any real IdP that
//     serves several APIs, so a token for another audience can be had;
//   - OIDC discovery and the JWKS at the library's own routes (/.well-known/openid-configuration, /jwks, /token).
// Key rotation on demand: POST /admin/rotate on the ops listener (its own port, which the fault does not block) makes
// a new RSA key, publishes it first and keeps the previous one in the JWKS (overlap), by swapping in a new Provider.
//
// oidc-provider 8.8.x: the last line whose runtime check accepts Node.js 20 ("Iron"); 9.x asks for Node.js 22 LTS.
//
// Usage: node idp.mjs <config.json>   (the file is mode 0600: it holds the client secrets; nothing secret in argv)
//   config: {issuer, listen: {host, port}, ops: {host, port}, resource, other_resource, token_ttl,
//            clients: [{client_id, client_secret, tenant}]}
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const tenantOf = new Map(config.clients.map((c) => [c.client_id, c.tenant]));
const resources = new Set([config.resource, config.other_resource].filter(Boolean));

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

let keys = [newKey()];

function makeProvider() {
  const provider = new Provider(config.issuer, {
    clients: config.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: c.auth_method || 'client_secret_basic',
    })),
    jwks: { keys },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      revocation: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => config.resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          if (!resources.has(resourceIndicator)) {
            throw new errors.InvalidTarget();
          }
          return {
            scope: 'api',
            audience: resourceIndicator,
            accessTokenTTL: config.token_ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => ({ tenant: tenantOf.get(token.clientId) }),
    ttl: { ClientCredentials: config.token_ttl },
    clientBasedCORS: () => false,
    cookies: { keys: [randomUUID()] },
  });
  provider.on('server_error', (ctx, err) => console.error('idp server_error', err));
  return provider;
}

let handler = makeProvider().callback();
const server = http.createServer((req, res) => handler(req, res));
server.keepAliveTimeout = 5000;

const ops = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/admin/rotate') {
    keys = [newKey(), keys[0]];
    handler = makeProvider().callback();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kids: keys.map((k) => k.kid) }));
    return;
  }
  if (req.method === 'GET' && req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ status: 'ok', kids: keys.map((k) => k.kid) }));
    return;
  }
  res.writeHead(404).end();
});

server.listen(config.listen.port, config.listen.host, () => {
  ops.listen(config.ops.port, config.ops.host, () => {
    console.log(`idp ready: issuer ${config.issuer}, ops http://${config.ops.host}:${config.ops.port}`);
  });
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    ops.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
