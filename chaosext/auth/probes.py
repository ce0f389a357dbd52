"""Auth probes against the tenant services: cached-key fallback and the fail-open check.

Steady-state probes (baseline before the fault, recovery after the restore, live): ``valid_tokens_accepted`` and
``forged_tokens_refused``. Outage checks (judged once by ``judge_outage`` from what the watch step observed *during*
the outage — after the restore a live check would prove nothing): ``cached_key_fallback`` and ``no_fail_open``.
The requests themselves (a tenant's token on a service's read route, ``/healthz``) are ``chaosext.core.services``.

Tokens are fetched before the fault (the authority is unreachable during it) by the client-credentials grant
(``chaosext.core.tokens``) and kept in this process's memory for the run, never in a file, with the JWKS and the
IdP-signed bad-claim tokens the forgery catalogue needs (``prepare_forgery``). Forged tokens carry REAL tenants (claim
and header): a service must label a request whose token failed ``__unauthenticated__`` (only a ``no_keys`` failure
counts for the claimed tenant), which keeps them out of the error rates (docs/experiment.md).
"""
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import requests
from chaoslib.types import Configuration, Secrets

from chaosext.auth import keyserver
from chaosext.auth.forgery import CLASSES, MINTED, Material, build_catalogue, key_documents
from chaosext.auth.judge import Attempt, judge_attempts, merge_judgments, probe_round
from chaosext.core.config import ExperimentConfig, load_config
from chaosext.core.errors import activity
from chaosext.core.judging import Judging, outage_check, retry_until
from chaosext.core.runfile import CheckResult, Run, load_run
from chaosext.core.services import call
from chaosext.core.tokens import (
    TokenError,
    client_credentials_token,
    token_endpoint,
    token_settings,
    tokens_for,
)
from chaosext.metrics.prom import query, query_scalar, wait_for_samples

#: the Chaos Toolkit probes (``chaos discover``); ensure_tokens, prepare_forgery, forgery_plan, ForgeryPlan and
#: unverified_accepts are helpers of the safety control, the watch step and the drill
__all__ = ["valid_tokens_accepted", "forged_tokens_refused", "cached_key_fallback", "no_fail_open", "fetch_tokens"]

#: how many tenants' tokens each check uses
CHECK_TENANTS = 3
#: seconds the metric backstop waits for Prometheus to scrape past the end of the outage
SCRAPE_WAIT_SECONDS = 30.0
#: a service is expected to accept valid tokens until (last successful fetch + max-stale - this margin)
LIFETIME_MARGIN_SECONDS = 2.0
#: probe tokens must stay valid this long beyond OUTAGE_SECONDS (baseline, watch, recovery)
TOKEN_MARGIN_SECONDS = 600


def ensure_tokens(cfg: ExperimentConfig, secrets: Secrets = None, configuration: Configuration = None,
                  tenants: Sequence[str] | None = None) -> dict[str, str]:
    """Valid tokens of the first tenants (or of ``tenants``): from this process's memory, TOKENS_FILE, or the
    client-credentials grant (then kept in memory for the run; never written to a file, the journal or a log).

    Raises ``chaosext.core.tokens.TokenError`` saying what to fix.
    """
    settings = token_settings(configuration or {"authority_url": cfg.authority_url,
                                                "chaosext_lab_dir": cfg.lab_dir, "tokens_file": cfg.tokens_file},
                              secrets)
    wanted = list(tenants or cfg.tenants[:CHECK_TENANTS])
    return tokens_for(settings, wanted, min_valid_seconds=cfg.outage_seconds + TOKEN_MARGIN_SECONDS)


