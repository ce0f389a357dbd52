"""Auth probes against the tenant services: cached-key fallback and the fail-open check.

Both probes are judged by ``$.ok`` in the experiment. Before any fault they check the services live (valid tokens of
several tenants accepted, forged tokens rejected). Once an outage is recorded in the run file
(``chaosext.safety.runstate``) they judge what the watch step (``chaosext.metrics.probes.watch_outage``) observed
*during* the outage — after the restore a live check would prove nothing.

Tokens are fetched before the fault (the authority is unreachable during it) and kept in the run file, with the JWKS
and the IdP-signed bad-claim tokens the forgery catalogue needs (``prepare_forgery``). Forged tokens carry REAL
tenants (claim and header): a service must label a request whose token failed ``__unauthenticated__`` (only a
``no_keys`` failure counts for the claimed tenant), which keeps them out of the error rates (docs/experiment.md).
"""
import base64
import json
import time
from typing import Any

import requests
from chaoslib.types import Configuration, Secrets

from chaosext.auth.forgery import CLASSES, MINTED, Material, build_catalogue, key_documents
from chaosext.auth.judge import KeyServer, judge_attempts, merge_judgments, probe_round
from chaosext.config import ExperimentConfig, load_config
from chaosext.metrics.prom import query, query_scalar, wait_for_samples
from chaosext.safety.runstate import judged, load_run, outage_window, update_run

#: the Chaos Toolkit probes (``chaos discover``); prepare_forgery, forgery_plan, ForgeryPlan, record_round and
#: unverified_accepts are helpers of the watch step and the drill
__all__ = ["cached_key_fallback", "no_fail_open", "fetch_tokens"]

#: read route per lab service (docs/architecture.md, "Tenant service HTTP surface")
READ_PATHS = {"policy": "/api/v1/policies", "vuln": "/api/v1/findings", "notify": "/api/v1/notifications"}
#: how many tenants' tokens each check uses
CHECK_TENANTS = 3
#: seconds the metric backstop waits for Prometheus to scrape past the end of the outage
SCRAPE_WAIT_SECONDS = 30.0
#: a service is expected to accept valid tokens until (last successful fetch + max-stale - this margin)
LIFETIME_MARGIN_SECONDS = 2.0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def read_path(service: str) -> str:
    """The authenticated read route probed on ``service`` (``/`` for services the lab does not know)."""
    return READ_PATHS.get(service, "/")


def request_token(cfg: ExperimentConfig, tenant: str, ttl: int, timeout: float = 5.0) -> str:
    """A valid token for ``tenant`` from the lab authority's ``POST /token``."""
    body = {"tenant": tenant, "sub": "chaosext-probe", "scope": "policy:read vuln:read notify:read", "aud": cfg.audience, "ttl": ttl}
    r = requests.post(cfg.authority_url + "/token", json=body, timeout=timeout)
    if r.status_code != 200:
        raise RuntimeError(f"authority {cfg.authority_url}/token answered {r.status_code}: {r.text[:200]}")
    return r.json()["access_token"]


def ensure_tokens(cfg: ExperimentConfig) -> dict[str, str]:
    """Valid tokens of the first tenants: from the run file, TOKENS_FILE, or the lab authority (then kept)."""
    run = load_run(cfg.run_dir)
    tokens: dict[str, str] = dict(run.get("tokens") or {})
    wanted = list(cfg.tenants[:CHECK_TENANTS])
    if all(t in tokens for t in wanted):
        return tokens
    if cfg.tokens_file:
        with open(cfg.tokens_file, encoding="utf-8") as fh:
            tokens.update({k: v for k, v in json.load(fh).items() if k in wanted})
    for tenant in wanted:
        if tenant not in tokens:
            tokens[tenant] = request_token(cfg, tenant, ttl=cfg.outage_seconds + 900)
    update_run(cfg.run_dir, tokens=tokens)
    return tokens


