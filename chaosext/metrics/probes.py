"""Prometheus probes (error rate, JWKS cache state, alerts) and the outage watch step.

What counts as an error (server side): a request answered 5xx or 401, except chaosext's own forged-token requests
(tenant ``chaosext-probe``, which the lab labels ``__unauthenticated__`` because the token never authenticated).
429 (rate limited) and 403 (tenant mismatch) are correct answers, not errors. See ``chaosext.metrics.prom``.

``watch_outage`` runs in the method between the block and the restore: it records the outage window in the run file,
prints a progress line every few seconds (time left, error rate, cache state, alerts), makes the valid/forged token
checks the auth probes judge afterwards, and is the abort guard (restores early when the error rate stays above
ABORT_ERROR_RATE for ABORT_AFTER_SECONDS).
"""
import logging
import math
import time
from typing import Any

import requests
from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration, Secrets

from chaosext.config import ExperimentConfig, load_config
from chaosext.metrics import prom
from chaosext.safety import runstate

__all__ = ["server_error_rate", "client_error_rate", "jwks_cache_expired", "alerts_match_cache_state",
           "watch_outage", "judge_outage"]

logger = logging.getLogger("chaostoolkit")

#: seconds the error-rate probe waits for Prometheus to scrape past the end of the outage
SCRAPE_WAIT_SECONDS = 30.0


def _before(what: str) -> dict:
    return {"phase": "before-fault", "ok": True, "note": f"{what} is judged over the outage window, after the fault"}


def server_error_rate(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Server-side error rate over the outage window, from ``tenant_requests_total`` in Prometheus.

    ``ok`` when requests were counted and errors / requests < ERROR_RATE_MAX. Vacuously ok before any fault.
    """
    cfg = load_config(configuration)
    run = runstate.load_run(cfg.run_dir)
    window = runstate.outage_window(run)
    if window is None:
        return _before("the server-side error rate")
    if (done := runstate.judged(run, "server_error_rate")) is not None:
        return done
    start, end = window
    fresh = prom.wait_for_samples(cfg.prometheus_url, end, timeout=SCRAPE_WAIT_SECONDS)
    res = prom.error_rate_between(cfg.prometheus_url, start, end)
    return {"phase": "outage", "ok": res["requests"] > 0 and res["error_rate"] < cfg.error_rate_max,
            "error_rate": round(res["error_rate"], 5), "errors": round(res["errors"]),
            "requests": round(res["requests"]), "max": cfg.error_rate_max,
            "window_seconds": round(end - start, 1), "scraped_past_end": fresh,
            "note": "" if res["requests"] else "no requests counted in the outage window: is k6 running?"}


def client_error_rate(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Client-side error rate from k6's summary (``http_req_failed``) of the run that covered the outage.

    k6 runs from before the block until after the restore, so this rate covers the whole k6 run, outage included.
    Vacuously ok before any fault.
    """
    cfg = load_config(configuration)
    run = runstate.load_run(cfg.run_dir)
    if runstate.outage_window(run) is None:
        return _before("the client-side (k6) error rate")
    if (done := runstate.judged(run, "client_error_rate")) is not None:
        return done
    from chaosext.load.probes import k6_summary

    summary = k6_summary(configuration=configuration, secrets=secrets)
    rate = _k6_failed_rate(summary)
    out = {"phase": "outage", "max": cfg.error_rate_max, "error_rate": rate,
           "requests": summary.get("requests", summary.get("http_reqs")),
           "exit_code": summary.get("exit_code"), "thresholds_ok": summary.get("thresholds_ok")}
    out["ok"] = rate is not None and rate < cfg.error_rate_max
    if rate is None:
        out["note"] = "k6 wrote no summary with http_req_failed: did k6 run? see its log"
    return out


def _k6_failed_rate(summary: dict) -> Any:
    """``http_req_failed`` rate from whatever shape the k6 summary probe returns (None if absent)."""
    for key in ("http_req_failed_rate", "error_rate", "http_req_failed"):
        value = summary.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dict):
            for sub in ("rate", "value"):
                if isinstance(value.get(sub), (int, float)):
                    return float(value[sub])
    return None


def _expired_services(cfg: ExperimentConfig, run: dict, start: float, end: float) -> dict[str, str]:
    """Services whose cache was expired at some point in [start, end] -> how we know ("prometheus"/"healthz")."""
    found: dict[str, str] = {}
    for obs in run.get("observations") or []:
        for service, s in (obs.get("services") or {}).items():
            if s.get("state") == "expired":
                found.setdefault(service, "healthz")
    rng = max(1, math.ceil(end - start))
    try:
        for sample in prom.query(cfg.prometheus_url, f'max by (service) (max_over_time('
                                 f'jwks_cache_state{{state="expired"}}[{rng}s]))', at=end):
            if float(sample["value"][1]) >= 1:
                found.setdefault(sample["metric"].get("service", "?"), "prometheus")
    except (requests.RequestException, RuntimeError) as exc:
        logger.warning("jwks_cache_state query failed: %s", exc)
    return found


