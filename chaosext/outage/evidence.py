"""Evidence: the series a run was judged on, kept next to its run file so the report draws them after the lab is gone.

``judge_outage`` and the safety control (after the run, with the recovery window) call :func:`save_run_evidence`,
which writes ``<run dir>/evidence.json`` (:data:`EVIDENCE_FORMAT`): the run's windows (baseline, outage, recovery) and
one Prometheus ``query_range`` per query of the target's :class:`EvidencePlan` over them (:func:`evidence_plan`: the
run's metric contract and the services' own cache signals, so the plots read the target's names), and why a plot
cannot be drawn for this target. ``chaosext report`` (``chaosext.report.collect``) reads it back; the error-rate
queries are the same selectors the error-rate probe judges (``chaosext.metrics.prom``), so plot and verdict agree.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from chaosext.core import safefs
from chaosext.core.errors import ConfigError
from chaosext.core.names import UNAUTHENTICATED_TENANT
from chaosext.core.target import CACHE_STATES, MetricContract, Service
from chaosext.metrics import prom
from chaosext.metrics.cache import own_queries, signal_of, state_expr
from chaosext.metrics.prom import Prom, prom_of
from chaosext.run.context import RunContext
from chaosext.run.record import CheckResult

__all__ = ["QUERIES", "EVIDENCE_FORMAT", "EVIDENCE_FILE", "HTTP_TIMEOUT", "EvidencePlan", "evidence_plan",
           "contract_queries", "query_ranges", "save_evidence", "load_windows", "load_plan_notes", "run_windows",
           "save_run_evidence"]

#: What save_evidence writes (and load_windows / the report's load_ranges read back).
EVIDENCE_FORMAT = "chaosext-evidence/1"
EVIDENCE_FILE = "evidence.json"
HTTP_TIMEOUT = 10.0


def _literal(promql: str) -> str:
    """``promql`` safe inside a ``str.format`` template."""
    return promql.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True)
class EvidencePlan:
    """What to fetch for a target's plots, in its own names, and why a plot cannot be drawn for it.

    ``queries``: name -> PromQL (``{w}``: the rate window). ``notes``: plot key -> why it cannot be drawn for this
    target at all. ``cache_gaps``: service -> why Prometheus may hold no cache state of it (the plot names those it
    has no series of)."""

    queries: dict[str, str]
    notes: dict[str, str] = field(default_factory=dict)
    cache_gaps: dict[str, str] = field(default_factory=dict)


def _as_service(c: MetricContract, promql: str) -> str:
    """``promql`` with the contract's service label copied to ``service`` (the plots' label)."""
    if c.service_label == "service":
        return promql
    return f'label_replace({promql}, "service", "$1", "{c.service_label}", "(.*)")'


def evidence_plan(c: MetricContract, services: Mapping[str, Service] | None = None) -> EvidencePlan:
    """The report's queries through the metric contract and the services' own cache signals (``services``).

    - error rate: the very selectors the error-rate probe judges (``chaosext.metrics.prom``), by service;
    - p95 latency: ``METRIC_LATENCY_HISTOGRAM``'s buckets by service (none: a note says the plot cannot be drawn);
    - JWKS cache state: ``METRIC_CACHE_FRESH/_STALE/_EXPIRED/_EMPTY`` by the service label, or a service's own
      ``cache.prometheus`` expressions (a service read over HTTP has no history in Prometheus: a gap the plot names);
    - the alerts (Prometheus' own ``ALERTS``), and the lab's cache age where the names are the lab's."""
    services = services or {}

    def rate(selector: str) -> str:
        return f"sum by (service) ({_as_service(c, f'rate({_literal(selector)}[{{w}}])')})"

    queries = {"error_rate": f"({rate(c.error_selector())} or {rate(c.total_selector())} * 0)"
                             f" / {rate(c.total_selector())}"}
    notes: dict[str, str] = {}
    if c.latency_histogram:
        # the unauthenticated pseudo-tenant's fast 401s are not users' latency
        tenant = f'{c.tenant_label}!="{UNAUTHENTICATED_TENANT}"' if c.tenant_label else ""
        buckets = _as_service(c, f"rate({c.latency_histogram}_bucket{{{tenant}}}[WINDOW])")
        queries["p95_latency"] = _literal(f"histogram_quantile(0.95, sum by (service, le) ({buckets}))").replace(
            "WINDOW", "{w}")
    else:
        notes["p95_latency"] = ("not drawn: the target names no latency histogram (METRIC_LATENCY_HISTOGRAM=off, "
                                "prometheus.metrics.latency_histogram in its description); k6's own p95 is in the "
                                "probes' table")
    states = [state_expr(state, _as_service(c, f"({getattr(c, f'cache_{state}')})"),
                         own_queries(services, state), "service") for state in CACHE_STATES]
    queries["jwks_cache_state"] = _literal(f"max by (service, state) ({' or '.join(states)})")
    if c.is_lab:
        queries["jwks_cache_age"] = "max by (service) (jwks_cache_age_seconds)"
    # pending/firing per alert name (Prometheus' own ALERTS series)
    queries["alerts"] = "max by (alertname, alertstate) (ALERTS)"
    gaps = {name: f"its cache state is read over HTTP ({svc.cache.url}), which Prometheus keeps no history of: the "
                  f"watch step's ticks (outage.json) hold what it saw" for name, svc in services.items()
            if signal_of(svc) == "http"}
    gaps.update({name: f"no Prometheus series of it answers METRIC_CACHE_* by {c.service_label}={name!r}"
                 for name, svc in services.items() if signal_of(svc) == "metrics"})
    return EvidencePlan(queries, notes, gaps)


#: Name -> PromQL for the lab's names (the default metric contract); ``{w}`` is replaced by the rate window. A run
#: uses :func:`evidence_plan`, the same queries in its target's names.
QUERIES: dict[str, str] = evidence_plan(MetricContract()).queries


def contract_queries(c: MetricContract) -> dict[str, str]:
    """The report's queries for a metric contract alone (no service's own cache signal): :func:`evidence_plan`'s."""
    return evidence_plan(c).queries


def query_ranges(p: Prom, start: float, end: float,
                 queries: dict[str, str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run each query over [start, end] with ``/api/v1/query_range``; a step giving ~300 points.

    Raises requests.RequestException / ValueError when Prometheus is unreachable or answers an error.
    """
    step = max(2, math.ceil((end - start) / 300))
    window = f"{max(10, 4 * step)}s"
    out: dict[str, list[dict[str, Any]]] = {}
    for name, template in (queries or contract_queries(p.contract)).items():
        out[name] = prom.query_range(p, template.format(w=window), start, end, step,
                                     timeout=HTTP_TIMEOUT)
    return out


def save_evidence(p: Prom, windows: dict[str, tuple[float, float]], out_dir: str,
                  plan: EvidencePlan | None = None) -> dict[str, Any]:
    """Save the series the experiment judged, for its windows (e.g. baseline, outage, recovery), into
    ``<out_dir>/evidence.json`` (mode 0600), so ``chaosext report`` draws the same pictures after the lab is gone or
    Prometheus has rotated the data. ``plan``: the target's queries and plot notes (default: the contract's alone);
    the notes are kept in the file too, so a report drawn later says why a plot cannot be drawn.

    One ``query_range`` per query over the span from the earliest window start to the latest window end (the
    plots need the gaps between windows too). Returns ``{"ok", "evidence_file", "windows", "series", "points",
    "error"}``; put that dict into the journal (any activity output) and the report finds the file. Raises
    ValueError for unusable windows; a Prometheus that cannot answer gives ``ok: false`` and the reason (the file
    then holds the windows and whatever was fetched), never an exception.
    """
    if not windows:
        raise ConfigError("save_evidence needs at least one window, e.g. {'outage': (start, end)} in unix seconds")
    clean: dict[str, list[float]] = {}
    for name, pair in windows.items():
        try:
            start, end = float(pair[0]), float(pair[1])
        except (TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"window {name!r}: expected (start, end) unix seconds, got {pair!r}") from exc
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ConfigError(f"window {name!r}: end {end} is before start {start}")
        clean[str(name)] = [start, end]
    span = (min(w[0] for w in clean.values()), max(w[1] for w in clean.values()))
    error = ""
    plan = plan or evidence_plan(p.contract)
    try:
        ranges = query_ranges(p, span[0], max(span[1], span[0] + 1), plan.queries)
    except (requests.RequestException, ValueError, KeyError) as exc:
        ranges, error = {}, f"{p.url} gave no ranges: {type(exc).__name__}: {exc}"
    doc = {"format": EVIDENCE_FORMAT, "prometheus_url": p.url, "windows": clean, "span": list(span),
           "ranges": ranges, "error": error, "plot_notes": plan.notes, "cache_gaps": plan.cache_gaps}
    path = safefs.write_file(Path(out_dir) / EVIDENCE_FILE, json.dumps(doc))  # root-safe, 0600 in a 0700 directory
    series = {name: len(matrix) for name, matrix in ranges.items()}
    points = sum(len(item.get("values", [])) for matrix in ranges.values() for item in matrix)
    return {"ok": not error and points > 0, "evidence_file": str(path), "windows": clean, "series": series,
            "points": points, "error": error or ("" if points else "Prometheus returned no samples for the windows")}


def load_windows(path: str | Path) -> dict[str, tuple[float, float]]:
    """The named windows of an evidence file (``{}`` for a plain ranges file)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(doc, dict) and doc.get("format") == EVIDENCE_FORMAT:
        return {name: (float(w[0]), float(w[1])) for name, w in (doc.get("windows") or {}).items()}
    return {}


def load_plan_notes(path: str | Path) -> EvidencePlan:
    """The plot notes and cache gaps an evidence file kept (none in a plain ranges file or an older one)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != EVIDENCE_FORMAT:
        return EvidencePlan({})
    notes, gaps = doc.get("plot_notes") or {}, doc.get("cache_gaps") or {}
    return EvidencePlan({}, {str(k): str(v) for k, v in notes.items()}, {str(k): str(v) for k, v in gaps.items()})


def run_windows(ctx: RunContext) -> dict[str, tuple[float, float]]:
    """The run's baseline, outage and (once it began) recovery windows, unix seconds, from its run record."""
    run = ctx.record()
    now = time.time()
    windows: dict[str, tuple[float, float]] = {}
    if run.baseline is not None:
        windows["baseline"] = run.baseline.window
    window = run.outage_window(now)
    if window is not None:
        windows["outage"] = window
        if run.phase == "recovery" and now > window[1]:
            windows["recovery"] = (window[1], now)
    return windows


def save_run_evidence(ctx: RunContext) -> CheckResult:
    """:func:`save_evidence` for this run's windows into its run directory; never raises."""
    windows = run_windows(ctx)
    if not windows or ctx.run_dir is None:
        return {"ok": False, "error": "no window recorded"}
    try:
        return save_evidence(prom_of(ctx), windows, str(ctx.run_dir),
                             evidence_plan(ctx.cfg.metrics, ctx.cfg.services))
    except (ValueError, OSError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
