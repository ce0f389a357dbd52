// k6-tenant-load.js — multi-tenant load on the services a target description names (any names, any routes).
//
// The script knows no service and no route: it reads them from the load plan TARGET_JSON, which chaosext writes from
// the target description (docs/target.md; chaosext.load.plan) and passes to it:
//   {"tenant_header": "X-Tenant-ID", "tenants": ["acme", ...],
//    "services": [{"name": "orders", "url": "http://...", "routes": [{"method", "path", "body", "weight", "kind"}]}]}
// Open model: two constant-arrival-rate scenarios, tagged kind=read / kind=write, hold the LOAD_READ_SHARE split of
// K6_RATE requests/s (a target without write routes: reads only, at the whole rate, and the summary says so). Every
// iteration sends ONE request: one route of its kind across all the services, chosen by weight (a route's share of
// its kind is its weight over the kind's total), as a tenant chosen at random per request with that tenant's token.
// A {name} segment of a path (/v2/orders/{id}) gets a number from 1 to 100. Tags are kind, service and name (the route
// template); never the tenant (that would explode series).
//
// Environment (-e):
//   TARGET_JSON      the load plan (required; chaosext's start_k6 writes it; `chaosext render load-plan` by hand)
//   K6_RATE          total requests/s (required; chaosext passes the experiment's K6_RATE), split by LOAD_READ_SHARE
//                    (default 0.9)
//   LOAD_DURATION    how long to hold the rate (default 6m)
//   LOAD_VUS         pre-allocated VUs, split like the rate (default max(20, K6_RATE/25))
//   LOAD_MAX_VUS     VU ceiling, split like the rate (default max(100, K6_RATE/5))
//   LOAD_DROPPED_MAX dropped iterations allowed before the threshold fails (default 0)
//   LOAD_HTTP_TIMEOUT per-request timeout (default 10s)
// (Not K6_DURATION / K6_VUS: k6 itself reads those and they would replace the scenarios.)
//   AUTHORITY_URL    the OIDC issuer; setup() gets one token per tenant by the OAuth2 client-credentials grant
//                    (RFC 6749 4.4) at the token_endpoint of its OIDC discovery
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

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'];
const BY_CHAOSEXT = 'chaosext passes it (start_k6 / start_k6_testrun, from the target description and the ' +
  "experiment's settings); running the script by hand, write the plan with `chaosext render load-plan --out " +
  'plan.json` and give -e TARGET_JSON=plan.json -e K6_RATE=<requests/s>';

function intEnv(name, dflt) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name}=${raw}: expected a whole number >= 0`);
  return n;
}

function requiredEnv(name) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') throw new Error(`${name} is not set: ${BY_CHAOSEXT}`);
  return raw;
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

// The load plan, checked: a plan that cannot be driven stops the script here (k6 inspect, before any fault).
function readPlan(path) {
  let doc;
  try {
    doc = JSON.parse(open(path));
  } catch (e) {
    throw new Error(`TARGET_JSON=${path}: not a readable JSON load plan (${e}); ${BY_CHAOSEXT}`);
  }
  const where = `TARGET_JSON=${path}`;
  if (!doc || !Array.isArray(doc.services) || !Array.isArray(doc.tenants)) {
    throw new Error(`${where}: expected {"tenant_header", "tenants": [...], "services": [...]}`);
  }
  const tenants = doc.tenants.map(String).filter((t) => t);
  if (tenants.length === 0) throw new Error(`${where}: no tenant to send requests as`);
  const header = doc.tenant_header ? String(doc.tenant_header) : '';
  const services = doc.services.map((svc, i) => {
    const name = svc && typeof svc.name === 'string' ? svc.name : '';
    const url = svc && typeof svc.url === 'string' ? svc.url.replace(/\/+$/, '') : '';
    if (!name || !/^https?:\/\/[^/]+/.test(url)) {
      throw new Error(`${where}: services[${i}] needs a name and an http(s) url`);
    }
    const routes = (svc.routes || []).map((r, j) => {
      const here = `${where}: services[${i}] (${name}) routes[${j}]`;
      const method = String(r.method || '').toUpperCase();
      const path = String(r.path || '');
      const weight = r.weight === undefined ? 1 : r.weight;
      const kind = r.kind || (method === 'GET' || method === 'HEAD' ? 'read' : 'write');
      if (!METHODS.includes(method) || !path.startsWith('/')) {
        throw new Error(`${here}: ${method} ${path} is not a route (METHOD /path, methods ${METHODS.join(', ')})`);
      }
      if (!Number.isInteger(weight) || weight < 0) throw new Error(`${here}: weight ${weight} is not a whole number >= 0`);
      if (kind !== 'read' && kind !== 'write') throw new Error(`${here}: kind ${kind} is neither read nor write`);
      return { method, path, body: r.body ? String(r.body) : '', weight, kind };
    });
    return { name, url, routes };
  });
  return { header, tenants, services };
}

// Per kind: every route of that kind (weight > 0) across the services, with its service, and the weights' total.
function targetsOf(services, kind) {
  const routes = [];
  for (const svc of services) {
    for (const r of svc.routes) if (r.kind === kind && r.weight > 0) routes.push({ ...r, service: svc.name, url: svc.url });
  }
  return { routes, total: routes.reduce((sum, r) => sum + r.weight, 0) };
}

const PLAN_PATH = requiredEnv('TARGET_JSON');
const PLAN = readPlan(PLAN_PATH);
const TARGETS = { read: targetsOf(PLAN.services, 'read'), write: targetsOf(PLAN.services, 'write') };
if (TARGETS.read.total === 0 && TARGETS.write.total === 0) {
  throw new Error(`TARGET_JSON=${PLAN_PATH}: no service has a route with a weight above 0; describe what to drive ` +
    'in the target description (services.<name>.routes, docs/target.md)');
}
const RATE_TEXT = requiredEnv('K6_RATE');
const RATE = intEnv('K6_RATE', 0);
const READ_SHARE = Number(__ENV.LOAD_READ_SHARE || '0.9');
if (!(READ_SHARE > 0 && READ_SHARE < 1)) throw new Error(`LOAD_READ_SHARE=${__ENV.LOAD_READ_SHARE}: expected 0 < share < 1`);
// A kind the target has no route of gets no scenario: the other kind carries the whole rate.
const KINDS = ['read', 'write'].filter((k) => TARGETS[k].total > 0);
if (RATE < KINDS.length) {
  throw new Error(`K6_RATE=${RATE_TEXT}: expected at least ${KINDS.length} requests/s (one per scenario: ${KINDS.join(', ')})`);
}
const READ_RATE = KINDS.length === 2 ? Math.min(RATE - 1, Math.max(1, Math.round(RATE * READ_SHARE)))
  : (KINDS[0] === 'read' ? RATE : 0);
const WRITE_RATE = RATE - READ_RATE;
const ONLY = KINDS.length === 1 ? `${KINDS[0]}s only: the target describes no ${KINDS[0] === 'read' ? 'write' : 'read'} route` : '';
const DURATION = __ENV.LOAD_DURATION || '6m';
const DURATION_S = durationSeconds(DURATION);
const VUS = intEnv('LOAD_VUS', Math.max(20, Math.ceil(RATE / 25)));
const MAX_VUS = Math.max(VUS, intEnv('LOAD_MAX_VUS', Math.max(100, Math.ceil(RATE / 5))));
const DROPPED_MAX = intEnv('LOAD_DROPPED_MAX', 0);
const HTTP_TIMEOUT = __ENV.LOAD_HTTP_TIMEOUT || '10s';
const TENANTS = PLAN.tenants;
const TENANT_HEADER = PLAN.header;
const AUTHORITY_URL = (__ENV.AUTHORITY_URL || '').replace(/\/+$/, '');
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
if (!TOKENS_FROM_FILE && !__ENV.TOKEN_ENDPOINT && !AUTHORITY_URL) {
  throw new Error(`AUTHORITY_URL is not set (nor TOKEN_ENDPOINT or TOKENS_FILE): the script needs one to get the tenants' tokens; ${BY_CHAOSEXT}`);
}

