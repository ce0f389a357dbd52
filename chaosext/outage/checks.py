"""The outage checks of the main experiment: each judges the outage the watch step recorded, once, after it
(``judge_outage``, :mod:`chaosext.outage.judge`).

Every check is ``check(judging) -> CheckResult`` (:class:`chaosext.outage.judging.Judging`: the run's context, its
record, the outage notebook and the window); it reads the notebook and the domains' measurements, and says why it
failed. None of them changes anything.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import requests

from chaosext.audit.measure import PIPELINE_WAIT_SECONDS, services_of
from chaosext.audit.sources import AuditEvent, read_events, role_mapped
from chaosext.auth.judge import merge_judgments, with_coverage
from chaosext.auth.measure import unverified_accepts
from chaosext.core.config import ExperimentConfig
from chaosext.core.poll import retry_until
from chaosext.load.probes import k6_summary
from chaosext.metrics import prom
from chaosext.metrics.cache import services_in_state
from chaosext.metrics.measure import expiry_rules_gap, fired_since, in_alertmanager, quietest_tenant_rate
from chaosext.outage.judging import Judging
from chaosext.run.record import CheckResult

__all__ = ["outage_held", "cached_key_fallback", "no_fail_open", "error_rate_result", "server_error_rate",
           "client_error_rate",
           "audit_degraded_recorded", "alerts_match_cache_state", "expired_services", "stale_services",
           "SCRAPE_WAIT_SECONDS", "LIFETIME_MARGIN_SECONDS"]

logger = logging.getLogger("chaostoolkit")

#: seconds a check waits for Prometheus to scrape past the end of the outage
SCRAPE_WAIT_SECONDS = 30.0
#: a service is expected to accept valid tokens until (last successful fetch + max-stale - this margin)
LIFETIME_MARGIN_SECONDS = 2.0


# ------------------------------------------------------------------------------------------------ the fault
def outage_held(judging: Judging) -> CheckResult:
    """The outage really held: the JWKS was unreachable from the target on every watch tick after the first.

    Fails ("outage did not hold") when the fault was found lifted or the JWKS reachable on any later tick — by a
    person, another run, or a broken driver — and reports the measured outage length next to OUTAGE_SECONDS. An
    early end decided by the abort guard is reported here too (the verdict fails it separately).
    """
    cfg, run, (start, end) = judging.cfg, judging.run, judging.window
    obs = judging.notebook.observations
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


# ------------------------------------------------------------------------------------------------ tokens
def _service_deadlines(judging: Judging) -> dict[str, float]:
    """Per service: until when its cache must keep accepting valid tokens (last good fetch + max-stale - margin).

    The last good fetch is read from the service's first observation in the outage (time - age); without an age,
    the most pessimistic assumption (fetched a full TTL before the outage) is used.
    """
    cfg = judging.cfg
    deadlines: dict[str, float] = {}
    for obs in judging.notebook.observations:
        for service, s in obs.services.items():
            if service in deadlines:
                continue
            fetched = obs.t - s.age if s.age is not None else judging.start - cfg.jwks_ttl
            deadlines[service] = fetched + cfg.jwks_max_stale - LIFETIME_MARGIN_SECONDS
    return deadlines


def cached_key_fallback(judging: Judging) -> CheckResult:
    """Valid tokens of several tenants are accepted by every service while its cache is within its lifetime: every
    valid-token request the watch step made while the service's cache was within max-stale of its last good fetch
    must have got 200. ``ok`` false names the failures."""
    cfg = judging.cfg
    deadlines = _service_deadlines(judging)
    checks, failures, after_lifetime = 0, [], 0
    for obs in judging.notebook.observations:
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


def no_fail_open(judging: Judging) -> CheckResult:
    """No service accepts a forged token during the outage: the whole forgery catalogue (``chaosext.auth.forgery``)
    on a read and a write route of every service, with real tenants, plus the services' own metric (backstop).

    Judges every round the watch step made during the outage (every class each tick, rotating over every tenant
    the run drives: ``coverage`` states how much of the class × tenant matrix was attacked and the rotation's bound;
    a driven tenant never attacked fails the check; the baseline and recovery rounds are ``forged_tokens_refused``).
    A refusal is a status in REFUSED_STATUSES;
    2xx is a fail-open finding; anything else is inconclusive and fails too (``why`` says what to allow).
    ``classes`` shows, per class, tried/refused/accepted/inconclusive and the first acceptance in seconds after the
    block (``first_accepted_s``); skipped classes say why.
    """
    ticks = judging.notebook.forgery_ticks
    total = merge_judgments(ticks)
    fetched = sorted({p for j in ticks for p in j.get("key_url_fetched") or []})
    if fetched:
        total["ok"] = False
        total["key_url_fetched"] = fetched
    if not total.get("tried"):
        total["ok"] = False
        total["why"] = "; ".join(filter(None, [total["why"], "no forged request was sent during the outage"]))
    total = with_coverage(total, judging.cfg.tenants, ticks=len(ticks), tick_seconds=judging.cfg.watch_interval)
    backstop = unverified_accepts(judging.ctx, *judging.window)
    if not backstop["ok"]:
        total["ok"] = False
        total["why"] = "; ".join(filter(None, [total["why"], (
            f"METRIC BACKSTOP: the services counted {backstop['unverified_accepts']:.0f} request(s) accepted "
            f"without a verified key during the outage ({backstop['selector']})") if backstop.get("exported")
            else backstop["note"]]))
    return {"phase": "outage", **total, "metric_backstop": backstop}


# ------------------------------------------------------------------------------------------------ errors
def error_rate_result(cfg: ExperimentConfig, phase: str, res: dict[str, Any], start: float, end: float,
                      want: int) -> CheckResult:
    """An error-rate check's result from ``prom.error_rate_between``: ``ok`` needs ``want`` requests, traffic of
    every service the run drives and a rate below ERROR_RATE_MAX; a failing one names the services without traffic
    (``note``) and shows the top (status, service, tenant) errors (``top_errors``)."""
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


def server_error_rate(judging: Judging) -> CheckResult:
    """Server-side error rate over the outage window, from the request counter of the metric contract, counted per
    series with restarts handled (``chaosext.metrics.prom.error_rate_between``).

    ``ok`` when requests were counted, every service the run drives showed traffic and was still scraped at the
    window's end (a service killed in the outage is named), and errors / requests < ERROR_RATE_MAX; a failing one
    shows its top (status, service, tenant) errors. Not ok when no outage was recorded.
    """
    cfg, (start, end) = judging.cfg, judging.window
    p = prom.prom_of(judging.ctx)
    fresh = prom.wait_for_samples(p, end, timeout=SCRAPE_WAIT_SECONDS)
    res = prom.error_rate_between(p, start, end, tuple(cfg.services))
    return {**error_rate_result(cfg, "outage", res, start, end, 1), "scraped_past_end": fresh}


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
    if not k6_run or judging.ctx.run_dir is None:
        return {"phase": "outage", "ok": False, "max": cfg.error_rate_max, "error_rate": None,
                "note": "this run started no k6 (see the safety control's log)"}
    summary = k6_summary(run_id=k6_run, run_dir=str(judging.ctx.run_dir / "k6"),
                         configuration=judging.ctx.configuration(), secrets=judging.ctx.secrets)
    rate = _k6_failed_rate(summary)
    out: CheckResult = {"phase": "outage", "max": cfg.error_rate_max, "error_rate": rate,
                        "requests": summary.get("requests", summary.get("http_reqs")),
                        "source": "k6 summary, whole run",
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


# ------------------------------------------------------------------------------------------------ the cache
def stale_services(judging: Judging) -> set[str]:
    """Services that served stale keys during the outage: seen by the watch, or in the cache-stale series."""
    found = judging.notebook.services_seen("stale") | services_in_state(judging.ctx, "stale", *judging.window)
    return found & set(judging.cfg.services)


def expired_services(judging: Judging) -> dict[str, str]:
    """Services whose cache expired at some point of the outage -> how we know (``healthz``/``prometheus``)."""
    found = {s: "healthz" for s in judging.notebook.services_seen("expired")}
    for service in services_in_state(judging.ctx, "expired", *judging.window):
        found.setdefault(service, "prometheus")
    return found


def audit_degraded_recorded(judging: Judging) -> CheckResult:
    """The target's ``degraded`` audit action (``auth.degraded`` in the lab) is in the audit store for each service
    that served stale keys during the outage.

    ``ok`` false lists the services with no event (``missing``). When no service went stale (outage shorter than
    the TTL), there is nothing to record and ``ok`` is true with ``affected`` empty.
    """
    cfg, ctx, start = judging.cfg, judging.ctx, judging.start
    affected = stale_services(judging)
    if not role_mapped(ctx, "degraded"):
        return {"phase": "outage", "ok": True, "not_judged": True, "affected": sorted(affected),
                "gap": "the target names no audit action for serving stale keys (audit.actions.degraded in "
                       "TARGET_FILE): whether the services audited the degradation cannot be judged"}
    deadline = time.time() + PIPELINE_WAIT_SECONDS.get(cfg.audit_kind, 10.0)

    def look() -> list[AuditEvent]:
        return read_events(ctx, "degraded", start - 5, time.time() + 5, tuple(sorted(affected)))

    events = retry_until(look, lambda found: affected <= services_of(found), deadline, 2.0)
    recorded = services_of(events)
    missing = sorted(affected - recorded)
    return {"phase": "outage", "ok": not missing, "affected": sorted(affected), "recorded": sorted(recorded),
            "missing": missing, "source": cfg.audit_kind, "events": len(events),
            "note": "" if affected else "no service served stale keys during the outage (shorter than the TTL?)"}


def alerts_match_cache_state(judging: Judging) -> CheckResult:
    """The expiry alerts (EXPIRY_ALERTS) fire if and only if a service's JWKS cache expired during the outage.

    Expired -> each alert was firing in Prometheus (``ALERTS``) and present in Alertmanager (``/api/v2/alerts``),
    waiting up to ALERT_WAIT_SECONDS for them. Not expired -> none of them fired since the outage started.
    """
    cfg, ctx, (start, end) = judging.cfg, judging.ctx, judging.window
    names = cfg.expiry_alerts
    if gap := expiry_rules_gap(judging.ctx):
        return {"phase": "outage", "ok": True, "not_judged": True, "expected": list(names), "gap": gap}
    try:
        expired = expired_services(judging)
    except requests.RequestException as exc:  # pragma: no cover - services_in_state already swallows these
        logger.warning("cache-expired query failed: %s", exc)
        expired = {}
    seen = judging.notebook.alerts_seen
    deadline = time.time() + (cfg.alert_wait_seconds if expired else 0)
    while True:
        fired = fired_since(ctx, names, start) | (set(seen.prometheus) & set(names))
        in_am = in_alertmanager(ctx, names) | (set(seen.alertmanager) & set(names))
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
            quietest = quietest_tenant_rate(ctx, end)
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