def fetch_tokens(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Fetch (or load from TOKENS_FILE) valid tokens for the first tenants and keep them in the run file.

    Run before the fault: the authority is unreachable during it. Tokens live OUTAGE_SECONDS + 15 min.
    """
    return {"tenants": sorted(ensure_tokens(load_config(configuration)))}


def _fetch_jwks(cfg: ExperimentConfig, timeout: float = 5.0) -> dict:
    try:
        doc = requests.get(cfg.jwks_url, timeout=timeout).json()
        return doc if isinstance(doc, dict) and isinstance(doc.get("keys"), list) else {}
    except (requests.RequestException, ValueError):
        return {}


def _mint_via_authority(cfg: ExperimentConfig, tenant: str) -> Any:
    """``mint(class, overrides, omit)`` through the lab authority's ``POST /token`` (``test_claims``/``omit``).

    None for real IdPs (TOKENS_FILE given): they do not sign tokens with bad claims, so those classes are skipped."""
    if cfg.tokens_file:
        return None

    def mint(name: str, overrides: dict[str, Any], omit: tuple[str, ...]) -> str | None:
        body = {"tenant": tenant, "sub": "chaosext-probe", "scope": "policy:read vuln:read notify:read",
                "aud": cfg.audience, "ttl": cfg.outage_seconds + 900, "test_claims": overrides, "omit": list(omit)}
        try:
            r = requests.post(cfg.authority_url + "/token", json=body, timeout=5)
            return r.json()["access_token"] if r.status_code == 200 else None
        except (requests.RequestException, ValueError, KeyError):
            return None

    return mint


def prepare_forgery(cfg: ExperimentConfig) -> dict[str, Any]:
    """Before the fault: fetch the JWKS and have the IdP sign the bad-claim tokens; kept in the run file (0600)."""
    run = load_run(cfg.run_dir)
    if run.get("forgery"):
        return run["forgery"]
    tokens = ensure_tokens(cfg)
    tenant = cfg.tenants[0]
    material = Material(jwks=_fetch_jwks(cfg), token=tokens[tenant], tenant=tenant,
                        mint=_mint_via_authority(cfg, tenant))
    minted = {}
    for name in MINTED:
        if name not in cfg.forgery_skip:
            minted.update({f.name: f.token for f in CLASSES[name](material)})
    prepared = {"jwks": material.jwks, "minted": minted}
    update_run(cfg.run_dir, forgery=prepared)
    return prepared


class ForgeryPlan:
    """The catalogue for one run, and the key server its jku/x5u forgeries point at (started per round)."""

    def __init__(self, cfg: ExperimentConfig, prepare: bool = True) -> None:
        # during the outage the IdP is unreachable: use what was prepared before the fault, never wait on it
        prepared = prepare_forgery(cfg) if prepare else (load_run(cfg.run_dir).get("forgery") or {})
        tokens = ensure_tokens(cfg)
        tenant = cfg.tenants[0]
        other = next((t for t in cfg.tenants[1:] if t != tenant), "")
        minted = dict(prepared.get("minted") or {})
        with KeyServer({}) as probe:  # a free loopback port for the key URL; the rounds serve on it
            port = int(probe.url.rsplit(":", 1)[1])
        self.key_url = f"http://127.0.0.1:{port}"
        self.material = Material(jwks=prepared.get("jwks") or {}, token=tokens[tenant], tenant=tenant,
                                 other_tenant=other, key_url=self.key_url,
                                 mint=lambda name, overrides, omit: minted.get(name))
        self.forgeries, self.skipped = build_catalogue(self.material, cfg.forgery_skip)
        if "alg-confusion" in self.skipped and not prepared.get("jwks"):
            self.skipped["alg-confusion"] = "the JWKS could not be fetched before the fault"
        if not prepare and not prepared:
            for name in set(MINTED) & set(self.skipped):
                self.skipped[name] = "not prepared before the fault (no-fail-open was not in the steady state)"
        self.documents = key_documents(self.material)
        self.port = port
        self.key_fetches: list[str] = []

    def round(self, cfg: ExperimentConfig, tick: int | None = None,
              services: dict[str, str] | None = None) -> list[dict]:
        """One round (all variants when ``tick`` is None, else this tick's rotation) against every service."""
        with KeyServer(self.documents, port=self.port) as keys:
            attempts = probe_round(services if services is not None else cfg.services, self.forgeries,
                                   cfg.tenant_header, cfg.forgery_routes, tick, cfg.forgery_concurrency,
                                   cfg.forgery_timeout)
        self.key_fetches.extend(keys.fetches)
        return attempts

    def judge(self, cfg: ExperimentConfig, attempts: list[dict], block_time: float | None) -> dict[str, Any]:
        """judge_attempts with this run's settings; a fetch of the probe's key URL is itself a finding."""
        j = judge_attempts(attempts, cfg.refused_statuses, self.skipped, block_time)
        if self.key_fetches:
            j["key_url_fetched"] = sorted(set(self.key_fetches))
            j["ok"] = False
            j["why"] = "; ".join(filter(None, [j["why"], f"a service fetched the key URL a forged token named "
                                                          f"({', '.join(j['key_url_fetched'])})"]))
        return j


def record_round(cfg: ExperimentConfig, plan: ForgeryPlan, attempts: list[dict]) -> dict[str, dict[str, int]]:
    """Judge one watch tick's forged requests, append the judgment to the run file (``forgery_ticks``) and return
    per service {tried, refused, accepted, inconclusive} for the tick's observation."""
    run = load_run(cfg.run_dir)
    start = (run.get("outage") or {}).get("start")
    j = plan.judge(cfg, attempts, start)
    update_run(cfg.run_dir, forgery_ticks=(run.get("forgery_ticks") or []) + [j])
    refused = set(cfg.refused_statuses)
    per: dict[str, dict[str, int]] = {}
    for a in attempts:
        c = per.setdefault(a["service"], {"tried": 0, "refused": 0, "accepted": 0, "inconclusive": 0})
        c["tried"] += 1
        c["refused" if a["status"] in refused else "accepted" if 200 <= a["status"] < 300 else "inconclusive"] += 1
    return per


def forgery_plan(cfg: ExperimentConfig) -> ForgeryPlan | None:
    """The watch step's catalogue (None when there is no valid token to build it from)."""
    try:
        return ForgeryPlan(cfg, prepare=False)
    except (KeyError, IndexError, OSError, RuntimeError, requests.RequestException):
        return None


def call(cfg: ExperimentConfig, service: str, url: str, token: str, tenant: str, timeout: float = 3.0) -> int:
    """GET the service's read route with ``token`` for ``tenant``: the HTTP status, or 0 when it did not answer."""
    try:
        r = requests.get(url + read_path(service), timeout=timeout,
                         headers={"Authorization": f"Bearer {token}", cfg.tenant_header: tenant})
        return r.status_code
    except requests.RequestException:
        return 0


def health(url: str, timeout: float = 3.0) -> dict[str, Any]:
    """The service's ``/healthz`` ``jwks`` block ({"state": ..., "age_seconds": ...}); {} when unavailable."""
    try:
        r = requests.get(url + "/healthz", timeout=timeout)
        return dict(r.json().get("jwks") or {})
    except (requests.RequestException, ValueError, AttributeError):
        return {}


def _live_fallback(cfg: ExperimentConfig) -> dict:
    tokens = ensure_tokens(cfg)
    failures = []
    checks = 0
    for service, url in cfg.services.items():
        for tenant, token in tokens.items():
            status = call(cfg, service, url, token, tenant)
            checks += 1
            if status != 200:
                failures.append({"service": service, "tenant": tenant, "status": status})
    return {"phase": "before-fault", "ok": checks > 0 and not failures, "checks": checks, "failures": failures[:10]}


def _service_deadlines(cfg: ExperimentConfig, run: dict, start: float) -> dict[str, float]:
    """Per service: until when its cache must keep accepting valid tokens (last good fetch + max-stale - margin).

    The last good fetch is read from the service's first observation in the outage (time - age); without an age,
    the most pessimistic assumption (fetched a full TTL before the outage) is used.
    """
    deadlines: dict[str, float] = {}
    for obs in run.get("observations") or []:
        for service, s in (obs.get("services") or {}).items():
            if service in deadlines:
                continue
            age = s.get("age")
            fetched = obs["t"] - float(age) if isinstance(age, (int, float)) else start - cfg.jwks_ttl
            deadlines[service] = fetched + cfg.jwks_max_stale - LIFETIME_MARGIN_SECONDS
    return deadlines


def cached_key_fallback(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Valid tokens of several tenants are accepted by every service while its cache is within its lifetime.

    Before the fault: a live check. After it: every valid-token request the watch step made while the service's
    cache was within max-stale of its last good fetch must have got 200. ``ok`` false names the failures.
    """
    cfg = load_config(configuration)
    run = load_run(cfg.run_dir)
    window = outage_window(run)
    if window is None:
        return _live_fallback(cfg)
    if (done := judged(run, "cached_key_fallback")) is not None:
        return done
    deadlines = _service_deadlines(cfg, run, window[0])
    checks, failures, after_lifetime = 0, [], 0
    for obs in run.get("observations") or []:
        for service, s in (obs.get("services") or {}).items():
            for tenant, status in (s.get("valid") or {}).items():
                if obs["t"] >= deadlines.get(service, 0):
                    after_lifetime += 1
                    continue
                checks += 1
                if status != 200:
                    failures.append({"service": service, "tenant": tenant, "status": status,
                                     "elapsed": round(obs["elapsed"], 1), "cache": s.get("state")})
    return {"phase": "outage", "ok": checks > 0 and not failures, "checks": checks, "failures": failures[:10],
            "failed": len(failures), "checks_past_lifetime": after_lifetime,
            "max_stale_seconds": cfg.jwks_max_stale,
            "note": "" if checks else "no valid-token check ran within the cache lifetime during the outage"}


def _summary(j: dict[str, Any]) -> dict[str, Any]:
    return {k: j.get(k) for k in ("ok", "tried", "accepted_count", "inconclusive_count", "why")}


def _live_fail_open(cfg: ExperimentConfig, phase: str) -> dict:
    plan = ForgeryPlan(cfg)
    j = plan.judge(cfg, plan.round(cfg), None)
    return {"phase": phase, **j}


def unverified_accepts(cfg: ExperimentConfig, start: float, end: float) -> dict[str, Any]:
    """The metric-side backstop: requests the services themselves counted as accepted WITHOUT a verified key between
    ``start`` and ``end`` (UNVERIFIED_ACCEPTS_SELECTOR; the lab's is jwt_validations_total{result="valid",
    key_source="none"}). Catches acceptance of tokens the catalogue does not send, e.g. k6's own traffic let in
    while the cache was expired. ``exported`` False (never a failure) when Prometheus has no such series."""
    sel = cfg.unverified_accepts_selector
    if not sel:
        return {"ok": True, "exported": False, "note": "UNVERIFIED_ACCEPTS_SELECTOR=off: backstop switched off"}
    wait_for_samples(cfg.prometheus_url, end, timeout=SCRAPE_WAIT_SECONDS)
    try:
        if not query(cfg.prometheus_url, f"count({sel})", at=end + 1):
            return {"ok": True, "exported": False, "selector": sel,
                    "note": "the services do not export this series; see docs/experiment.md to add it"}
        before = query_scalar(cfg.prometheus_url, f"sum({sel})", at=start)
        after = query_scalar(cfg.prometheus_url, f"sum({sel})", at=end + 1)
    except (requests.RequestException, RuntimeError, ValueError) as exc:
        return {"ok": False, "exported": None, "selector": sel,
                "note": f"Prometheus query failed ({type(exc).__name__}); the backstop could not be checked"}
    count = max(0.0, after - before)
    return {"ok": count == 0, "exported": True, "selector": sel, "unverified_accepts": count}


def no_fail_open(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """No service accepts a forged token: the whole forgery catalogue (``chaosext.auth.forgery``), before, during
    and after the outage, on a read and a write route of every service, with real tenants.

    Before the fault: a live round (every variant). After it: every round the watch step made during the outage
    (every class each tick) plus a live round now, after the restore. A refusal is a status in REFUSED_STATUSES;
    2xx is a fail-open finding; anything else is inconclusive and fails too (``why`` says what to allow).
    ``classes`` shows, per class, tried/refused/accepted/inconclusive and the first acceptance in seconds after the
    block (``first_accepted_s``); skipped classes say why.
    """
    cfg = load_config(configuration)
    run = load_run(cfg.run_dir)
    window = outage_window(run)
    if window is None:
        return _live_fail_open(cfg, "before-fault")
    if (done := judged(run, "no_fail_open")) is not None:
        return done
    during = merge_judgments(run.get("forgery_ticks") or [])
    after = _live_fail_open(cfg, "after-restore")
    total = merge_judgments([during, after])
    if during.get("key_url_fetched") or after.get("key_url_fetched"):
        total["ok"] = False
        total["key_url_fetched"] = sorted(set(during.get("key_url_fetched") or []) |
                                          set(after.get("key_url_fetched") or []))
    if not during.get("tried"):
        total["ok"] = False
        total["why"] = "; ".join(filter(None, [total["why"], "no forged request was sent during the outage"]))
    backstop = unverified_accepts(cfg, window[0], window[1])
    if not backstop["ok"]:
        total["ok"] = False
        total["why"] = "; ".join(filter(None, [total["why"], (
            f"METRIC BACKSTOP: the services counted {backstop['unverified_accepts']:.0f} request(s) accepted "
            f"without a verified key during the outage ({backstop['selector']})") if backstop.get("exported")
            else backstop["note"]]))
    return {"phase": "outage", **total, "outage": _summary(during), "after_restore": _summary(after),
            "metric_backstop": backstop}
