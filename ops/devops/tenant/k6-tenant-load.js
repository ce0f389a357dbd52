// k6-tenant-load.js — multi-tenant load on the Policy, Vuln and Notify services.
//
// Open model: two constant-arrival-rate scenarios, tagged kind=read / kind=write, hold an exact 90/10 split of
// K6_RATE requests/s (default 5000: reads 4500/s, writes 500/s). Every iteration sends ONE request to one of the
// three services (chosen at random) as one of >= 10 tenants (chosen at random per request), with a per-tenant token.
// Tags are kind, service and name (the route template); never the tenant (that would explode series).
//
// Environment (all optional):
//   K6_RATE          total requests/s (default 5000), split 90/10 by LOAD_READ_SHARE (default 0.9)
//   LOAD_DURATION    how long to hold the rate (default 6m)
//   LOAD_VUS         pre-allocated VUs, split like the rate (default max(20, K6_RATE/25))
//   LOAD_MAX_VUS     VU ceiling, split like the rate (default max(100, K6_RATE/5))
//   LOAD_DROPPED_MAX dropped iterations allowed before the threshold fails (default 0)
//   LOAD_HTTP_TIMEOUT per-request timeout (default 10s)
// (Not K6_DURATION / K6_VUS: k6 itself reads those and they would replace the scenarios.)
//   SERVICE_URLS     policy=http://127.0.0.1:8451,vuln=http://127.0.0.1:8452,notify=http://127.0.0.1:8453
//   TENANTS          comma list; an item may be a range like t01..t12 (default t01..t12)
//   TENANT_HEADER    default X-StellaOps-Tenant
//   AUTHORITY_URL    default http://127.0.0.2:8440; setup() gets one token per tenant by the OAuth2
//                    client-credentials grant (RFC 6749 4.4) at the token_endpoint of AUTHORITY_URL's OIDC discovery
//   TOKEN_ENDPOINT   skip discovery and use this token endpoint
//   TOKEN_CLIENT_ID / TOKEN_CLIENT_SECRET  the client; TOKEN_CLIENTS JSON {"t01": {"client_id", "client_secret"}}
//                    for one client per tenant. SECRETS: give them in k6's process environment (k6 run includes it
//                    in __ENV), never with -e (argv is visible to every user of the machine).
//   TOKEN_AUTH_METHOD client_secret_basic (default) or client_secret_post
//   TOKEN_TENANT_PARAM form parameter naming the tenant (default tenant; empty: none)
//   TOKEN_AUDIENCE   sent as TOKEN_AUDIENCE_PARAM (default audience) when set;  TOKEN_SCOPE sent as scope when set
//   TOKENS_FILE      JSON {"t01": "<jwt>", ...} (mode 0600): use these tokens instead of asking the IdP
//   SUMMARY_FILE     where handleSummary writes the JSON that chaosext reads (default k6-summary.json)
import encoding from 'k6/encoding';
import http from 'k6/http';

// "Error" has one definition (docs/experiment.md, "What counts as an error"): 5xx, or 401 of a real tenant. k6 sends
// only valid tokens, so every 401 it gets is the service failing to verify them: an error. 403 (tenant mismatch) and
// 429 (rate limited) are correct answers, so http_req_failed does not count them (without this callback k6 counts
// every status >= 400).
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 399 }, 403, 429));

const RESOURCES = { policy: 'policies', vuln: 'findings', notify: 'notifications' };
const DEFAULT_URLS = 'policy=http://127.0.0.1:8451,vuln=http://127.0.0.1:8452,notify=http://127.0.0.1:8453';

function intEnv(name, dflt) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name}=${raw}: expected a whole number >= 0`);
  return n;
}

function durationSeconds(d) {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let matched = '';
  let m;
  while ((m = re.exec(d)) !== null) {
    total += Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
    matched += m[0];
  }
  if (matched !== d || total <= 0) throw new Error(`LOAD_DURATION=${d}: expected a k6 duration such as 30s, 6m or 1h30m`);
  return total;
}

function parseServices(spec) {
  const out = [];
  for (const item of spec.split(',').map((s) => s.trim()).filter((s) => s)) {
    const eq = item.indexOf('=');
    const name = item.slice(0, eq);
    const url = item.slice(eq + 1).replace(/\/+$/, '');
    if (eq <= 0 || !RESOURCES[name] || !/^https?:\/\/[^/]+/.test(url)) {
      throw new Error(`SERVICE_URLS item "${item}": expected name=http://host:port with name one of ${Object.keys(RESOURCES).join(', ')}`);
    }
    out.push({ name, url, resource: RESOURCES[name] });
  }
  if (out.length === 0) throw new Error('SERVICE_URLS is empty: expected e.g. ' + DEFAULT_URLS);
  return out;
}

