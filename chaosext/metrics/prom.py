"""Prometheus / Alertmanager reads for the probes, the watch step and the report (every call has its own timeout).

Every function takes a :class:`Prom`: the Prometheus backend (URL and this activity's credentials,
``chaosext.core.backends``) and the run's metric contract (``chaosext.core.target``); :func:`prom_of` builds it from a
run context. Queries go through ``prometheus-api-client`` (``PrometheusConnect.custom_query`` /
``custom_query_range``) with those credentials (bearer token, basic auth, custom headers such as ``X-Scope-OrgID``,
CA bundle or insecure). Hand-written, and only where that client has nothing: Prometheus ``GET /api/v1/alerts`` and
Alertmanager ``GET /api/v2/alerts`` (prometheus-api-client 0.7 has no alerts API and no Alertmanager client at all).

Error accounting used everywhere in chaosext (docs/experiment.md, "What counts as an error"):
a request is an error when its status is 5xx, or 401 attributed to a real tenant. A 401 whose token failed on its
own (forged, malformed, expired ...; also chaosext's forgery catalogue, which uses real tenants) is labelled
``__unauthenticated__`` by the services and left out; only a ``no_keys`` 401 (the service could not verify) keeps the
claimed tenant. :data:`PROBE_TENANT` stays excluded for older services. 429 (rate limited) and 403 (tenant mismatch)
are correct answers, not errors.
"""
from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from chaosext.core.backends import Backend, BackendError
from chaosext.core.names import UNAUTHENTICATED_TENANT
from chaosext.core.poll import retry_until
from chaosext.core.target import PROBE_TENANT, MetricContract
from chaosext.run.context import RunContext

__all__ = [
    "Prom",
    "prom_of",
    "PROBE_TENANT",
    "UNAUTHENTICATED_TENANT",
    "ERROR_SELECTOR",
    "TOTAL_SELECTOR",
    "query",
    "query_range",
    "query_scalar",
    "SeriesCount",
    "increase_between",
    "service_traffic",
    "error_rate_between",
    "error_rates_by_service",
    "latency_p95_by_service",
    "prometheus_alerts",
    "alertmanager_alerts",
    "latest_sample_time",
    "wait_for_samples",
    "services_where",
    "unverified_accepts_between",
]

#: The default contract's selectors (the lab's names). The functions below use the run's contract
#: (``chaosext.core.target``, METRIC_* settings), which equals these unless overridden.
ERROR_SELECTOR = MetricContract().error_selector()
TOTAL_SELECTOR = MetricContract().total_selector()


@dataclass(frozen=True)
class Prom:
    """Prometheus as one activity reads it: the backend (URL + credentials) and the run's metric contract."""

    backend: Backend
    contract: MetricContract = field(default_factory=MetricContract)

    @property
    def url(self) -> str:
        """The Prometheus base URL."""
        return self.backend.url.rstrip("/")


def prom_of(ctx: RunContext) -> Prom:
    """The run's Prometheus (PROMETHEUS_URL, the activity's credentials, the run's metric contract)."""
    return Prom(ctx.backend("prometheus"), ctx.cfg.metrics)


#: how far before a window :func:`increase_between` looks for a series' last value (Prometheus' staleness delta)
LOOKBACK_SECONDS = 300.0

T = TypeVar("T")


def _connect(prom: Prom, timeout: float, session: requests.Session) -> PrometheusConnect:
    """A PrometheusConnect on ``session`` (this run's Prometheus credentials), no retries: the caller's timeout is the
    bound. Needs prometheus-api-client >= 0.7 (``session``, ``timeout`` and ``retry`` arguments)."""
    # the client annotates timeout as int, but hands it to requests, which takes seconds as a float
    return PrometheusConnect(url=prom.url, session=session, timeout=timeout,  # type: ignore[arg-type]
                             retry=Retry(total=0, raise_on_status=False))


