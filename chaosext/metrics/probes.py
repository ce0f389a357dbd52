"""Prometheus probes: error rate, JWKS cache state, alerts; and whether the outage held.

What counts as an error (server side): a request answered 5xx or 401, except chaosext's own forged-token requests
(tenant ``chaosext-probe``, which the lab labels ``__unauthenticated__`` because the token never authenticated).
429 (rate limited) and 403 (tenant mismatch) are correct answers, not errors. See ``chaosext.metrics.prom``.

Two kinds of entry points:

- steady-state probes (the experiment's hypothesis, run live before the fault = the baseline, and after the restore
  = the recovery): ``error_rate_within_max``, ``expiry_alerts_clear``, ``jwks_caches_fresh``;
- outage checks, judged once by ``judge_outage`` (``chaosext.outage.judge``) over the outage the watch step recorded
  (``chaosext.core.judging.outage_check``: they refuse to judge before an outage exists): ``outage_held``,
  ``server_error_rate``, ``client_error_rate``, ``alerts_match_cache_state`` (and ``jwks_cache_expired``,
  informational).
"""
import logging
import math
import time
from typing import Any

import requests
from chaoslib.types import Configuration, Secrets

from chaosext.core.config import ExperimentConfig, load_config
from chaosext.core.errors import activity
from chaosext.core.judging import Judging, outage_check, retry_until
from chaosext.core.runfile import CheckResult, Run, edit_run, load_run
from chaosext.core.services import health
from chaosext.load.probes import k6_summary
from chaosext.metrics import contract, prom

__all__ = ["error_rate_within_max", "expiry_alerts_clear", "jwks_caches_fresh", "outage_held", "server_error_rate",
           "client_error_rate", "jwks_cache_expired", "alerts_match_cache_state"]

logger = logging.getLogger("chaostoolkit")

#: seconds the error-rate probe waits for Prometheus to scrape past the end of the outage
SCRAPE_WAIT_SECONDS = 30.0


