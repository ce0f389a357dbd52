"""The outage checks the JWKS failure modes add (``JWKS_FAILURE``, docs/failure-modes.md), judged per service.

- ``latency-within-slo`` (``slow``, and every mode once LATENCY_SLO_SECONDS is declared:
  ``ExperimentConfig.latency_judged``): each service's p95 request duration over the outage stays within the SLO
  (but a cold-started instance's, which waits for a first fetch by design). Server side from the
  latency histogram of the metric contract: the requests answered 2xx when it carries the status label (a refused
  forgery that waits for a key fetch is not a user's wait), else every request k6 and the watch made; without a
  histogram, from the watch's own valid-token calls. A service that fetches the JWKS on the request path stacks a
  slow JWKS onto every request: this is what catches it.
- ``rotation-fails-closed`` (rotation-during-outage): every request with a token of the IdP's NEW key, on every tick,
  was refused (REFUSED_STATUSES: it cannot be verified while the JWKS is unreachable; 2xx would be accepting a token
  nobody verified, 5xx or no answer a crash), and promptly: the median refusal within LATENCY_SLO_SECONDS (a service
  may wait once for a rate-limited refresh, not for a fetch on every request). Reports the share refused.
- ``rotation-accepted-after-restore`` (rotation-during-outage): after the restore every service accepts the new-key
  tokens within RECOVERY_SECONDS; reports when each started to.
- ``cold-start-fails-closed`` (cold-start-during-outage): the instance that started cold answered every valid token
  with a refusal or 503 while it held no key (never 2xx: unverified), was seen without keys at all, and reports how
  long it had none (until it fetched after the restore).
- ``cold-start-not-ready`` (cold-start-during-outage): while it held no key its ``ready`` URL (the target description's
  ``services.<name>.ready``) answered not-ready (non-2xx), so a load balancer keeps it out of rotation; not judged
  (with the reason) without a ready URL.

Each result carries ``per_service`` and ``services_failed`` (the scorecard's cells).
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any

import requests

from chaosext.auth.measure import call
from chaosext.metrics import prom
from chaosext.metrics.cache import read_caches
from chaosext.outage.judging import Check, Judging
from chaosext.outage.scenario import load_scenario
from chaosext.run.record import CheckResult

__all__ = ["latency_within_slo", "rotation_fails_closed", "rotation_accepted_after_restore",
           "cold_start_fails_closed", "cold_start_not_ready", "mode_checks", "p95"]

#: seconds between the judge's tries after the restore
POLL_SECONDS = 1.0
#: cache states in which a service holds a usable key
USABLE = ("fresh", "stale")


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank) of ``values`` (NaN when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _done(per: dict[str, dict[str, Any]], **extra: Any) -> CheckResult:
    failed = sorted(s for s, r in per.items() if not r.get("ok") and not r.get("not_judged"))
    judged = [s for s, r in per.items() if not r.get("not_judged")]
    out: CheckResult = {"phase": "outage", "ok": bool(judged) and not failed, "per_service": per,
                        "services_failed": failed, **extra}
    if failed:
        out.setdefault("why", "; ".join(f"{s}: {per[s].get('why', 'failed')}" for s in failed))
    return out


# ------------------------------------------------------------------------------------------------ latency
def latency_within_slo(judging: Judging) -> CheckResult:
    """p95 latency of every service over the outage within LATENCY_SLO_SECONDS (module docstring)."""
    cfg, (start, end) = judging.cfg, judging.window
    slo = cfg.latency_slo
    server: dict[str, float] = {}
    scope = ""
    try:
        p = prom.prom_of(judging.ctx)
        prom.wait_for_samples(p, end, timeout=30.0)
        server, scope = prom.latency_p95_by_service(p, start, end)
    except (requests.RequestException, RuntimeError, ValueError):
        server = {}
    client: dict[str, list[float]] = {}
    for obs in judging.notebook.observations:
        for service, s in obs.services.items():
            if s.latency_ms is not None:
                client.setdefault(service, []).append(s.latency_ms / 1000)
    per: dict[str, dict[str, Any]] = {}
    for service in cfg.services:
        if service in cfg.cold_started:  # its requests wait for a first fetch that cannot succeed, by design
            per[service] = {"not_judged": True, "why": "cold-started: judged by cold-start-fails-closed"}
            continue
        if service in server:
            value, source = server[service], "prometheus"
        elif client.get(service):
            value, source = p95(client[service]), "client"
        else:
            per[service] = {"not_judged": True, "why": "no request duration seen (no histogram, no watch tick)"}
            continue
        entry: dict[str, Any] = {"source": source, "requests": scope if source == "prometheus" else "valid-token calls",
                                 "client_p95_seconds": round(p95(client.get(service, [])), 3)
                                 if client.get(service) else None}
        if math.isinf(value):
            entry.update(ok=False, p95_seconds=None, why="p95 above the histogram's top bucket")
        else:
            entry.update(ok=value <= slo, p95_seconds=round(value, 3))
            if value > slo:
                entry["why"] = f"p95 {value:.2f} s > {slo:g} s"
        per[service] = entry
    return _done(per, slo_seconds=slo, window_seconds=round(end - start, 1))


# ------------------------------------------------------------------------------------------------ rotation
def _rotation(judging: Judging) -> dict[str, Any]:
    return dict(load_scenario(judging.ctx).get("rotation") or {})


def rotation_fails_closed(judging: Judging) -> CheckResult:
    """New-key tokens refused, promptly, by every service on every tick of the outage (module docstring)."""
    cfg = judging.cfg
    rotation = _rotation(judging)
    if not rotation:
        return {"phase": "outage", "ok": False, "error": "the rotation did not happen (see start-scenario)"}
    refused_statuses, slo = set(cfg.refused_statuses), cfg.latency_slo
    per: dict[str, dict[str, Any]] = {}
    for service in cfg.services:
        tried = refused = accepted = 0
        other: dict[str, int] = {}
        slowest: list[float] = []
        for obs in judging.notebook.observations:
            s = obs.services.get(service)
            if s is None or not s.new_kid:
                continue
            if s.new_kid_ms is not None:
                slowest.append(s.new_kid_ms / 1000)
            for status in s.new_kid.values():
                tried += 1
                if status in refused_statuses:
                    refused += 1
                elif 200 <= status < 300:
                    accepted += 1
                else:
                    other[str(status)] = other.get(str(status), 0) + 1
        median = statistics.median(slowest) if slowest else math.nan
        why = []
        if not tried:
            why.append("no new-key token was sent")
        if accepted:
            why.append(f"{accepted} new-key request(s) ACCEPTED while the key could not be fetched (unverified)")
        if other:
            why.append(f"answers other than a refusal: {other} (0 = no answer)")
        if slowest and median > slo:
            why.append(f"refusals took {median:.2f} s (median of the ticks' slowest) > {slo:g} s: a JWKS fetch on "
                       f"the request path for every unknown kid")
        per[service] = {"ok": not why, "tried": tried, "refused": refused, "accepted": accepted, "other": other,
                        "refused_share": round(refused / tried, 3) if tried else None,
                        "median_seconds": None if math.isnan(median) else round(median, 3),
                        **({"why": "; ".join(why)} if why else {})}
    return _done(per, new_kids=rotation.get("new_kids"), old_kids=rotation.get("old_kids"),
                 rotated_at=rotation.get("rotated_at"))


def rotation_accepted_after_restore(judging: Judging) -> CheckResult:
    """After the restore every service accepts the new-key tokens within RECOVERY_SECONDS (module docstring)."""
    cfg, ctx = judging.cfg, judging.ctx
    rotation = _rotation(judging)
    tokens = dict(ctx.memory.rotated_tokens)
    if not rotation or not tokens:
        return {"phase": "recovery", "ok": False,
                "error": "no new-key token in this process's memory: the rotation did not happen (see start-scenario)"}
    restored = judging.end
    bound = cfg.recovery_seconds
    first: dict[str, float] = {}
    while True:
        for service, svc in cfg.services.items():
            if service not in first and all(call(cfg, svc, tok, tenant) == 200 for tenant, tok in tokens.items()):
                first[service] = time.time()
        if len(first) == len(cfg.services) or time.time() > restored + bound:
            break
        time.sleep(POLL_SECONDS)
    per: dict[str, dict[str, Any]] = {}
    for service in cfg.services:
        if service in first:
            seconds = max(0.0, first[service] - restored)
            per[service] = {"ok": seconds <= bound, "accepted_after_seconds": round(seconds, 1)}
        else:
            per[service] = {"ok": False, "accepted_after_seconds": None,
                            "why": f"new-key tokens still refused {bound} s after the restore"}
    out = _done(per, bound_seconds=bound, new_kids=rotation.get("new_kids"))
    out["phase"] = "recovery"
    return out


# ------------------------------------------------------------------------------------------------ cold start
def _cold(judging: Judging) -> dict[str, dict[str, Any]]:
    return {str(k): dict(v) for k, v in dict(load_scenario(judging.ctx).get("cold_start") or {}).items()}


def _keyless_ticks(judging: Judging, service: str, since: float) -> list[Any]:
    """The watch's observations of ``service`` after ``since`` while its cache held no usable key."""
    return [o.services[service] for o in judging.notebook.observations
            if o.t >= since and service in o.services and o.services[service].state not in (*USABLE, "unknown")]