def _call(prom: Prom, what: str, fn: Callable[[], T]) -> T:
    """Run ``fn()``; turn the client's errors into BackendError (a requests.RequestException) saying why."""
    try:
        return fn()
    except PrometheusApiClientException as exc:
        text = str(exc)
        if "Status Code 401" in text or "Status Code 403" in text:
            raise BackendError(
                f"Prometheus at {prom.url} refused {what} ({text[:40]}) with {prom.backend.auth.described}: give its "
                f"credentials "
                f"(prometheus_bearer_token, or prometheus_username/prometheus_password, or prometheus_headers) in "
                f"the experiment's secrets or the environment") from None
        raise BackendError(f"Prometheus at {prom.url}: {what} failed: {text[:300]}") from None
    except requests.exceptions.SSLError:
        raise BackendError(f"Prometheus at {prom.url}: TLS verification failed; set PROMETHEUS_CA_BUNDLE "
                           f"to its CA's PEM file") from None


def query(prom: Prom, promql: str, at: float | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Instant query -> the ``data.result`` vector (list of {"metric": {...}, "value": [ts, "v"]})."""
    params = {"time": f"{at:.3f}"} if at is not None else {}  # custom_query treats {} as no parameters
    with prom.backend.auth.session_for(prom.url) as session:
        pc = _connect(prom, timeout, session)
        result = _call(prom, f"query {promql!r}", lambda: pc.custom_query(promql, params=params))
    # custom_query returns data.result without data.resultType: a scalar result is the bare [ts, "v"] pair
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        return [{"metric": {}, "value": result}]
    vector: list[dict[str, Any]] = result
    return vector


def query_range(prom: Prom, promql: str, start: float, end: float, step: float,
                timeout: float = 10.0) -> list[dict[str, Any]]:
    """Range query -> the ``data.result`` matrix (list of {"metric": {...}, "values": [[ts, "v"], ...]})."""
    with prom.backend.auth.session_for(prom.url) as session:
        pc = _connect(prom, timeout, session)
        matrix: list[dict[str, Any]] = _call(prom, f"query_range {promql!r}", lambda: pc.custom_query_range(
            promql, start_time=datetime.fromtimestamp(start, UTC),
            end_time=datetime.fromtimestamp(end, UTC), step=f"{step:g}s"))
    return matrix


def query_scalar(prom: Prom, promql: str, at: float | None = None, timeout: float = 10.0) -> float:
    """Sum of every sample the query returns (0.0 when it returns nothing)."""
    return sum(float(s["value"][1]) for s in query(prom, promql, at, timeout))


@dataclass(frozen=True)
class SeriesCount:
    """One counter series over a window: what it counted, and when Prometheus last scraped it."""

    labels: dict[str, str]
    #: increments inside the window, resets handled (see :func:`increase_between`)
    count: float
    #: unix time of its last sample inside the window (None: no sample there)
    last_t: float | None
    #: unix times of its samples inside the window (the service's scrape cadence)
    times: tuple[float, ...] = ()


def _samples(values: list[list[Any]]) -> list[tuple[float, float]]:
    """[[t, "v"], ...] -> sorted (t, v), NaN dropped."""
    out = sorted((float(t), float(v)) for t, v in values)
    return [(t, v) for t, v in out if not math.isnan(v)]


def _resets(samples: list[tuple[float, float]]) -> set[float]:
    """Times at which the series fell below its previous value (its process restarted)."""
    return {t for (_, a), (t, b) in itertools.pairwise(samples) if b < a}


def _count_series(samples: list[tuple[float, float]], start: float, end: float, through_next_scrape: bool,
                  restarts: set[float]) -> tuple[float, float | None, tuple[float, ...]]:
    """(increments, last sample time, sample times) of one series' samples over (start, end]; ``restarts``: when
    its process restarted (seen on any series of the same target), so a counter that climbed past its old value
    after a restart still counts from 0."""
    prev: float | None = None
    for t, v in samples:
        if t <= start:
            prev = v  # the last value before the window: where its count starts
    count, last, times, past_end = 0.0, None, [], False
    for t, v in samples:
        if t <= start:
            continue
        if t > end:
            if not through_next_scrape or past_end:
                break
            past_end = True
        # born inside the window or restarted: a counter starts at 0, so the value is what it counted
        count += v if prev is None or v < prev or t in restarts else v - prev
        prev, last = v, t
        times.append(t)
    return count, last, tuple(times)


def increase_between(prom: Prom, selector: str, start: float, end: float, through_next_scrape: bool = False,
                     lookback: float = LOOKBACK_SECONDS, from_next_scrape: bool = False) -> list[SeriesCount]:
    """What every series of the counter ``selector`` counted between ``start`` and ``end`` (unix s), exactly.

    The ``increase()`` of DESIGN.md done on the raw samples, per series: the window's samples (an instant query of
    ``selector[range]``) are compared with the series' last sample before ``start`` (within ``lookback``). A value
    below the previous one is a restart: the counter began again at 0, so the new value is what it counted; and
    since one process's series are scraped together, a restart seen on any series of a target (same ``job``,
    ``instance`` and service label) is a restart of all of them (its error series, with a few counts, may have
    climbed past its old value already). A series with no sample before ``start`` was born in the window and counts
    from 0 (PromQL's ``increase()`` would lose its first value: the 401 series that first appear in an outage). No
    extrapolation: counts are whole. A series that vanished inside the window (a dead process) keeps what it counted
    up to its last scrape (see ``last_t``). ``through_next_scrape``: also count each series' first sample after
    ``end`` (requests made just before ``end`` are scraped after it); query only once Prometheus has scraped past
    ``end``. ``from_next_scrape``: count only what each target counted after its first scrape at or after ``start``
    (a window that starts at a moment seen through another signal, e.g. every cache fresh again: the first scrape
    after it also carries what was counted before it, since the previous scrape; that is left out)."""
    at = time.time() if through_next_scrape else end
    rng = max(1, math.ceil(at - start + lookback))
    svc = prom.contract.service_label
    found = [(dict(s.get("metric") or {}), _samples(s.get("values") or []))
             for s in query(prom, f"{selector}[{rng}s]", at=at)]

    def target(labels: dict[str, str]) -> tuple[str, str, str]:
        return labels.get("job", ""), labels.get("instance", ""), labels.get(svc, "")

    restarts: dict[tuple[str, str, str], set[float]] = {}
    for labels, samples in found:
        restarts.setdefault(target(labels), set()).update(_resets(samples))
    begins: dict[tuple[str, str, str], float] = {}
    if from_next_scrape:
        for labels, samples in found:
            first = min((t for t, _ in samples if start <= t <= end), default=None)
            if first is not None:
                key = target(labels)
                begins[key] = min(begins.get(key, first), first)
    out = []
    for labels, samples in found:
        key = target(labels)
        count, last, times = _count_series(samples, begins.get(key, start), end, through_next_scrape, restarts[key])
        out.append(SeriesCount(labels, count, last, times))
    return out


def _scrape_interval(times: list[float]) -> float | None:
    """The median gap between consecutive scrape times (None with fewer than two)."""
    gaps = sorted(b - a for a, b in itertools.pairwise(times) if b > a)
    return gaps[len(gaps) // 2] if gaps else None


def service_traffic(c: MetricContract, series: list[SeriesCount], services: list[str] | tuple[str, ...], end: float
                    ) -> dict[str, dict[str, Any]]:
    """Per service the run drives: requests counted in the window and whether Prometheus still scraped it at the
    window's end (its last sample within 2.5 scrape intervals of ``end``; a SIGKILLed service's series stop). The
    scrape interval is the service's own (the median gap between its scrapes), else the other services'.

    ``{service: {"requests", "last_sample_s_before_end", "scrape_interval_s", "problem"}}``; ``problem`` is '' or
    what is wrong, naming the service."""
    mine = {svc: [s for s in series if s.labels.get(c.service_label) == svc] for svc in services}
    own = {svc: _scrape_interval(sorted({t for s in found for t in s.times})) for svc, found in mine.items()}
    known = sorted(i for i in own.values() if i is not None)
    out: dict[str, dict[str, Any]] = {}
    for svc, found in mine.items():
        requests_ = sum(s.count for s in found)
        last = max((s.last_t for s in found if s.last_t is not None), default=None)
        interval = own[svc] or (known[len(known) // 2] if known else None)
        before_end = None if last is None else round(max(0.0, end - last), 1)
        problem = ""
        if last is None:
            problem = f"{svc}: no sample of its request counter in the window (down, not scraped, or no such label)"
        elif interval is not None and before_end is not None and before_end > 2.5 * interval + 1.0:
            problem = (f"{svc}: its request counter was last scraped {before_end:.0f}s before the window's end "
                       f"(every ~{interval:.0f}s before): the service or its scrape died in the window")
        elif requests_ <= 0:
            problem = f"{svc}: no request counted in the window (is k6 driving it?)"
        out[svc] = {"requests": round(requests_), "last_sample_s_before_end": before_end,
                    "scrape_interval_s": interval, "problem": problem}
    return out


def error_rate_between(prom: Prom, start: float, end: float, services: list[str] | tuple[str, ...] = (),
                       top: int = 5, from_next_scrape: bool = False, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Server-side error rate of the requests counted between ``start`` and ``end`` (unix seconds).

    Counted per series with restarts handled (:func:`increase_between`), so a service restarted inside the window
    neither zeroes the count nor hides its errors. ``services``: the services the run drives; each must show
    traffic and still be scraped at the end (``services`` and ``problems`` say which does not). ``top_errors``:
    the ``top`` (status, service, tenant) error counts, largest first. ``from_next_scrape``: see
    :func:`increase_between` (the recovery window). ``exclude``: services left out (the cold-started instances of
    cold-start-during-outage, judged on their own)."""
    c = prom.contract
    series = [s for s in increase_between(prom, c.total_selector(), start, end, from_next_scrape=from_next_scrape)
              if c.service_of({"metric": s.labels}) not in exclude]
    services = tuple(s for s in services if s not in exclude)
    is_error = re.compile(f"(?:{c.error_status})")
    errors = [s for s in series if is_error.fullmatch(s.labels.get(c.status_label, ""))]
    n_err, n_tot = sum(s.count for s in errors), sum(s.count for s in series)
    grouped: dict[tuple[str, str, str], float] = {}
    for s in errors:
        key = (s.labels.get(c.status_label, "?"), c.service_of({"metric": s.labels}),
               s.labels.get(c.tenant_label, "") if c.tenant_label else "")
        grouped[key] = grouped.get(key, 0.0) + s.count
    ranked = sorted(((n, k) for k, n in grouped.items() if n > 0), reverse=True)[:top]
    out: dict[str, Any] = {"errors": n_err, "requests": n_tot, "error_rate": (n_err / n_tot) if n_tot else 0.0,
                           "top_errors": [{"status": k[0], "service": k[1], "tenant": k[2], "errors": round(n)}
                                          for n, k in ranked]}
    if services:
        traffic = service_traffic(c, series, services, end)
        out["services"] = {svc: t["requests"] for svc, t in traffic.items()}
        out["problems"] = [t["problem"] for t in traffic.values() if t["problem"]]
    return out