def jwks_cache_expired(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Which services' JWKS cache expired (past max-stale, failing closed) during the outage window.

    Informational (``expired`` list); the alert probe builds on it. Before any fault: the current state.
    """
    cfg = load_config(configuration)
    run = runstate.load_run(cfg.run_dir)
    window = runstate.outage_window(run)
    if window is None:
        res = prom.query(cfg.prometheus_url, 'max by (service) (jwks_cache_state{state="expired"})')
        return {"phase": "before-fault", "expired": sorted(s["metric"].get("service", "?") for s in res
                                                           if float(s["value"][1]) >= 1)}
    found = _expired_services(cfg, run, *window)
    return {"phase": "outage", "expired": sorted(found), "source": found}


def _fired_in_prometheus(cfg: ExperimentConfig, names: tuple[str, ...], since: float) -> set[str]:
    """Alert names that were firing at any time since ``since`` (Prometheus' ALERTS series)."""
    rng = max(1, math.ceil(time.time() - since))
    regex = "|".join(names)
    res = prom.query(cfg.prometheus_url,
                     f'max by (alertname) (max_over_time(ALERTS{{alertname=~"{regex}",alertstate="firing"}}[{rng}s]))')
    return {s["metric"]["alertname"] for s in res if float(s["value"][1]) >= 1}


def _in_alertmanager(cfg: ExperimentConfig, names: tuple[str, ...]) -> set[str]:
    return {a["labels"].get("alertname") for a in prom.alertmanager_alerts(cfg.alertmanager_url)} & set(names)


def alerts_match_cache_state(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """The expiry alerts (EXPIRY_ALERTS) fire if and only if a service's JWKS cache expired during the outage.

    Expired -> each alert was firing in Prometheus (``ALERTS``) and present in Alertmanager (``/api/v2/alerts``),
    waiting up to ALERT_WAIT_SECONDS for them. Not expired -> none of them fired since the outage started.
    Vacuously ok before any fault.
    """
    cfg = load_config(configuration)
    run = runstate.load_run(cfg.run_dir)
    window = runstate.outage_window(run)
    if window is None:
        return _before("alerting")
    if (done := runstate.judged(run, "alerts_match_cache_state")) is not None:
        return done
    start, end = window
    names = cfg.expiry_alerts
    expired = _expired_services(cfg, run, start, end)
    seen = run.get("alerts_seen") or {}
    deadline = time.time() + (cfg.alert_wait_seconds if expired else 0)
    while True:
        fired = _fired_in_prometheus(cfg, names, start) | (set(seen.get("prometheus") or {}) & set(names))
        in_am = _in_alertmanager(cfg, names) | (set(seen.get("alertmanager") or {}) & set(names))
        complete = set(names) <= fired and set(names) <= in_am
        if not expired or complete or time.time() >= deadline:
            break
        time.sleep(2.0)
    quietest = None
    if expired:
        ok = complete
        why = ("cache expired and every expiry alert fired" if ok else
               f"cache expired but not firing in Prometheus: {sorted(set(names) - fired)}, "
               f"missing in Alertmanager: {sorted(set(names) - in_am)}")
        if not ok:
            quietest = _quietest_tenant_rate(cfg, end)
            if quietest is not None:
                why += (f"; the quietest tenant/service had {quietest:.2f} req/s over 5 m at the end of the outage: "
                        "per-tenant alerts have low-traffic guards (alerts.yaml), so on a young lab or with many "
                        "tenants drive more traffic per tenant (fewer TENANTS, higher K6_RATE) or a longer outage")
    else:
        ok = not fired and not in_am
        why = "cache stayed within its lifetime and no expiry alert fired" if ok else \
            f"cache never expired but these alerts fired: {sorted(fired | in_am)}"
    return {"phase": "outage", "ok": ok, "cache_expired": bool(expired), "expired_services": sorted(expired),
            "firing_prometheus": sorted(fired), "in_alertmanager": sorted(in_am), "expected": list(names),
            "quietest_tenant_rate5m": quietest, "why": why}


def _quietest_tenant_rate(cfg: ExperimentConfig, at: float) -> float | None:
    """The lowest per-tenant, per-service request rate over 5 minutes at ``at`` (the alerts' traffic guards use the
    same window), real tenants only; None when Prometheus has no answer. Explains a missing per-tenant alert."""
    try:
        res = prom.query(cfg.prometheus_url, 'min(sum by (tenant, service) '
                                             '(rate(tenant_requests_total{tenant!~"__.*__"}[5m])))', at=at)
    except (requests.RequestException, RuntimeError, ValueError):
        return None
    return float(res[0]["value"][1]) if res else None


# ---------------------------------------------------------------------------------------------------------------
# the watch step
# ---------------------------------------------------------------------------------------------------------------
def _observe_services(cfg: ExperimentConfig, tokens: dict[str, str], forged: Any, tick: int) -> dict:
    """One round of checks against every service, all requests in parallel (a slow answer cannot stall the tick).

    ``forged`` (a ``chaosext.auth.probes.ForgeryPlan``) sends every forgery class to every service's routes; its
    judgment goes to the run file (``forgery_ticks``), per-service counts to ``services[...]["forged"]``."""
    from concurrent.futures import ThreadPoolExecutor

    from chaosext.auth.probes import call, health, record_round

    jobs: dict[tuple[str, str, str], Any] = {}
    with ThreadPoolExecutor(max_workers=min(32, len(cfg.services) * (len(tokens) + 1) + 1)) as pool:
        rounds = pool.submit(forged.round, cfg, tick) if forged is not None else None
        for service, url in cfg.services.items():
            jobs[(service, "health", "")] = pool.submit(health, url)
            for tenant, tok in tokens.items():
                jobs[(service, "valid", tenant)] = pool.submit(call, cfg, service, url, tok, tenant)
    out: dict[str, dict[str, Any]] = {}
    for (service, what, key), fut in jobs.items():
        s = out.setdefault(service, {"valid": {}, "forged": {}})
        if what == "health":
            h = fut.result()
            s["state"], s["age"] = h.get("state", "unknown"), h.get("age_seconds")
        else:
            s[what][key] = fut.result()
    if rounds is not None:
        for service, counts in record_round(cfg, forged, rounds.result()).items():
            out.setdefault(service, {"valid": {}, "forged": {}})["forged"] = counts
    return out


def _jwks_blocked_here(cfg: ExperimentConfig) -> Any:
    """For the local lab only: does this host still reach the JWKS URL? (None when not applicable)."""
    if not cfg.is_lab_target:
        return None
    try:
        requests.get(cfg.jwks_url, timeout=1.0)
        return False
    except requests.RequestException:
        return True


def _alert_names(cfg: ExperimentConfig) -> tuple[set[str], set[str]]:
    names = set(cfg.expiry_alerts)
    try:
        in_prom = {a["labels"].get("alertname") for a in prom.prometheus_alerts(cfg.prometheus_url)
                   if a.get("state") == "firing"} & names
    except (requests.RequestException, KeyError, ValueError):
        in_prom = set()
    try:
        in_am = {a["labels"].get("alertname") for a in prom.alertmanager_alerts(cfg.alertmanager_url)} & names
    except (requests.RequestException, KeyError, ValueError):
        in_am = set()
    return in_prom, in_am


def watch_outage(duration_seconds: int = 0, configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Watch the services through the outage (OUTAGE_SECONDS unless ``duration_seconds`` > 0), then return.

    Records the outage window (start now, end on return) in the run file, prints progress every WATCH_INTERVAL
    seconds, checks valid and forged tokens against every service, notes which expiry alerts fire, and aborts
    early (restoring the egress) when the server-side error rate stays above ABORT_ERROR_RATE for
    ABORT_AFTER_SECONDS. Returns a summary dict.
    """
    from chaosext.auth.probes import ensure_tokens, forgery_plan
    from chaosext.safety import signals
    from chaosext.safety.cleanup import restore_fault

    cfg = load_config(configuration)
    duration = duration_seconds if duration_seconds > 0 else cfg.outage_seconds
    interval = max(1.0, cfg.watch_interval)
    tokens = ensure_tokens(cfg)
    forged = forgery_plan(cfg) if tokens else None
    start = time.time()
    end_by = start + duration
    run = runstate.update_run(cfg.run_dir, outage={"start": start, "end": None, "aborted": False, "reason": ""},
                              observations=[], alerts_seen={"prometheus": {}, "alertmanager": {}})
    try:
        base = prom.counts_at(cfg.prometheus_url, start)
    except (requests.RequestException, RuntimeError):
        base = (0.0, 0.0)
    prev, above_since, reason, tick = base, None, "", 0
    logger.info("[outage] JWKS blocked for %ss; watching %s every %.0fs", duration, ",".join(cfg.services), interval)
    try:
        while True:
            now = time.time()
            if signals.terminating():
                reason = "interrupted (SIGTERM)"
                break
            services = _observe_services(cfg, tokens, forged, tick)
            try:
                counts = prom.counts_at(cfg.prometheus_url)
            except (requests.RequestException, RuntimeError):
                counts = prev
            d_err, d_tot = counts[0] - prev[0], counts[1] - prev[1]
            recent = d_err / d_tot if d_tot > 0 else 0.0
            c_err, c_tot = counts[0] - base[0], counts[1] - base[1]
            overall = c_err / c_tot if c_tot > 0 else 0.0
            prev = counts
            in_prom, in_am = _alert_names(cfg)
            seen = run.get("alerts_seen") or {"prometheus": {}, "alertmanager": {}}
            for where, names in (("prometheus", in_prom), ("alertmanager", in_am)):
                for n in names:
                    seen[where].setdefault(n, now)
            blocked = _jwks_blocked_here(cfg)
            obs = {"t": now, "elapsed": now - start, "error_rate": overall, "recent_error_rate": recent,
                   "requests": c_tot, "jwks_blocked": blocked, "services": services}
            run = runstate.update_run(cfg.run_dir, observations=(run.get("observations") or []) + [obs],
                                      alerts_seen=seen)
            cache = " ".join(f"{n}={s['state']}" for n, s in services.items())
            logger.info("[outage] %4.0fs left | error rate %.2f%% (last %.0fs: %.2f%%) of %d req | cache %s%s%s",
                        max(0.0, end_by - now), overall * 100, interval, recent * 100, c_tot, cache,
                        " | alerts " + ",".join(sorted(in_prom | in_am)) if in_prom or in_am else "",
                        " | JWKS still reachable!" if blocked is False else "")
            if d_tot > 0 and recent > cfg.abort_error_rate:
                above_since = above_since or now
                if now - above_since >= cfg.abort_after_seconds:
                    reason = (f"abort guard: error rate above {cfg.abort_error_rate:.0%} for "
                              f"{now - above_since:.0f}s")
                    break
            else:
                above_since = None
            if now >= end_by:
                break
            time.sleep(max(0.0, min(now + interval, end_by) - time.time()))  # a steady cadence: the checks take time
            tick += 1
    except (KeyboardInterrupt, InterruptExecution) as exc:
        reason = f"interrupted ({type(exc).__name__})"
        raise
    finally:
        end = time.time()
        runstate.update_run(cfg.run_dir, outage={"start": start, "end": end, "aborted": bool(reason),
                                                 "reason": reason})
        if reason.startswith("abort guard"):
            logger.warning("[outage] %s: restoring JWKS egress now", reason)
            restore_fault(cfg)
    logger.info("[outage] over after %.0fs%s", end - start, f" ({reason})" if reason else "")
    return {"start": start, "end": end, "seconds": round(end - start, 1), "aborted": bool(reason), "reason": reason,
            "ticks": tick + 1}


#: (check name, module, function) of every outage-behaviour probe, in the experiment's order
OUTAGE_CHECKS = (
    ("cached-key-fallback", "chaosext.auth.probes", "cached_key_fallback"),
    ("no-fail-open", "chaosext.auth.probes", "no_fail_open"),
    ("server-error-rate-below-max", "chaosext.metrics.probes", "server_error_rate"),
    ("client-error-rate-below-max", "chaosext.metrics.probes", "client_error_rate"),
    ("auth-degraded-audited", "chaosext.audit.probes", "audit_degraded_recorded"),
    ("alerts-fire-iff-cache-expired", "chaosext.metrics.probes", "alerts_match_cache_state"),
)


def judge_outage(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Run every outage-behaviour check once, after the outage, and keep the results in the run file.

    Chaos Toolkit's steady-state hypothesis stops at its first failing probe, so the journal would not say whether
    the later ones (e.g. the alerts) passed. This step, last in the method, runs them all; the hypothesis probes
    then return these same results, and ``chaosext verdict`` prints every one of them.
    """
    import importlib

    cfg = load_config(configuration)
    runstate.update_run(cfg.run_dir, judgments={})
    results: dict[str, Any] = {}
    for name, module, func in OUTAGE_CHECKS:
        try:
            results[name] = getattr(importlib.import_module(module), func)(configuration=configuration)
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    runstate.update_run(cfg.run_dir, judgments={func: results[name] for name, _, func in OUTAGE_CHECKS})
    failed = [n for n, r in results.items() if not r.get("ok")]
    return {"ok": not failed, "failed": failed, "checks": results}