@activity
def fetch_tokens(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Get valid tokens for the first tenants (client credentials, or TOKENS_FILE) and keep them in memory.

    Run before the fault: the authority is unreachable during it. Returns the tenants only, never a token.
    """
    return {"tenants": sorted(ensure_tokens(load_config(configuration), secrets, configuration))}


def _fetch_jwks(cfg: ExperimentConfig, timeout: float = 5.0) -> dict[str, Any]:
    try:
        doc = requests.get(cfg.jwks_url, timeout=timeout).json()
        return doc if isinstance(doc, dict) and isinstance(doc.get("keys"), list) else {}
    except (requests.RequestException, ValueError):
        return {}


Mint = Callable[[str, dict[str, Any], tuple[str, ...]], str | None]


def _mint_via_authority(cfg: ExperimentConfig, tenant: str) -> Mint | None:
    """``mint(class, overrides, omit)`` through the lab authority's ``POST /token`` (``test_claims``/``omit``).

    None for real IdPs (TOKENS_FILE given): they do not sign tokens with bad claims, so those classes are skipped."""
    settings = token_settings({"authority_url": cfg.authority_url, "chaosext_lab_dir": cfg.lab_dir,
                               "tokens_file": cfg.tokens_file})
    if cfg.tokens_file or settings.source != "lab client":
        return None  # only the lab's own authority honours test_claims; a real IdP would hand out VALID tokens

    def mint(name: str, overrides: dict[str, Any], omit: tuple[str, ...]) -> str | None:
        params = {"tenant": tenant, "audience": cfg.audience, "ttl": str(cfg.outage_seconds + 900),
                  "test_claims": json.dumps(overrides), "omit": ",".join(omit)}
        try:
            endpoint = token_endpoint(settings, 5)
            return str(client_credentials_token(endpoint, settings.client_id, settings.client_secret,
                                                settings.auth_method, params, timeout=5)["access_token"])
        except (TokenError, KeyError):
            return None

    return mint


#: run directory -> {"jwks": ..., "minted": {class: token}}: like the tokens, in this process's memory only
_PREPARED: dict[str, dict[str, Any]] = {}


def prepare_forgery(cfg: ExperimentConfig) -> dict[str, Any]:
    """Before the fault: fetch the JWKS and have the IdP sign the bad-claim tokens; kept in memory (they are tokens)."""
    if cfg.run_dir in _PREPARED:
        return _PREPARED[cfg.run_dir]
    tokens = ensure_tokens(cfg)
    tenant = cfg.tenants[0]
    material = Material(jwks=_fetch_jwks(cfg), token=tokens[tenant], tenant=tenant,
                        mint=_mint_via_authority(cfg, tenant))
    minted: dict[str, str | None] = {}
    for name in MINTED:
        if name not in cfg.forgery_skip:
            minted.update({f.name: f.token for f in CLASSES[name](material)})
    prepared = _PREPARED[cfg.run_dir] = {"jwks": material.jwks, "minted": minted}
    return prepared


class ForgeryPlan:
    """The catalogue for one run, and the key URL its jku/x5u forgeries point at: served by the run's one key
    listener (``chaosext.auth.keyserver``), or "not testable here" when the services may not reach this machine."""

    def __init__(self, cfg: ExperimentConfig, prepare: bool = True, configuration: Configuration = None) -> None:
        # during the outage the IdP is unreachable: use what was prepared before the fault, never wait on it
        prepared = prepare_forgery(cfg) if prepare else _PREPARED.get(cfg.run_dir, {})
        tokens = ensure_tokens(cfg)
        tenant = cfg.tenants[0]
        other = next((t for t in cfg.tenants[1:] if t != tenant), "")
        minted = dict(prepared.get("minted") or {})
        self.keys = keyserver.key_url_for(cfg, configuration)
        self.key_url = self.keys.url
        self.material = Material(jwks=prepared.get("jwks") or {}, token=tokens[tenant], tenant=tenant,
                                 other_tenant=other, key_url=self.key_url,
                                 mint=lambda name, overrides, omit: minted.get(name))
        self.forgeries, self.skipped = build_catalogue(self.material, cfg.forgery_skip)
        if "alg-confusion" in self.skipped and not prepared.get("jwks"):
            self.skipped["alg-confusion"] = "the JWKS could not be fetched before the fault"
        if not prepare and not prepared:
            for name in set(MINTED) & set(self.skipped):
                self.skipped[name] = "not prepared before the fault (forged-tokens-refused was not in the baseline)"
        if not self.key_url:
            for name in {"jku", "x5u"} & set(self.skipped) - set(cfg.forgery_skip):
                self.skipped[name] = self.keys.reason  # never tried, never counted as refused
        self.documents = key_documents(self.material)
        self.keys.serve(self.documents)
        self.key_fetches: list[str] = []

    def round(self, cfg: ExperimentConfig, tick: int | None = None,
              services: dict[str, str] | None = None) -> list[Attempt]:
        """One round (all variants when ``tick`` is None, else this tick's rotation) against every service."""
        attempts = probe_round(services if services is not None else cfg.services, self.forgeries,
                               cfg.tenant_header, cfg.forgery_routes, tick, cfg.forgery_concurrency,
                               cfg.forgery_timeout)
        self.key_fetches = self.keys.fetches()
        return attempts

    def judge(self, cfg: ExperimentConfig, attempts: Sequence[Mapping[str, Any]],
              block_time: float | None) -> CheckResult:
        """judge_attempts with this run's settings; a fetch of the probe's key URL is itself a finding."""
        j = judge_attempts(attempts, cfg.refused_statuses, self.skipped, block_time)
        if self.key_fetches:
            j["key_url_fetched"] = sorted(set(self.key_fetches))
            j["ok"] = False
            j["why"] = "; ".join(filter(None, [j["why"], f"a service fetched the key URL a forged token named "
                                                          f"({', '.join(j['key_url_fetched'])})"]))
        return j


def forgery_plan(cfg: ExperimentConfig, configuration: Configuration = None) -> ForgeryPlan | None:
    """The watch step's catalogue (None when there is no valid token to build it from)."""
    try:
        return ForgeryPlan(cfg, prepare=False, configuration=configuration)
    except (KeyError, IndexError, OSError, RuntimeError, requests.RequestException):
        return None


@activity
def valid_tokens_accepted(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """Valid tokens of several tenants are accepted (200) by every service, live.

    Baseline (before the fault): at once. Recovery (after the restore): retried until every service accepts them or
    RECOVERY_SECONDS have passed since the restore.
    """
    cfg = load_config(configuration)
    run = load_run(cfg.run_dir)
    result = retry_until(lambda: _live_fallback(cfg, secrets, configuration), lambda r: bool(r["ok"]),
                         run.recovery_deadline(cfg.recovery_seconds), 1.0)
    return {**result, "phase": run.phase}


@activity
def forged_tokens_refused(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """The whole forgery catalogue (every variant, ``chaosext.auth.forgery``) is refused by every service on its read
    and write route, live: the baseline before the fault and the recovery after the restore.

    A refusal is a status in REFUSED_STATUSES; 2xx is a fail-open finding; anything else is inconclusive and fails
    too (``why`` says which statuses to allow). ``classes`` shows tried/refused/accepted/inconclusive per class."""
    cfg = load_config(configuration)
    return _live_fail_open(cfg, load_run(cfg.run_dir).phase, configuration)


def _live_fallback(cfg: ExperimentConfig, secrets: Secrets = None, configuration: Configuration = None) -> CheckResult:
    tokens = ensure_tokens(cfg, secrets, configuration)
    failures = []
    checks = 0
    for service, url in cfg.services.items():
        for tenant, token in tokens.items():
            status = call(cfg, service, url, token, tenant)
            checks += 1
            if status != 200:
                failures.append({"service": service, "tenant": tenant, "status": status})
    return {"phase": "before-fault", "ok": checks > 0 and not failures, "checks": checks, "failures": failures[:10]}


def _service_deadlines(cfg: ExperimentConfig, run: Run, start: float) -> dict[str, float]:
    """Per service: until when its cache must keep accepting valid tokens (last good fetch + max-stale - margin).

    The last good fetch is read from the service's first observation in the outage (time - age); without an age,
    the most pessimistic assumption (fetched a full TTL before the outage) is used.
    """
    deadlines: dict[str, float] = {}
    for obs in run.observations:
        for service, s in obs.services.items():
            if service in deadlines:
                continue
            fetched = obs.t - s.age if s.age is not None else start - cfg.jwks_ttl
            deadlines[service] = fetched + cfg.jwks_max_stale - LIFETIME_MARGIN_SECONDS
    return deadlines


@activity
@outage_check("cached-key fallback")
def cached_key_fallback(judging: Judging) -> CheckResult:
    """Valid tokens of several tenants are accepted by every service while its cache is within its lifetime.

    Before the fault: a live check. After it: every valid-token request the watch step made while the service's
    cache was within max-stale of its last good fetch must have got 200. ``ok`` false names the failures.
    """
    cfg, run = judging.cfg, judging.run
    deadlines = _service_deadlines(cfg, run, judging.start)
    checks, failures, after_lifetime = 0, [], 0
    for obs in run.observations:
        for service, s in obs.services.items():
            for tenant, status in s.valid.items():
                if obs.t >= deadlines.get(service, 0):
                    after_lifetime += 1
                    continue
                checks += 1
                if status != 200:
                    failures.append({"service": service, "tenant": tenant, "status": status,
                                     "elapsed": round(obs.elapsed, 1), "cache": s.state})
    return {"phase": "outage", "ok": checks > 0 and not failures, "checks": checks, "failures": failures[:10],
            "failed": len(failures), "checks_past_lifetime": after_lifetime,
            "max_stale_seconds": cfg.jwks_max_stale,
            "note": "" if checks else "no valid-token check ran within the cache lifetime during the outage"}


def _live_fail_open(cfg: ExperimentConfig, phase: str, configuration: Configuration = None) -> CheckResult:
    plan = ForgeryPlan(cfg, configuration=configuration)
    j = plan.judge(cfg, plan.round(cfg), None)
    return {"phase": phase, **j}


def unverified_accepts(cfg: ExperimentConfig, start: float, end: float) -> dict[str, Any]:
    """The metric-side backstop: requests the services themselves counted as accepted WITHOUT a verified key between
    ``start`` and ``end`` (METRIC_UNVERIFIED_ACCEPTS; the lab's is jwt_validations_total{result="valid",
    key_source="none"}). Catches acceptance of tokens the catalogue does not send, e.g. k6's own traffic let in
    while the cache was expired. ``exported`` False (never a failure) when Prometheus has no such series."""
    sel = cfg.unverified_accepts_selector
    if not sel:
        return {"ok": True, "exported": False, "note": "METRIC_UNVERIFIED_ACCEPTS=off: backstop switched off"}
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


@activity
@outage_check("fail-open during the outage")
def no_fail_open(judging: Judging) -> CheckResult:
    """No service accepts a forged token during the outage: the whole forgery catalogue (``chaosext.auth.forgery``)
    on a read and a write route of every service, with real tenants, plus the services' own metric (backstop).

    Judges every round the watch step made during the outage (every class each tick; the baseline and recovery
    rounds are ``forged_tokens_refused``). A refusal is a status in REFUSED_STATUSES;
    2xx is a fail-open finding; anything else is inconclusive and fails too (``why`` says what to allow).
    ``classes`` shows, per class, tried/refused/accepted/inconclusive and the first acceptance in seconds after the
    block (``first_accepted_s``); skipped classes say why.
    """
    cfg = judging.cfg
    ticks = judging.run.forgery_ticks
    total = merge_judgments(ticks)
    fetched = sorted({p for j in ticks for p in j.get("key_url_fetched") or []})
    if fetched:
        total["ok"] = False
        total["key_url_fetched"] = fetched
    if not total.get("tried"):
        total["ok"] = False
        total["why"] = "; ".join(filter(None, [total["why"], "no forged request was sent during the outage"]))
    backstop = unverified_accepts(cfg, *judging.window)
    if not backstop["ok"]:
        total["ok"] = False
        total["why"] = "; ".join(filter(None, [total["why"], (
            f"METRIC BACKSTOP: the services counted {backstop['unverified_accepts']:.0f} request(s) accepted "
            f"without a verified key during the outage ({backstop['selector']})") if backstop.get("exported")
            else backstop["note"]]))
    return {"phase": "outage", **total, "metric_backstop": backstop}