function parseTenants(spec) {
  const out = [];
  for (const item of spec.split(',').map((s) => s.trim()).filter((s) => s)) {
    const m = /^(.*?)(\d+)\.\.(\1)?(\d+)$/.exec(item);
    if (m) {
      const width = m[2].length;
      for (let i = Number(m[2]); i <= Number(m[4]); i++) out.push(m[1] + String(i).padStart(width, '0'));
    } else {
      out.push(item);
    }
  }
  return out;
}

const RATE = intEnv('K6_RATE', 5000);
const READ_SHARE = Number(__ENV.LOAD_READ_SHARE || '0.9');
if (RATE < 2) throw new Error(`K6_RATE=${RATE}: expected at least 2 requests/s (one read and one write scenario)`);
if (!(READ_SHARE > 0 && READ_SHARE < 1)) throw new Error(`LOAD_READ_SHARE=${__ENV.LOAD_READ_SHARE}: expected 0 < share < 1`);
const READ_RATE = Math.min(RATE - 1, Math.max(1, Math.round(RATE * READ_SHARE)));
const WRITE_RATE = RATE - READ_RATE;
const DURATION = __ENV.LOAD_DURATION || '6m';
const DURATION_S = durationSeconds(DURATION);
const VUS = intEnv('LOAD_VUS', Math.max(20, Math.ceil(RATE / 25)));
const MAX_VUS = Math.max(VUS, intEnv('LOAD_MAX_VUS', Math.max(100, Math.ceil(RATE / 5))));
const DROPPED_MAX = intEnv('LOAD_DROPPED_MAX', 0);
const HTTP_TIMEOUT = __ENV.LOAD_HTTP_TIMEOUT || '10s';
const SERVICES = parseServices(__ENV.SERVICE_URLS || DEFAULT_URLS);
const TENANTS = parseTenants(__ENV.TENANTS || 't01..t12');
const TENANT_HEADER = __ENV.TENANT_HEADER || 'X-StellaOps-Tenant';
const AUTHORITY_URL = (__ENV.AUTHORITY_URL || 'http://127.0.0.2:8440').replace(/\/+$/, '');
const AUDIENCE = __ENV.TOKEN_AUDIENCE || '';
const AUDIENCE_PARAM = __ENV.TOKEN_AUDIENCE_PARAM === undefined ? 'audience' : __ENV.TOKEN_AUDIENCE_PARAM;
const SCOPE = __ENV.TOKEN_SCOPE || '';
const TENANT_PARAM = __ENV.TOKEN_TENANT_PARAM === undefined ? 'tenant' : __ENV.TOKEN_TENANT_PARAM;
const AUTH_METHOD = __ENV.TOKEN_AUTH_METHOD || 'client_secret_basic';
if (!['client_secret_basic', 'client_secret_post'].includes(AUTH_METHOD)) {
  throw new Error(`TOKEN_AUTH_METHOD=${AUTH_METHOD}: expected client_secret_basic or client_secret_post`);
}
const TENANT_CLIENTS = __ENV.TOKEN_CLIENTS ? JSON.parse(__ENV.TOKEN_CLIENTS) : {};
const SUMMARY_FILE = __ENV.SUMMARY_FILE || 'k6-summary.json';
const TOKENS_FROM_FILE = __ENV.TOKENS_FILE ? JSON.parse(open(__ENV.TOKENS_FILE)) : null;
if (TENANTS.length === 0) throw new Error('TENANTS is empty: expected e.g. t01..t12 or t01,t02,...');

function share(total, rate) {
  return Math.max(1, Math.round((total * rate) / RATE));
}

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
  scenarios: {
    reads: {
      executor: 'constant-arrival-rate',
      exec: 'read',
      rate: READ_RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: share(VUS, READ_RATE),
      maxVUs: share(MAX_VUS, READ_RATE),
      tags: { kind: 'read' },
    },
    writes: {
      executor: 'constant-arrival-rate',
      exec: 'write',
      rate: WRITE_RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: share(VUS, WRITE_RATE),
      maxVUs: share(MAX_VUS, WRITE_RATE),
      tags: { kind: 'write' },
    },
  },
  thresholds: {
    'http_req_duration{kind:read}': ['p(95)<300'],
    'http_req_duration{kind:write}': ['p(95)<600'],
    http_req_failed: ['rate<0.005'],
    // per kind too: these exclude setup()'s token requests, so the summary's error rate is the load's alone
    'http_req_failed{kind:read}': ['rate<0.005'],
    'http_req_failed{kind:write}': ['rate<0.005'],
    dropped_iterations: [`count<=${DROPPED_MAX}`],
  },
};