def error_rates_by_service(prom: Prom, start: float, end: float) -> dict[str, dict[str, float]]:
    """Per service: {errors, requests, error_rate} counted between ``start`` and ``end`` (per series, as
    :func:`error_rate_between`)."""
    c = prom.contract
    is_error = re.compile(f"(?:{c.error_status})")
    out: dict[str, dict[str, float]] = {}
    for s in increase_between(prom, c.total_selector(), start, end):
        entry = out.setdefault(c.service_of({"metric": s.labels}), {"errors": 0.0, "requests": 0.0})
        entry["requests"] += s.count
        if is_error.fullmatch(s.labels.get(c.status_label, "")):
            entry["errors"] += s.count
    for entry in out.values():
        entry["error_rate"] = entry["errors"] / entry["requests"] if entry["requests"] else 0.0
    return out


def latency_p95_by_service(prom: Prom, start: float, end: float) -> tuple[dict[str, float], str]:
    """Per service: the p95 request duration (seconds) of the requests that finished between ``start`` and ``end``,
    from the contract's latency histogram (``histogram_quantile`` over ``increase`` of its buckets); {} when the
    histogram has no series. A service whose every request in the window is slower than the top bucket is +Inf.

    Which requests: when the histogram carries the contract's status label, those answered 2xx (what a user waits for;
    a refused forgery that waits for a JWKS fetch is the forgery checks' business, not the SLO's): scope ``"2xx"``;
    else every request (scope ``"all"``)."""
    c = prom.contract
    if not c.latency_histogram:
        return {}, ""
    labelled = any(sample["metric"].get(c.status_label)
                   for sample in query(prom, f"group by ({c.status_label}) ({c.latency_histogram}_bucket)", at=end))
    selector = f"{c.latency_histogram}_bucket" + (f'{{{c.status_label}=~"2.."}}' if labelled else "")
    window = max(1, int(end - start + 0.999))
    inner = f"sum by (le, {c.service_label}) (increase({selector}[{window}s]))"
    out = {}
    for sample in query(prom, f"histogram_quantile(0.95, {inner})", at=end):
        value = float(sample["value"][1])
        if value == value:  # NaN: no request finished in the window
            out[c.service_of(sample)] = value
    return out, "2xx" if labelled else "all"