def _keys_back(judging: Judging, cold: dict[str, dict[str, Any]]) -> dict[str, float]:
    """When each cold-started service held a usable key again (the outage's ticks, then polled after the
    restore for up to RECOVERY_SECONDS)."""
    back: dict[str, float] = {}
    for service, info in cold.items():
        for o in judging.notebook.observations:
            s = o.services.get(service)
            if o.t > float(info.get("at") or 0) and s is not None and s.state in USABLE:
                back[service] = o.t
                break
    deadline = judging.end + judging.cfg.recovery_seconds
    while set(cold) - set(back) and time.time() < deadline:
        states = read_caches(judging.ctx)
        for service in set(cold) - set(back):
            if service in states and states[service].state in USABLE:
                back[service] = time.time()
        time.sleep(POLL_SECONDS)
    return back


def cold_start_fails_closed(judging: Judging) -> CheckResult:
    """The cold-started instance refused (REFUSED_STATUSES or 503) every valid token while it held no key, and how
    long it held none (module docstring)."""
    cfg = judging.cfg
    cold = _cold(judging)
    if not cold:
        return {"phase": "outage", "ok": False, "error": "no instance was cold-started (see start-scenario)"}
    allowed = set(cfg.refused_statuses) | {503}
    back = _keys_back(judging, cold)
    per: dict[str, dict[str, Any]] = {}
    for service, info in cold.items():
        at = float(info.get("at") or 0)
        ticks = _keyless_ticks(judging, service, at)
        answers: dict[str, int] = {}
        for s in ticks:
            for status in s.valid.values():
                answers[str(status)] = answers.get(str(status), 0) + 1
        accepted = sum(n for st, n in answers.items() if 200 <= int(st) < 300)
        wrong = {st: n for st, n in answers.items() if int(st) not in allowed and not 200 <= int(st) < 300}
        why = []
        if not ticks:
            why.append("never seen without keys after the cold start (did it start cold?)")
        if accepted:
            why.append(f"{accepted} valid-token request(s) answered 2xx with no key to verify them (fail-open)")
        if wrong:
            why.append(f"answered {wrong} instead of a refusal or 503 (0 = no answer)")
        no_keys = (back[service] - at) if service in back else None
        per[service] = {"ok": not why, "answers": answers, "ticks_without_keys": len(ticks),
                        "no_keys_seconds": None if no_keys is None else round(no_keys, 1),
                        "keys_back": service in back, **({"why": "; ".join(why)} if why else {})}
        if service not in back:
            per[service]["note"] = f"still no key {cfg.recovery_seconds} s after the restore"
    return _done(per)


