"""Auth probes against the tenant services: cached-key fallback and the fail-open check.

Steady-state probes (baseline before the fault, recovery after the restore, live): ``valid_tokens_accepted`` and
``forged_tokens_refused``. Outage checks (judged once by ``judge_outage`` from what the watch step observed *during*
the outage — after the restore a live check would prove nothing): ``cached_key_fallback`` and ``no_fail_open``.

Tokens are fetched before the fault (the authority is unreachable during it) by the client-credentials grant
(``chaosext.auth.tokens``) and kept in this process's memory for the run, never in a file. Forged tokens
carry the tenant ``chaosext-probe`` (claim and header) so the error-rate probe can leave them out.
"""
import base64
import json
import time
from typing import Any

import requests
from chaoslib.types import Configuration, Secrets

from chaosext.auth.tokens import token_settings, tokens_for
from chaosext.config import ExperimentConfig, load_config
from chaosext.metrics.prom import PROBE_TENANT
from chaosext.safety.runstate import judged, load_run, outage_window, phase

__all__ = ["valid_tokens_accepted", "forged_tokens_refused", "cached_key_fallback", "no_fail_open", "fetch_tokens"]

#: read route per lab service (docs/architecture.md, "Tenant service HTTP surface")
READ_PATHS = {"policy": "/api/v1/policies", "vuln": "/api/v1/findings", "notify": "/api/v1/notifications"}
#: how many tenants' tokens each check uses
CHECK_TENANTS = 3
#: a service is expected to accept valid tokens until (last successful fetch + max-stale - this margin)
LIFETIME_MARGIN_SECONDS = 2.0
#: probe tokens must stay valid this long beyond OUTAGE_SECONDS (baseline, watch, recovery)
TOKEN_MARGIN_SECONDS = 600


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def read_path(service: str) -> str:
    """The authenticated read route probed on ``service`` (``/`` for services the lab does not know)."""
    return READ_PATHS.get(service, "/")


def ensure_tokens(cfg: ExperimentConfig, secrets: Secrets = None, configuration: Configuration = None,
                  tenants: list = None) -> dict[str, str]:
    """Valid tokens of the first tenants (or of ``tenants``): from this process's memory, TOKENS_FILE, or the
    client-credentials grant (then kept in memory for the run; never written to a file, the journal or a log).

    Raises ``chaosext.auth.tokens.TokenError`` saying what to fix.
    """
    settings = token_settings(configuration or {"authority_url": cfg.authority_url,
                                                "chaosext_lab_dir": cfg.lab_dir, "tokens_file": cfg.tokens_file},
                              secrets)
    wanted = list(tenants or cfg.tenants[:CHECK_TENANTS])
    return tokens_for(settings, wanted, min_valid_seconds=cfg.outage_seconds + TOKEN_MARGIN_SECONDS)


def fetch_tokens(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Get valid tokens for the first tenants (client credentials, or TOKENS_FILE) and keep them in memory.

    Run before the fault: the authority is unreachable during it. Returns the tenants only, never a token.
    """
    return {"tenants": sorted(ensure_tokens(load_config(configuration), secrets, configuration))}


def forged_tokens(valid_token: str) -> dict[str, str]:
    """Two tokens a correct service must reject: one signed by a key it never saw, one with a broken signature.

    Both keep the valid token's claims (issuer, audience, expiry) except the tenant, which becomes
    ``chaosext-probe``, so only the signature is wrong.
    """
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    header_b64, payload_b64, sig_b64 = valid_token.split(".")
    claims = json.loads(_b64url_decode(payload_b64))
    for key in ("tenant", "tid", "tenant_id"):
        if key in claims:
            claims[key] = PROBE_TENANT
    claims.setdefault("tenant", PROBE_TENANT)
    unknown_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unknown = jwt.encode(claims, unknown_key, algorithm="RS256",
                         headers={"kid": "chaosext-unknown-" + str(int(time.time()))})
    # same header and signature as the valid token, tampered claims: the signature no longer matches
    tampered = ".".join([header_b64, _b64url(json.dumps(claims, separators=(",", ":")).encode()), sig_b64])
    return {"unknown_key": unknown, "bad_signature": tampered}


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


def _not_judged(what: str) -> dict:
    """An outage check of a run that recorded no outage: never a vacuous pass."""
    return {"phase": "no-outage", "ok": False,
            "error": f"{what} is judged over the outage window, and this run recorded no outage"}


def valid_tokens_accepted(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Valid tokens of several tenants are accepted (200) by every service, live.

    Baseline (before the fault): at once. Recovery (after the restore): retried until every service accepts them or
    RECOVERY_SECONDS have passed since the restore.
    """
    cfg = load_config(configuration)
    run = load_run(cfg.run_dir)
    phase_ = phase(run)
    deadline = float((run.get("outage") or {}).get("end") or 0) + cfg.recovery_seconds if phase_ == "recovery" else 0
    while True:
        result = _live_fallback(cfg, secrets, configuration)
        if result["ok"] or time.time() >= deadline:
            break
        time.sleep(1.0)
    return {**result, "phase": phase_}


def forged_tokens_refused(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Forged tokens are refused by every service, live (baseline before the fault, recovery after the restore)."""
    cfg = load_config(configuration)
    return {**_live_fail_open(cfg, secrets, configuration), "phase": phase(load_run(cfg.run_dir))}


def _live_fallback(cfg: ExperimentConfig, secrets: Secrets = None, configuration: Configuration = None) -> dict:
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
        return _not_judged("cached-key fallback")
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


def _live_fail_open(cfg: ExperimentConfig, secrets: Secrets = None, configuration: Configuration = None) -> dict:
    tokens = ensure_tokens(cfg, secrets, configuration)
    forged = forged_tokens(next(iter(tokens.values())))
    accepted = []
    checks = 0
    for service, url in cfg.services.items():
        for kind, token in forged.items():
            status = call(cfg, service, url, token, PROBE_TENANT)
            checks += 1
            if 200 <= status < 300:
                accepted.append({"service": service, "token": kind, "status": status})
    return {"phase": "before-fault", "ok": checks > 0 and not accepted, "checks": checks, "accepted": accepted}


def no_fail_open(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Tokens signed by an unknown key or with a broken signature are rejected — also during the outage.

    Before the fault: a live check. After it: every forged-token request the watch step made during the outage must
    have been refused (any non-2xx). ``accepted`` lists the requests a service let through (a security bug).
    """
    cfg = load_config(configuration)
    run = load_run(cfg.run_dir)
    if outage_window(run) is None:
        return _not_judged("fail-open during the outage")
    if (done := judged(run, "no_fail_open")) is not None:
        return done
    checks, accepted = 0, []
    for obs in run.get("observations") or []:
        for service, s in (obs.get("services") or {}).items():
            for kind, status in (s.get("forged") or {}).items():
                checks += 1
                if 200 <= status < 300:
                    accepted.append({"service": service, "token": kind, "status": status,
                                     "elapsed": round(obs["elapsed"], 1)})
    return {"phase": "outage", "ok": checks > 0 and not accepted, "checks": checks, "accepted": accepted[:10],
            "accepted_count": len(accepted)}