def latest_sample_time(prom: Prom, metric: str = "") -> float:
    """Unix time of the newest sample of ``metric`` (default: the contract's request counter); 0.0 when none."""
    res = query(prom, f"max(timestamp({metric or prom.contract.requests}))")
    return float(res[0]["value"][1]) if res else 0.0


def services_where(prom: Prom, selector: str, at: float | None = None, range_seconds: float = 0.0) -> list[str]:
    """Services (the contract's service label) for which ``selector`` is >= 1 at ``at``, or at any time in the
    ``range_seconds`` before it. Used with the contract's ``cache_expired`` / ``cache_stale`` selectors."""
    c = prom.contract
    inner = f"max_over_time({selector}[{max(1, int(range_seconds + 0.999))}s])" if range_seconds else selector
    return sorted({c.service_of(s) for s in query(prom, c.by_service(inner), at) if float(s["value"][1]) >= 1})


def unverified_accepts_between(prom: Prom, start: float, end: float) -> dict[str, float]:
    """Per service: tokens accepted without a verified signature between ``start`` and ``end`` (the contract's
    ``unverified_accepts`` counter; a fail-open service), up to each series' first scrape after ``end`` (what was
    accepted on the last tick is scraped after it): call it once Prometheus has scraped past ``end``
    (:func:`wait_for_samples`). Empty when none."""
    c = prom.contract
    if not c.unverified_accepts:  # METRIC_UNVERIFIED_ACCEPTS=off
        return {}
    per: dict[str, float] = {}
    for s in increase_between(prom, c.unverified_accepts, start, end, through_next_scrape=True):
        if s.count > 0:
            svc = c.service_of({"metric": s.labels})
            per[svc] = per.get(svc, 0.0) + s.count
    return per


