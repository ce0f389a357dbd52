"""The scenarios on top of an unreachable JWKS (``JWKS_FAILURE``): the method step ``start-scenario``, right after the
fault is applied and verified, before the watch.

- ``rotation-during-outage``: POST ``ROTATE_URL`` (the IdP starts signing with a new key; the lab's Authority
  ``/admin/rotate``), then get a token of the first tenants from the IdP: they carry the new kid, which no service can
  fetch. The watch sends them to every service on every tick (they must fail closed), the judge after the restore
  (they must pass within RECOVERY_SECONDS). On an iptables target chaosext's own token requests are marked
  (``SOCKET_MARK``) and the run's fault lets exactly those through.
- ``cold-start-during-outage``: POST ``COLD_START_URL`` for each service of COLD_START_SERVICE (default: the first):
  one instance starts with no key at all. The watch reads its answers, cache and ``ready`` URL on every tick.

An action (it changes the system under test: the IdP's keys, a service instance). What it did goes into
``scenario.json`` in the run directory (this module is the only reader and writer); the tokens stay in the run's
memory. For every other mode it does nothing.
"""

import logging
import time
from typing import Any

import jwt
import requests

from chaosext.auth.measure import ensure_tokens, new_key_tokens
from chaosext.core import urls
from chaosext.core.errors import ChaosextError
from chaosext.core.settings import Configuration, Secrets
from chaosext.core.tokens import TokenError
from chaosext.egress.actions import run_fault
from chaosext.run.context import RunContext, run_context
from chaosext.run.store import read_json, write_json

#: the Chaos Toolkit action; ``load_scenario`` (and ``SCENARIO_FILE``) are what the outage checks read
__all__ = ["start_scenario"]

SCENARIO_FILE = "scenario.json"
logger = logging.getLogger("chaostoolkit")


class ScenarioError(ChaosextError, RuntimeError):
    """The scenario could not be started; the message says what to fix."""


def load_scenario(ctx: RunContext) -> dict[str, Any]:
    """What ``start-scenario`` did in this run ({} when nothing: another mode, or outside a run)."""
    return read_json(ctx.run_dir, SCENARIO_FILE) if ctx.run_dir else {}


def _kid(token: str) -> str:
    try:
        return str(jwt.get_unverified_header(token).get("kid") or "")
    except jwt.PyJWTError:
        return ""


def _post(url: str, what: str) -> requests.Response:
    """POST the hook ``url`` as the one URL parser reads it, following redirects within its origin only."""
    urls.parse(url, what)
    with urls.session() as s:
        r = s.post(url, timeout=10)
    r.raise_for_status()
    return r


def _rotate(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    if cfg.token.tokens_file:
        raise ScenarioError("rotation-during-outage needs fresh tokens from the IdP after the rotation (client "
                            "credentials), not TOKENS_FILE")
    old = ensure_tokens(ctx)
    old_kids = sorted({_kid(t) for t in old.values()})
    try:
        _post(cfg.rotate_url, "ROTATE_URL")
    except (requests.RequestException, urls.UrlError) as exc:
        raise ScenarioError(f"ROTATE_URL={cfg.rotate_url}: the rotation failed ({type(exc).__name__}: {exc}); "
                            f"give the URL a POST to makes the IdP sign with a new key") from None
    rotated_at = time.time()
    try:
        fresh = new_key_tokens(ctx)
    except TokenError as exc:
        raise ScenarioError(f"after the rotation no token could be had from the IdP: {exc}") from None
    new_kids = sorted({_kid(t) for t in fresh.values()})
    if set(new_kids) & set(old_kids):
        raise ScenarioError(f"after POST {cfg.rotate_url} the IdP still signs with kid {', '.join(new_kids)}: it did "
                            f"not rotate (or it issues cached tokens)")
    logger.info("[scenario] the IdP signs with a new key now (kid %s, was %s)", ",".join(new_kids),
                ",".join(old_kids))
    return {"rotated_at": rotated_at, "old_kids": old_kids, "new_kids": new_kids, "tenants": sorted(fresh)}


def _cold_start(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg
    started: dict[str, Any] = {}
    for name in cfg.cold_started:
        url = cfg.cold_start_url.replace("{service_url}", cfg.services[name].url)
        try:
            r = _post(url, "COLD_START_URL")
        except (requests.RequestException, urls.UrlError) as exc:
            raise ScenarioError(f"COLD_START_URL: POST {url} failed ({type(exc).__name__}: {exc}); give the URL that "
                                f"restarts one instance of {name} cold") from None
        started[name] = {"at": time.time(), "status": r.status_code}
        logger.info("[scenario] %s: one instance started cold (POST %s)", name, url)
    return started


def start_scenario(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Start JWKS_FAILURE's scenario now, during the outage: rotation-during-outage rotates the IdP's signing key
    (ROTATE_URL) and gets new-kid tokens; cold-start-during-outage cold-starts one instance of each service of
    COLD_START_SERVICE (COLD_START_URL). Any other mode: nothing. Fails (the run with it) when the scenario cannot be
    started; returns what it did."""
    ctx = run_context(configuration, secrets)
    cfg = ctx.cfg
    mode = cfg.jwks_failure
    if mode not in ("rotation-during-outage", "cold-start-during-outage"):
        return {"scenario": "", "note": f"JWKS_FAILURE={mode} has no scenario"}
    if run_fault(ctx) is None:
        return {"scenario": mode, "started": False, "note": "this run applied no fault: no scenario"}
    done: dict[str, Any] = {"scenario": mode, "started": True, "at": time.time()}
    if mode == "rotation-during-outage":
        done["rotation"] = _rotate(ctx)
    else:
        done["cold_start"] = _cold_start(ctx)
    if ctx.run_dir is not None:
        write_json(ctx.run_dir, SCENARIO_FILE, done)
    return done
