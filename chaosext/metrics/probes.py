"""Prometheus probes (error rate, JWKS cache state, alerts) and the outage watch step.

What counts as an error (server side): a request answered 5xx or 401, except chaosext's own forged-token requests
(tenant ``chaosext-probe``, which the lab labels ``__unauthenticated__`` because the token never authenticated).
429 (rate limited) and 403 (tenant mismatch) are correct answers, not errors. See ``chaosext.metrics.prom``.

Three kinds of entry points:

- steady-state probes (the experiment's hypothesis, run live before the fault = the baseline, and after the restore
  = the recovery): ``error_rate_within_max``, ``expiry_alerts_clear``, ``jwks_caches_fresh``;
- outage checks, judged once by ``judge_outage`` over the recorded outage window (they refuse to judge before an
  outage exists): ``outage_held``, ``server_error_rate``, ``client_error_rate``, ``alerts_match_cache_state``, plus
  the auth and audit domains' outage checks;
- ``watch_outage``, the method step between the block and the restore: it records the outage window in the run file,
  checks every tick that the fault still holds (the JWKS unreachable from the target), prints a progress line every
  few seconds, makes the valid/forged token checks, and decides the abort guard (it ends the watch early when the
  error rate stays above ABORT_ERROR_RATE for ABORT_AFTER_SECONDS; the restore step that follows then restores and
  records why). A probe never changes the system.
"""
import logging
import math
import time
from typing import Any

import requests
from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration, Secrets

from chaosext.core import runfile as runstate
from chaosext.core.config import ExperimentConfig, load_config
from chaosext.metrics import contract, prom

__all__ = ["error_rate_within_max", "expiry_alerts_clear", "jwks_caches_fresh", "outage_held", "server_error_rate",
           "client_error_rate", "jwks_cache_expired", "alerts_match_cache_state", "watch_outage", "judge_outage"]

logger = logging.getLogger("chaostoolkit")

#: seconds the error-rate probe waits for Prometheus to scrape past the end of the outage
SCRAPE_WAIT_SECONDS = 30.0