def prometheus_alerts(prom: Prom, timeout: float = 10.0) -> list[dict[str, Any]]:
    """``GET /api/v1/alerts`` -> list of {"labels": {...}, "state": "pending|firing", ...}."""
    r = prom.backend.get("/api/v1/alerts", timeout=timeout)
    alerts: list[dict[str, Any]] = r.json()["data"]["alerts"]
    return alerts


def alertmanager_alerts(alertmanager: Backend, timeout: float = 10.0) -> list[dict[str, Any]]:
    """``GET /api/v2/alerts`` -> list of {"labels": {...}, "status": {"state": "active|suppressed|..."}, ...}."""
    r = alertmanager.get("/api/v2/alerts", timeout=timeout)
    alerts: list[dict[str, Any]] = r.json()
    return alerts


def wait_for_samples(prom: Prom, until: float, timeout: float = 30.0,
                     services: list[str] | tuple[str, ...] = ()) -> bool:
    """Wait (up to ``timeout`` s) until Prometheus holds a request-counter sample at or after ``until``: of any
    series, or with ``services``, of every one of them (a dead service makes this wait the whole ``timeout``)."""
    c = prom.contract

    def reached() -> bool:
        try:
            if not services:
                return latest_sample_time(prom) >= until
            newest = {c.service_of(s): float(s["value"][1])
                      for s in query(prom, c.by_service(f"timestamp({c.requests})"))}
            return all(newest.get(svc, 0.0) >= until for svc in services)
        except (requests.RequestException, RuntimeError):
            return False

    return retry_until(reached, bool, time.time() + timeout, 1.0)