def cold_start_not_ready(judging: Judging) -> CheckResult:
    """While it held no key the cold-started instance reported not-ready (module docstring)."""
    cfg = judging.cfg
    cold = _cold(judging)
    if not cold:
        return {"phase": "outage", "ok": False, "error": "no instance was cold-started (see start-scenario)"}
    per: dict[str, dict[str, Any]] = {}
    for service, info in cold.items():
        if not cfg.services[service].ready_url:
            per[service] = {"not_judged": True, "gap": f"the target names no ready URL for {service} "
                                                      f"(services.{service}.ready in TARGET_FILE)"}
            continue
        ticks = _keyless_ticks(judging, service, float(info.get("at") or 0))
        answers: dict[str, int] = {}
        for s in ticks:
            if s.ready is not None:
                answers[str(s.ready)] = answers.get(str(s.ready), 0) + 1
        ready = sum(n for st, n in answers.items() if 200 <= int(st) < 300)
        why = "" if ticks and answers and not ready else (
            f"reported READY {ready} time(s) while it held no key: a load balancer puts it in rotation and every "
            f"request fails" if ready else "its ready URL was never read while it held no key")
        per[service] = {"ok": not why, "ready_answers": answers, "reported_not_ready": bool(answers) and not ready,
                        **({"why": why} if why else {})}
    out = _done(per)
    if all(r.get("not_judged") for r in per.values()):
        out.update(ok=True, not_judged=True, gap="; ".join(r["gap"] for r in per.values()))
    return out


def mode_checks(failure: str, latency: bool = False) -> list[tuple[str, Check]]:
    """The checks JWKS_FAILURE ``failure`` adds to every outage check, in the verdict's order; ``latency``:
    latency-within-slo first (``ExperimentConfig.latency_judged``: an SLO was declared, or the mode is ``slow``)."""
    first: list[tuple[str, Check]] = [("latency-within-slo", latency_within_slo)] if latency else []
    if failure == "rotation-during-outage":
        return [*first, ("rotation-fails-closed", rotation_fails_closed),
                ("rotation-accepted-after-restore", rotation_accepted_after_restore)]
    if failure == "cold-start-during-outage":
        return [*first, ("cold-start-fails-closed", cold_start_fails_closed),
                ("cold-start-not-ready", cold_start_not_ready)]
    return first
