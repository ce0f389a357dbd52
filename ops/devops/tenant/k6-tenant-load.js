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
//   AUTHORITY_URL    default http://127.0.0.2:8440; setup() gets one token per tenant from POST /token
//   TOKENS_FILE      JSON {"t01": "<jwt>", ...}: use these tokens instead of asking the Authority
//   TOKEN_AUDIENCE   default stellaops-api;  TOKEN_SCOPE default "<svc>:read <svc>:write" for every service
//   TOKEN_TTL        token lifetime in seconds (default: duration + 15 min)
//   SUMMARY_FILE     where handleSummary writes the JSON that chaosext reads (default k6-summary.json)
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
const AUDIENCE = __ENV.TOKEN_AUDIENCE || 'stellaops-api';
const SCOPE = __ENV.TOKEN_SCOPE || Object.keys(RESOURCES).map((s) => `${s}:read ${s}:write`).join(' ');
const TOKEN_TTL = intEnv('TOKEN_TTL', Math.ceil(DURATION_S) + 900);
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

export function setup() {
  if (TOKENS_FROM_FILE) {
    const missing = TENANTS.filter((t) => !TOKENS_FROM_FILE[t]);
    if (missing.length) throw new Error(`TOKENS_FILE has no token for tenant(s) ${missing.join(', ')}`);
    return { tokens: TOKENS_FROM_FILE };
  }
  const tokens = {};
  for (const tenant of TENANTS) {
    const body = JSON.stringify({ tenant, sub: `k6-${tenant}`, scope: SCOPE, aud: AUDIENCE, ttl: TOKEN_TTL });
    const res = http.post(`${AUTHORITY_URL}/token`, body, {
      headers: { 'Content-Type': 'application/json' },
      responseType: 'text',
      timeout: '10s',
      tags: { name: 'setup /token' },
    });
    if (res.status !== 200) {
      throw new Error(`POST ${AUTHORITY_URL}/token for tenant ${tenant} answered ${res.status} ${res.error || ''}: ` +
        'is the Authority up (chaosext lab status) and AUTHORITY_URL right? Or pass TOKENS_FILE.');
    }
    tokens[tenant] = res.json('access_token');
  }
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