# ---------------------------------------------------------------------------------------------------------------
# steady-state probes: baseline (before the fault) and recovery (after the restore), live
# ---------------------------------------------------------------------------------------------------------------
@activity
def error_rate_within_max(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """Server-side error rate (Prometheus) below ERROR_RATE_MAX, live.

    Baseline (before the fault): over the last BASELINE_SECONDS, which must hold at least BASELINE_MIN_REQUESTS
    requests (the safety control's k6 warms it up). Recovery (after the restore): from the moment every service's
    cache was fresh again (else the restore) until now, waiting for enough requests within RECOVERY_SECONDS.
    """
    cfg = load_config(configuration)
    run = load_run(cfg.run_dir)
    phase = run.phase
    services = tuple(cfg.services)
    if phase == "baseline":
        end = time.time()
        start, want = end - cfg.baseline_seconds, cfg.baseline_min_requests
        res = prom.error_rate_between(cfg.prometheus_url, start, end, services)
    else:
        start = run.recovery_start()
        want = min(cfg.baseline_min_requests, 50)
        deadline = max(run.recovery_deadline(cfg.recovery_seconds), time.time() + 5)
        while True:
            end = time.time()
            res = prom.error_rate_between(cfg.prometheus_url, start, end, services)
            if (res["requests"] >= want and end - start >= 5 and not res["problems"]) or end >= deadline:
                break
            time.sleep(1.0)
    return _error_rate_result(cfg, phase, res, start, end, want)


def _error_rate_result(cfg: ExperimentConfig, phase: str, res: dict[str, Any], start: float, end: float,
                       want: int) -> CheckResult:
    """The error-rate checks' result: ``ok`` needs ``want`` requests, every driven service's traffic and a rate
    below ERROR_RATE_MAX; a failing one names the services without traffic and shows the top errors."""
    notes = list(res.get("problems") or [])
    if res["requests"] < want:
        notes.append(f"only {res['requests']:.0f} requests in the window (need {want}): is k6 running, and is "
                     f"PROMETHEUS_URL the one that scrapes the services?")
    ok = not notes and res["error_rate"] < cfg.error_rate_max
    out: CheckResult = {"phase": phase, "ok": ok, "error_rate": round(res["error_rate"], 5),
                        "errors": round(res["errors"]), "requests": round(res["requests"]), "max": cfg.error_rate_max,
                        "window_seconds": round(end - start, 1), "services": res.get("services", {}),
                        "note": "; ".join(notes)}
    if not ok and res.get("top_errors"):
        out["top_errors"] = res["top_errors"]  # status x service x tenant, largest first
    return out


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


@activity
def expiry_alerts_clear(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """None of EXPIRY_ALERTS firing or pending (Prometheus) nor active (Alertmanager), live.

    Baseline: an alert already active means the system is unhealthy (and a new alert could not be told from an old
    one), so no fault is injected. Recovery: every expiry alert that fired has resolved within RECOVERY_SECONDS.
    """
    cfg = load_config(configuration)
    run = load_run(cfg.run_dir)
    phase = run.phase
    active = retry_until(lambda: _active_expiry_alerts(cfg), lambda a: not a["prometheus"] and not a["alertmanager"],
                         run.recovery_deadline(cfg.recovery_seconds), 2.0)
    clear = not active["prometheus"] and not active["alertmanager"]
    return {"phase": phase, "ok": clear, "expected_clear": list(cfg.expiry_alerts),
            "active_prometheus": active["prometheus"], "active_alertmanager": active["alertmanager"],
            "why": "no expiry alert active" if clear else
            ("expiry alerts already active before the fault" if phase == "baseline" else
             f"expiry alerts still active {cfg.recovery_seconds}s after the restore")}


def _cache_states(cfg: ExperimentConfig) -> dict[str, tuple[str, str]]:
    """service -> (state, source): from ``jwks_cache_state`` in Prometheus; ``/healthz`` only where the service has
    no such series (a lab convenience)."""
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


@activity
def jwks_caches_fresh(configuration: Configuration = None, secrets: Secrets = None) -> CheckResult:
    """Every service's JWKS cache is fresh (from its ``jwks_cache_state`` metric), live.

    Baseline: fresh before the fault (a stale or expired cache is already degraded). Recovery: every service fetched
    the JWKS again within RECOVERY_SECONDS of the restore (``not_recovered`` names the ones that did not). The
    moment they all are is noted in the run file (``recovered_at``): the recovery's error-rate window starts there.
    """
    cfg = load_config(configuration)
    run = load_run(cfg.run_dir)
    phase = run.phase
    states = retry_until(lambda: _cache_states(cfg), lambda st: all(state == "fresh" for state, _ in st.values()),
                         run.recovery_deadline(cfg.recovery_seconds), 1.0)
    bad = sorted(s for s, (state, _) in states.items() if state != "fresh")
    if phase == "recovery" and not bad:
        with edit_run(cfg.run_dir) as recorded:
            recorded.recovered_at = time.time()
    key = "not_recovered" if phase == "recovery" else "not_fresh"
    return {"phase": phase, "ok": not bad, key: bad, "states": {s: st for s, (st, _) in states.items()},
            "source": sorted({src for _, src in states.values()})}


# ---------------------------------------------------------------------------------------------------------------
# outage checks (judge_outage)
# ---------------------------------------------------------------------------------------------------------------
@activity
@outage_check("whether the outage held")
def outage_held(judging: Judging) -> CheckResult:
    """The outage really held: the JWKS was unreachable from the target on every watch tick after the first.

    Fails ("outage did not hold") when the fault was found lifted or the JWKS reachable on any later tick — by a
    person, another run, or a broken driver — and reports the measured outage length next to OUTAGE_SECONDS. An
    early end decided by the abort guard is reported here too (the verdict fails it separately).
    """
    cfg, run, (start, end) = judging.cfg, judging.run, judging.window
    obs = run.observations
    broken = [o for o in obs[1:] if o.fault_holds is False]
    held_until = broken[0].t if broken else end
    outage = run.outage
    out: CheckResult = {
        "phase": "outage", "ok": bool(obs) and not broken and (run.fault is None or run.fault.applied),
        "ticks": len(obs), "ticks_not_held": len(broken), "measured_seconds": round(held_until - start, 1),
        "planned_seconds": cfg.outage_seconds, "aborted": bool(outage and outage.aborted),
        "reason": outage.reason if outage else ""}
    if broken:
        out["why"] = (f"outage did not hold: the JWKS was reachable from the target {broken[0].elapsed:.0f}s "
                      f"into the outage ({broken[0].fault_detail}); held {out['measured_seconds']}s of "
                      f"{cfg.outage_seconds}s")
    elif not obs:
        out["why"] = "the watch made no observation"
    else:
        out["why"] = f"held {out['measured_seconds']}s of {cfg.outage_seconds}s"
    return out


@activity
@outage_check("the server-side error rate")
def server_error_rate(judging: Judging) -> CheckResult:
    """Server-side error rate over the outage window, from ``tenant_requests_total`` in Prometheus.

    ``ok`` when requests were counted, every service the run drives showed traffic and was still scraped at the
    window's end (a service killed in the outage is named), and errors / requests < ERROR_RATE_MAX; a failing one
    shows its top (status, service, tenant) errors. Not ok when no outage was recorded.
    """
    cfg, (start, end) = judging.cfg, judging.window
    fresh = prom.wait_for_samples(cfg.prometheus_url, end, timeout=SCRAPE_WAIT_SECONDS)
    res = prom.error_rate_between(cfg.prometheus_url, start, end, tuple(cfg.services))
    return {**_error_rate_result(cfg, "outage", res, start, end, 1), "scraped_past_end": fresh}


@activity
@outage_check("the client-side (k6) error rate")
def client_error_rate(judging: Judging) -> CheckResult:
    """Client-side error rate over the outage window, from this run's own k6 (``http_req_failed``).

    The watch step snapshots k6's cumulative counters (REST API) when the outage starts and ends; the difference is
    the outage window. Without snapshots, this run's k6 summary (its whole run) is used and says so.
    """
    cfg, run = judging.cfg, judging.run
    first = run.outage.k6_start if run.outage else None
    last = run.outage.k6_end if run.outage else None
    if first is not None and last is not None and first.http_reqs is not None and last.http_reqs is not None:
        total = last.http_reqs - first.http_reqs
        failed = last.http_reqs * (last.http_req_failed_rate or 0.0) \
            - first.http_reqs * (first.http_req_failed_rate or 0.0)
        rate = max(0.0, failed) / total if total > 0 else None
        return {"phase": "outage", "ok": rate is not None and rate < cfg.error_rate_max, "max": cfg.error_rate_max,
                "error_rate": None if rate is None else round(rate, 5), "requests": round(total),
                "errors": round(max(0.0, failed)), "source": "k6 REST API, outage window",
                "note": "" if total > 0 else "k6 made no request during the outage: did k6 run?"}
    k6_run = run.k6.run_id if run.k6 is not None else ""
    if not k6_run:
        return {"phase": "outage", "ok": False, "max": cfg.error_rate_max, "error_rate": None,
                "note": "this run started no k6 (see the safety control's log)"}
    summary = k6_summary(run_id=k6_run, run_dir=f"{cfg.run_dir}/k6", configuration=judging.configuration,
                         secrets=judging.secrets)
    rate = _k6_failed_rate(summary)
    out: CheckResult = {"phase": "outage", "max": cfg.error_rate_max, "error_rate": rate,
           "requests": summary.get("requests", summary.get("http_reqs")), "source": "k6 summary, whole run",
           "exit_code": summary.get("exit_code"), "thresholds_ok": summary.get("thresholds_ok")}
    out["ok"] = rate is not None and rate < cfg.error_rate_max
    if rate is None:
        out["note"] = "k6 wrote no summary with http_req_failed: did k6 run? see its log"
    return out


def _k6_failed_rate(summary: dict[str, Any]) -> float | None:
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


def _expired_services(cfg: ExperimentConfig, run: Run, start: float, end: float) -> dict[str, str]:
    """Services whose cache was expired at some point in [start, end] -> how we know ("prometheus"/"healthz")."""
    found: dict[str, str] = {}
    for obs in run.observations:
        for service, s in obs.services.items():
            if s.state == "expired":
                found.setdefault(service, "healthz")
    rng = max(1, math.ceil(end - start))
    try:  # the cache-expired series of the metric contract (METRIC_CACHE_EXPIRED)
        for service in prom.services_where(cfg.prometheus_url, contract.current().cache_expired, end, rng):
            found.setdefault(service, "prometheus")
    except (requests.RequestException, RuntimeError) as exc:
        logger.warning("cache-expired query failed: %s", exc)
    return found


def _expired_now(cfg: ExperimentConfig) -> CheckResult:
    """Before any fault: the services whose cache is expired now."""
    expired = prom.services_where(cfg.prometheus_url, contract.current().cache_expired)
    return {"phase": "before-fault", "expired": expired}


@activity
@outage_check(before=_expired_now)
def jwks_cache_expired(judging: Judging) -> CheckResult:
    """Which services' JWKS cache expired (past max-stale, failing closed) during the outage window.

    Informational (``expired`` list); the alert probe builds on it. Before any fault: the current state.
    """
    found = _expired_services(judging.cfg, judging.run, *judging.window)
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


@activity
@outage_check("alerting")
def alerts_match_cache_state(judging: Judging) -> CheckResult:
    """The expiry alerts (EXPIRY_ALERTS) fire if and only if a service's JWKS cache expired during the outage.

    Expired -> each alert was firing in Prometheus (``ALERTS``) and present in Alertmanager (``/api/v2/alerts``),
    waiting up to ALERT_WAIT_SECONDS for them. Not expired -> none of them fired since the outage started.
    Not ok when no outage was recorded.
    """
    cfg, run, (start, end) = judging.cfg, judging.run, judging.window
    names = cfg.expiry_alerts
    expired = _expired_services(cfg, run, start, end)
    seen = run.alerts_seen
    deadline = time.time() + (cfg.alert_wait_seconds if expired else 0)
    while True:
        fired = _fired_in_prometheus(cfg, names, start) | (set(seen.prometheus) & set(names))
        in_am = _in_alertmanager(cfg, names) | (set(seen.alertmanager) & set(names))
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