function formEncode(fields) {
  return Object.entries(fields).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
}

// scheme://host:port of an http(s) URL, lower case ('' when it is not one, or carries user info)
function origin(url) {
  const m = /^(https?):\/\/([^/?#]*)/i.exec(String(url || ''));
  if (!m || m[2].includes('@') || m[2].includes('\\')) return '';
  const scheme = m[1].toLowerCase();
  const hostPort = m[2].toLowerCase();
  return `${scheme}://${/:\d+$/.test(hostPort) ? hostPort : `${hostPort}:${scheme === 'https' ? 443 : 80}`}`;
}

// The token endpoint: TOKEN_ENDPOINT, else discovery's, which must be on AUTHORITY_URL's origin (the client secret
// goes there). Neither request follows a redirect (redirects: 0): credentials never travel to another origin.
function tokenEndpoint() {
  if (__ENV.TOKEN_ENDPOINT) return __ENV.TOKEN_ENDPOINT;
  const url = `${AUTHORITY_URL}/.well-known/openid-configuration`;
  const res = http.get(url, { responseType: 'text', timeout: '10s', redirects: 0, tags: { name: 'setup discovery' } });
  if (res.status !== 200) {
    throw new Error(`GET ${url} answered ${res.status} ${res.error || ''}: is the Authority up (chaosext lab ` +
      'status) and AUTHORITY_URL right? Or pass TOKEN_ENDPOINT or TOKENS_FILE.');
  }
  const endpoint = res.json('token_endpoint');
  if (!origin(endpoint) || origin(endpoint) !== origin(AUTHORITY_URL)) {
    throw new Error(`discovery names token_endpoint ${endpoint}, not on AUTHORITY_URL's origin ` +
      `${origin(AUTHORITY_URL)}: set TOKEN_ENDPOINT explicitly if it is right`);
  }
  return endpoint;
}

// One client-credentials grant (RFC 6749 4.4); client authentication per RFC 6749 2.3.1.
function clientCredentials(endpoint, tenant) {
  const client = TENANT_CLIENTS[tenant] || { client_id: __ENV.TOKEN_CLIENT_ID, client_secret: __ENV.TOKEN_CLIENT_SECRET };
  if (!client.client_id || !client.client_secret) {
    throw new Error(`no client credentials for tenant ${tenant}: set TOKEN_CLIENT_ID and TOKEN_CLIENT_SECRET in ` +
      "k6's environment (chaosext start_k6 does), or TOKEN_CLIENTS, or pass TOKENS_FILE");
  }
  const form = { grant_type: 'client_credentials' };
  if (TENANT_PARAM) form[TENANT_PARAM] = tenant;
  if (SCOPE) form.scope = SCOPE;
  if (AUDIENCE && AUDIENCE_PARAM) form[AUDIENCE_PARAM] = AUDIENCE;
  const headers = { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' };
  if (AUTH_METHOD === 'client_secret_post') {
    form.client_id = client.client_id;
    form.client_secret = client.client_secret;
  } else {
    const raw = `${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret)}`;
    headers.Authorization = `Basic ${encoding.b64encode(raw)}`;
  }
  const res = http.post(endpoint, formEncode(form), {
    headers, responseType: 'text', timeout: '10s', redirects: 0, tags: { name: 'setup /token' },
  });
  if (res.status !== 200) {
    let why = '';
    try { why = `${res.json('error') || ''} ${res.json('error_description') || ''}`; } catch (e) { why = ''; }
    throw new Error(`POST ${endpoint} for tenant ${tenant} answered ${res.status} ${res.error || ''} ${why}: ` +
      'is the Authority up (chaosext lab status), AUTHORITY_URL right and the client allowed? Or pass TOKENS_FILE.');
  }
  return res.json('access_token');
}

export function setup() {
  if (TOKENS_FROM_FILE) {
    const missing = TENANTS.filter((t) => !TOKENS_FROM_FILE[t]);
    if (missing.length) throw new Error(`TOKENS_FILE has no token for tenant(s) ${missing.join(', ')}`);
    return { tokens: TOKENS_FROM_FILE };
  }
  const endpoint = tokenEndpoint();
  const tokens = {};
  for (const tenant of TENANTS) tokens[tenant] = clientCredentials(endpoint, tenant);
  return { tokens };
}

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

function params(data, svc, kind, name) {
  const tenant = pick(TENANTS);
  const headers = { Authorization: `Bearer ${data.tokens[tenant]}` };
  headers[TENANT_HEADER] = tenant;
  if (kind === 'write') headers['Content-Type'] = 'application/json';
  return { headers, timeout: HTTP_TIMEOUT, tags: { service: svc.name, name } };
}

function itemId() {
  return String(1 + Math.floor(Math.random() * 100));
}

export function read(data) {
  const svc = pick(SERVICES);
  const base = `/api/v1/${svc.resource}`;
  if (Math.random() < 0.5) {
    http.get(svc.url + base, params(data, svc, 'read', base));
  } else {
    http.get(`${svc.url}${base}/${itemId()}`, params(data, svc, 'read', `${base}/{id}`));
  }
}

export function write(data) {
  const svc = pick(SERVICES);
  const base = `/api/v1/${svc.resource}`;
  const body = JSON.stringify({ name: `k6-${itemId()}`, severity: 'low', note: 'chaosext load' });
  if (Math.random() < 0.5) {
    http.post(svc.url + base, body, params(data, svc, 'write', base));
  } else {
    http.put(`${svc.url}${base}/${itemId()}`, body, params(data, svc, 'write', `${base}/{id}`));
  }
}

function value(data, metric, stat) {
  const m = data.metrics[metric];
  return m && m.values && m.values[stat] !== undefined ? m.values[stat] : null;
}

// The JSON chaosext reads (chaosext.load.probes.k6_summary). "ok" flags mean PASSED (k6's handleSummary semantics).
export function handleSummary(data) {
  const thresholds = {};
  let allOk = true;
  for (const [metric, m] of Object.entries(data.metrics)) {
    for (const [expr, t] of Object.entries(m.thresholds || {})) {
      thresholds[`${metric}: ${expr}`] = t.ok;
      allOk = allOk && t.ok;
    }
  }
  const seconds = data.state.testRunDurationMs / 1000;
  const reads = value(data, 'http_req_duration{kind:read}', 'count') || 0;
  const writes = value(data, 'http_req_duration{kind:write}', 'count') || 0;
  const summary = {
    version: 1,
    config: {
      rate: RATE, read_rate: READ_RATE, write_rate: WRITE_RATE, duration: DURATION,
      vus: VUS, max_vus: MAX_VUS, services: SERVICES.map((s) => s.name), tenants: TENANTS.length,
      tenant_header: TENANT_HEADER,
    },
    thresholds,
    thresholds_ok: allOk,
    // failed share of the load's requests (setup's token requests excluded)
    http_req_failed_rate: reads + writes > 0
      ? ((value(data, 'http_req_failed{kind:read}', 'rate') || 0) * reads +
         (value(data, 'http_req_failed{kind:write}', 'rate') || 0) * writes) / (reads + writes)
      : null,
    http_req_failed_rate_by_kind: {
      read: value(data, 'http_req_failed{kind:read}', 'rate'), write: value(data, 'http_req_failed{kind:write}', 'rate'),
    },
    p95_ms: { read: value(data, 'http_req_duration{kind:read}', 'p(95)'), write: value(data, 'http_req_duration{kind:write}', 'p(95)') },
    requests: { read: reads, write: writes, total: reads + writes },
    achieved_rate: seconds > 0 ? (reads + writes) / Math.min(seconds, DURATION_S) : 0,
    dropped_iterations: value(data, 'dropped_iterations', 'count') || 0,
    test_run_seconds: seconds,
    max_vus_used: value(data, 'vus_max', 'max'),
  };
  const line = `k6-tenant-load: ${summary.requests.total} requests (${summary.achieved_rate.toFixed(0)}/s, ` +
    `${reads} read / ${writes} write), failed ${((summary.http_req_failed_rate || 0) * 100).toFixed(3)}%, ` +
    `p95 read ${(summary.p95_ms.read || 0).toFixed(1)} ms write ${(summary.p95_ms.write || 0).toFixed(1)} ms, ` +
    `dropped ${summary.dropped_iterations}, thresholds ${allOk ? 'passed' : 'FAILED'}\n`;
  return { [SUMMARY_FILE]: JSON.stringify(summary, null, 2), stdout: line };
}