function share(total, rate) {
  return Math.max(1, Math.round((total * rate) / RATE));
}

function scenario(kind, rate) {
  return {
    executor: 'constant-arrival-rate',
    exec: kind,
    rate,
    timeUnit: '1s',
    duration: DURATION,
    preAllocatedVUs: share(VUS, rate),
    maxVUs: share(MAX_VUS, rate),
    tags: { kind },
  };
}

const SCENARIOS = {};
const THRESHOLDS = { http_req_failed: ['rate<0.005'], dropped_iterations: [`count<=${DROPPED_MAX}`] };
for (const [kind, rate, p95] of [['read', READ_RATE, 300], ['write', WRITE_RATE, 600]]) {
  if (rate <= 0) continue;
  SCENARIOS[`${kind}s`] = scenario(kind, rate);
  THRESHOLDS[`http_req_duration{kind:${kind}}`] = [`p(95)<${p95}`];
  // per kind too: these exclude setup()'s token requests, so the summary's error rate is the load's alone
  THRESHOLDS[`http_req_failed{kind:${kind}}`] = ['rate<0.005'];
}

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
  scenarios: SCENARIOS,
  thresholds: THRESHOLDS,
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
      'status / chaosext doctor) and AUTHORITY_URL right? Or pass TOKEN_ENDPOINT or TOKENS_FILE.');
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
  if (ONLY) console.log(`k6-tenant-load: ${ONLY}`);
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

function weighted(routes, total) {
  let n = Math.random() * total;
  for (const r of routes) {
    n -= r.weight;
    if (n < 0) return r;
  }
  return routes[routes.length - 1];
}

function itemId() {
  return String(1 + Math.floor(Math.random() * 100));
}

// One request of ``kind``: one of that kind's routes across the services, by weight; a random tenant.
function send(data, kind) {
  const route = weighted(TARGETS[kind].routes, TARGETS[kind].total);
  const tenant = pick(TENANTS);
  const headers = { Authorization: `Bearer ${data.tokens[tenant]}` };
  if (TENANT_HEADER) headers[TENANT_HEADER] = tenant;
  if (route.body) headers['Content-Type'] = 'application/json';
  const path = route.path.replace(/\{[^}/]*\}/g, itemId);
  http.request(route.method, route.url + path, route.body || null,
    { headers, timeout: HTTP_TIMEOUT, tags: { service: route.service, name: route.path } });
}

export function read(data) {
  send(data, 'read');
}

export function write(data) {
  send(data, 'write');
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
      vus: VUS, max_vus: MAX_VUS, services: PLAN.services.map((s) => s.name), tenants: TENANTS.length,
      tenant_header: TENANT_HEADER, kinds: KINDS, only: ONLY,
      routes: Object.fromEntries(KINDS.map((k) => [k, TARGETS[k].routes.length])),
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
    `dropped ${summary.dropped_iterations}, thresholds ${allOk ? 'passed' : 'FAILED'}${ONLY ? `; ${ONLY}` : ''}\n`;
  return { [SUMMARY_FILE]: JSON.stringify(summary, null, 2), stdout: line };
}