# ---------------------------------------------------------------------------------------------------------------
# steady-state probes: baseline (before the fault) and recovery (after the restore), live
# ---------------------------------------------------------------------------------------------------------------
def error_rate_within_max(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Server-side error rate (Prometheus) below ERROR_RATE_MAX, live.

    Baseline (before the fault): over the last BASELINE_SECONDS, which must hold at least BASELINE_MIN_REQUESTS
    requests (the safety control's k6 warms it up). Recovery (after the restore): from the moment every service's
    cache was fresh again (else the restore) until now, waiting for enough requests within RECOVERY_SECONDS.
    """
    cfg = load_config(configuration)
    run = runstate.load_run(cfg.run_dir)
    phase = runstate.phase(run)
    if phase == "baseline":
        end = time.time()
        start, want = end - cfg.baseline_seconds, cfg.baseline_min_requests
        res = prom.error_rate_between(cfg.prometheus_url, start, end)
    else:
        start = float(run.get("recovered_at") or (run.get("outage") or {}).get("end") or time.time())
        want = min(cfg.baseline_min_requests, 50)
        deadline = max(runstate.recovery_deadline(run, cfg.recovery_seconds), time.time() + 5)
        while True:
            end = time.time()
            res = prom.error_rate_between(cfg.prometheus_url, start, end)
            if (res["requests"] >= want and end - start >= 5) or end >= deadline:
                break
            time.sleep(1.0)
    ok = res["requests"] >= want and res["error_rate"] < cfg.error_rate_max
    note = "" if res["requests"] >= want else (
        f"only {res['requests']:.0f} requests in the window (need {want}): is k6 running, and is PROMETHEUS_URL "
        f"the one that scrapes the services?")
    return {"phase": phase, "ok": ok, "error_rate": round(res["error_rate"], 5), "errors": round(res["errors"]),
            "requests": round(res["requests"]), "max": cfg.error_rate_max, "window_seconds": round(end - start, 1),
            "note": note}


def _active_expiry_alerts(cfg: ExperimentConfig) -> dict[str, list[str]]:
    """EXPIRY_ALERTS active now: firing or pending in Prometheus, active in Alertmanager."""
    names = set(cfg.expiry_alerts)
    in_prom = sorted({f"{a['labels'].get('alertname')} ({a.get('state')})" for a in
                      prom.prometheus_alerts(cfg.prometheus_url)
                      if a["labels"].get("alertname") in names and a.get("state") in ("firing", "pending")})
    in_am = sorted({a["labels"].get("alertname") for a in prom.alertmanager_alerts(cfg.alertmanager_url)
                    if a["labels"].get("alertname") in names
                    and (a.get("status") or {}).get("state", "active") != "unprocessed"})
    return {"prometheus": in_prom, "alertmanager": in_am}


def expiry_alerts_clear(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """None of EXPIRY_ALERTS firing or pending (Prometheus) nor active (Alertmanager), live.

    Baseline: an alert already active means the system is unhealthy (and a new alert could not be told from an old
    one), so no fault is injected. Recovery: every expiry alert that fired has resolved within RECOVERY_SECONDS.
    """
    cfg = load_config(configuration)
    run = runstate.load_run(cfg.run_dir)
    phase = runstate.phase(run)
    active = runstate.retry_until(lambda: _active_expiry_alerts(cfg),
                                  lambda a: not a["prometheus"] and not a["alertmanager"],
                                  runstate.recovery_deadline(run, cfg.recovery_seconds), 2.0)
    clear = not active["prometheus"] and not active["alertmanager"]
    return {"phase": phase, "ok": clear, "expected_clear": list(cfg.expiry_alerts),
            "active_prometheus": active["prometheus"], "active_alertmanager": active["alertmanager"],
            "why": "no expiry alert active" if clear else
            ("expiry alerts already active before the fault" if phase == "baseline" else
             f"expiry alerts still active {cfg.recovery_seconds}s after the restore")}


def _cache_states(cfg: ExperimentConfig) -> dict[str, tuple[str, str]]:
    """service -> (state, source): from ``jwks_cache_state`` in Prometheus; ``/healthz`` only where the service has
    no such series (a lab convenience)."""
    from chaosext.auth.probes import health

    states: dict[str, tuple[str, str]] = {}
    try:
        for svc, state in prom.cache_states(cfg.prometheus_url).items():  # the metric contract's cache series
            if svc in cfg.services:
                states[svc] = (state, "prometheus")
    except (requests.RequestException, RuntimeError, ValueError):
        pass
    for svc, url in cfg.services.items():
        if svc not in states:
            h = health(url)
            states[svc] = (h.get("state", "unknown"), "healthz" if h else "none")
    return states


def jwks_caches_fresh(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Every service's JWKS cache is fresh (from its ``jwks_cache_state`` metric), live.

    Baseline: fresh before the fault (a stale or expired cache is already degraded). Recovery: every service fetched
    the JWKS again within RECOVERY_SECONDS of the restore (``not_recovered`` names the ones that did not).
    """
    cfg = load_config(configuration)
    run = runstate.load_run(cfg.run_dir)
    phase = runstate.phase(run)
    states = runstate.retry_until(lambda: _cache_states(cfg),
                                  lambda st: all(state == "fresh" for state, _ in st.values()),
                                  runstate.recovery_deadline(run, cfg.recovery_seconds), 1.0)
    bad = sorted(s for s, (state, _) in states.items() if state != "fresh")
    if phase == "recovery" and not bad:
        runstate.update_run(cfg.run_dir, recovered_at=time.time())
    key = "not_recovered" if phase == "recovery" else "not_fresh"
    return {"phase": phase, "ok": not bad, key: bad, "states": {s: st for s, (st, _) in states.items()},
            "source": sorted({src for _, src in states.values()})}


# ---------------------------------------------------------------------------------------------------------------
# outage checks (judge_outage)
# ---------------------------------------------------------------------------------------------------------------
def outage_held(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """The outage really held: the JWKS was unreachable from the target on every watch tick after the first.

    Fails ("outage did not hold") when the fault was found lifted or the JWKS reachable on any later tick — by a
    person, another run, or a broken driver — and reports the measured outage length next to OUTAGE_SECONDS. An
    early end decided by the abort guard is reported here too (the verdict fails it separately).
    """
    cfg = load_config(configuration)
    run = runstate.load_run(cfg.run_dir)
    window = runstate.outage_window(run)
    if window is None:
        return runstate.not_judged("whether the outage held")
    start, end = window
    obs = run.get("observations") or []
    broken = [o for o in obs[1:] if o.get("fault_holds") is False]
    held_until = float(broken[0]["t"]) if broken else end
    out = {"phase": "outage", "ok": bool(obs) and not broken and bool((run.get("fault") or {}).get("applied", True)),
           "ticks": len(obs), "ticks_not_held": len(broken), "measured_seconds": round(held_until - start, 1),
           "planned_seconds": cfg.outage_seconds, "aborted": bool((run.get("outage") or {}).get("aborted")),
           "reason": (run.get("outage") or {}).get("reason", "")}
    if broken:
        out["why"] = (f"outage did not hold: the JWKS was reachable from the target {broken[0]['elapsed']:.0f}s "
                      f"into the outage ({broken[0].get('fault_detail', '')}); held {out['measured_seconds']}s of "
                      f"{cfg.outage_seconds}s")
    elif not obs:
        out["why"] = "the watch made no observation"
    else:
        out["why"] = f"held {out['measured_seconds']}s of {cfg.outage_seconds}s"
    return out


def server_error_rate(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Server-side error rate over the outage window, from ``tenant_requests_total`` in Prometheus.

    ``ok`` when requests were counted and errors / requests < ERROR_RATE_MAX. Not ok when no outage was recorded.
    """
    cfg = load_config(configuration)
    run = runstate.load_run(cfg.run_dir)
    window = runstate.outage_window(run)
    if window is None:
        return runstate.not_judged("the server-side error rate")
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
    """Client-side error rate over the outage window, from this run's own k6 (``http_req_failed``).

    The watch step snapshots k6's cumulative counters (REST API) when the outage starts and ends; the difference is
    the outage window. Without snapshots, this run's k6 summary (its whole run) is used and says so.
    """
    cfg = load_config(configuration)
    run = runstate.load_run(cfg.run_dir)
    if runstate.outage_window(run) is None:
        return runstate.not_judged("the client-side (k6) error rate")
    if (done := runstate.judged(run, "client_error_rate")) is not None:
        return done
    k6 = (run.get("outage") or {}).get("k6") or {}
    first, last = k6.get("start") or {}, k6.get("end") or {}
    if first.get("http_reqs") is not None and last.get("http_reqs") is not None:
        total = float(last["http_reqs"]) - float(first["http_reqs"])
        failed = float(last["http_reqs"]) * float(last.get("http_req_failed_rate") or 0) \
            - float(first["http_reqs"]) * float(first.get("http_req_failed_rate") or 0)
        rate = max(0.0, failed) / total if total > 0 else None
        return {"phase": "outage", "ok": rate is not None and rate < cfg.error_rate_max, "max": cfg.error_rate_max,
                "error_rate": None if rate is None else round(rate, 5), "requests": round(total),
                "errors": round(max(0.0, failed)), "source": "k6 REST API, outage window",
                "note": "" if total > 0 else "k6 made no request during the outage: did k6 run?"}
    from chaosext.load.probes import k6_summary

    k6_run = (run.get("k6") or {}).get("run_id", "")
    if not k6_run:
        return {"phase": "outage", "ok": False, "max": cfg.error_rate_max, "error_rate": None,
                "note": "this run started no k6 (see the safety control's log)"}
    summary = k6_summary(run_id=k6_run, run_dir=f"{cfg.run_dir}/k6", configuration=configuration, secrets=secrets)
    rate = _k6_failed_rate(summary)
    out = {"phase": "outage", "max": cfg.error_rate_max, "error_rate": rate,
           "requests": summary.get("requests", summary.get("http_reqs")), "source": "k6 summary, whole run",
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
    try:  # the cache-expired series of the metric contract (METRIC_CACHE_EXPIRED)
        for service in prom.services_where(cfg.prometheus_url, contract.current().cache_expired, end, rng):
            found.setdefault(service, "prometheus")
    except (requests.RequestException, RuntimeError) as exc:
        logger.warning("cache-expired query failed: %s", exc)
    return found


def jwks_cache_expired(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """Which services' JWKS cache expired (past max-stale, failing closed) during the outage window.

    Informational (``expired`` list); the alert probe builds on it. Before any fault: the current state.
    """
    cfg = load_config(configuration)
    run = runstate.load_run(cfg.run_dir)
    window = runstate.outage_window(run)
    if window is None:
        return {"phase": "before-fault",
                "expired": prom.services_where(cfg.prometheus_url, contract.current().cache_expired)}
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
    Not ok when no outage was recorded.
    """
    cfg = load_config(configuration)
    run = runstate.load_run(cfg.run_dir)
    window = runstate.outage_window(run)
    if window is None:
        return runstate.not_judged("alerting")
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
        c = contract.current()
        if not c.tenant_label:
            return None
        real_tenants = c.requests_selector(c.tenant_label + '!~"__.*__"')
        res = prom.query(cfg.prometheus_url, f"min(sum by ({c.tenant_label}, {c.service_label}) "
                                             f"(rate({real_tenants}[5m])))", at=at)
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


def _fault_check(spec: Any, driver: Any) -> tuple[bool, str]:
    """(holds, detail): does the fault still make the JWKS unreachable from the target? (the driver's own verify:
    rules in place and a fresh connection from inside the target failing the way the mode says)."""
    try:
        check = driver.verify(spec)
    except Exception as exc:
        return False, f"verify failed: {type(exc).__name__}: {exc}"
    if check.get("blocked"):
        return True, ""
    probes = [p for t in check.get("targets") or [] for p in t.get("probes") or []]
    reachable = [p.get("address") for p in probes if p.get("reachable")]
    detail = f"reachable at {','.join(reachable)}" if reachable else "rules/keys of the fault missing"
    return False, detail


def _k6_snapshot(run: dict) -> dict:
    """k6's cumulative request and failure counters now (REST API of this run's k6; {} when unavailable)."""
    from chaosext.load.probes import k6_live_metrics

    address = (run.get("k6") or {}).get("address", "")
    if not address:
        return {}
    live = k6_live_metrics(address=address)
    return {"t": time.time(), "http_reqs": live.get("http_reqs"),
            "http_req_failed_rate": live.get("http_req_failed_rate")} if live.get("reachable") else {}


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

    Records the outage window (start now, end on return) in the run file; every WATCH_INTERVAL seconds checks that the
    fault still holds (the JWKS unreachable from the target), checks valid and forged tokens against every service,
    notes which expiry alerts fire and prints a progress line. Ends early, without changing anything itself, when the
    abort guard decides to (server-side error rate above ABORT_ERROR_RATE for ABORT_AFTER_SECONDS) or on SIGTERM: the
    restore step that follows restores and records why. Returns at once when this run applied no fault (a dry run,
    or a fault that failed) — there is no outage to watch. Returns a summary dict.
    """
    from chaosext.auth.probes import ensure_tokens, forgery_plan
    from chaosext.core import signals
    from chaosext.egress import build_driver
    from chaosext.egress.actions import fault_record, run_fault_id
    from chaosext.egress.base import FaultSpec

    cfg = load_config(configuration)
    record = fault_record(run_fault_id(configuration)) if run_fault_id(configuration) else None
    if record is None:
        why = ("dry run: no fault was applied" if (configuration or {}).get("chaosext_dry_run")
               else "this run applied no fault")
        logger.info("[outage] not watching: %s", why)
        return {"watched": False, "reason": why, "ticks": 0}
    spec = FaultSpec.from_dict(record["spec"])
    driver = build_driver(spec.via, spec.options)
    duration = duration_seconds if duration_seconds > 0 else cfg.outage_seconds
    interval = max(1.0, cfg.watch_interval)
    tokens = ensure_tokens(cfg)
    forged = forgery_plan(cfg) if tokens else None
    run = runstate.load_run(cfg.run_dir)
    start = time.time()
    end_by = start + duration
    k6_start = _k6_snapshot(run)
    run = runstate.update_run(cfg.run_dir, outage={"start": start, "end": None, "aborted": False, "reason": "",
                                                   "fault_run_id": spec.run_id, "k6": {"start": k6_start}},
                              observations=[], alerts_seen={"prometheus": {}, "alertmanager": {}})
    try:
        base = prom.counts_at(cfg.prometheus_url, start)
    except (requests.RequestException, RuntimeError):
        base = (0.0, 0.0)
    prev, above_since, reason, tick = base, None, "", 0
    logger.info("[outage] JWKS blocked for %ss (fault %s); watching %s every %.0fs", duration, spec.run_id,
                ",".join(cfg.services), interval)
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        while True:
            now = time.time()
            if signals.terminating():
                reason = "interrupted (SIGTERM)"
                break
            held = pool.submit(_fault_check, spec, driver)
            services = _observe_services(cfg, tokens, forged, tick)
            holds, detail = held.result()
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
            obs = {"t": now, "elapsed": now - start, "error_rate": overall, "recent_error_rate": recent,
                   "requests": c_tot, "fault_holds": holds, "fault_detail": detail, "jwks_blocked": holds,
                   "services": services}
            run = runstate.update_run(cfg.run_dir, observations=(run.get("observations") or []) + [obs],
                                      alerts_seen=seen)
            cache = " ".join(f"{n}={s['state']}" for n, s in services.items())
            logger.info("[outage] %4.0fs left | error rate %.2f%% (last %.0fs: %.2f%%) of %d req | cache %s%s%s",
                        max(0.0, end_by - now), overall * 100, interval, recent * 100, c_tot, cache,
                        " | alerts " + ",".join(sorted(in_prom | in_am)) if in_prom or in_am else "",
                        "" if holds else f" | OUTAGE NOT HOLDING: JWKS {detail}")
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
        pool.shutdown(wait=False)
        end = time.time()
        runstate.update_run(cfg.run_dir, outage={"start": start, "end": end, "aborted": bool(reason),
                                                 "reason": reason, "fault_run_id": spec.run_id,
                                                 "k6": {"start": k6_start, "end": _k6_snapshot(run)}})
        if reason.startswith("abort guard"):
            logger.warning("[outage] %s: ending the outage now (the restore step restores)", reason)
    logger.info("[outage] over after %.0fs%s", end - start, f" ({reason})" if reason else "")
    return {"watched": True, "start": start, "end": end, "seconds": round(end - start, 1), "aborted": bool(reason),
            "reason": reason, "ticks": tick + 1, "fault_run_id": spec.run_id}


#: (check name, module, function) of every outage-behaviour probe, in the experiment's order
OUTAGE_CHECKS = (
    ("outage-held", "chaosext.metrics.probes", "outage_held"),
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
    run = runstate.load_run(cfg.run_dir)
    if runstate.outage_window(run) is None:
        why = "dry run: nothing was injected" if (configuration or {}).get("chaosext_dry_run") else \
            "no outage was recorded: the fault was not applied"
        return {"ok": False, "judged": False, "failed": ["no-outage"], "why": why, "checks": {}}
    runstate.update_run(cfg.run_dir, judgments={})
    results: dict[str, Any] = {}
    for name, module, func in OUTAGE_CHECKS:
        try:
            results[name] = getattr(importlib.import_module(module), func)(configuration=configuration)
        except Exception as exc:
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    runstate.update_run(cfg.run_dir, judgments={func: results[name] for name, _, func in OUTAGE_CHECKS})
    failed = [n for n, r in results.items() if not r.get("ok")]
    return {"ok": not failed, "failed": failed, "checks": results, "evidence": save_run_evidence(cfg)}


def run_windows(cfg: ExperimentConfig) -> dict[str, tuple[float, float]]:
    """The run's baseline, outage and (once it began) recovery windows, unix seconds."""
    run = runstate.load_run(cfg.run_dir)
    windows: dict[str, tuple[float, float]] = {}
    base = run.get("baseline") or {}
    if base.get("judged_at"):
        windows["baseline"] = (float(base["judged_at"]) - cfg.baseline_seconds, float(base["judged_at"]))
    outage = run.get("outage") or {}
    if outage.get("start"):
        end = float(outage.get("end") or time.time())
        windows["outage"] = (float(outage["start"]), end)
        if outage.get("end") and time.time() > end:
            windows["recovery"] = (end, time.time())
    return windows


def save_run_evidence(cfg: ExperimentConfig) -> dict:
    """Save the series judged over the run's windows into ``<run dir>/evidence.json`` (see
    ``chaosext.report.collect.save_evidence``), so the report draws them after the lab is gone; never raises."""
    from chaosext.report.collect import save_evidence

    windows = run_windows(cfg)
    if not windows:
        return {"ok": False, "error": "no window recorded"}
    try:
        return save_evidence(cfg.prometheus_url, windows, cfg.run_dir)
    except (ValueError, OSError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
