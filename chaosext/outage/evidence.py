"""Evidence: the series a run was judged on, kept next to its run file so the report draws them after the lab is gone.

``judge_outage`` and the safety control (after the run, with the recovery window) call :func:`save_run_evidence`,
which writes ``<run dir>/evidence.json`` (:data:`EVIDENCE_FORMAT`): the run's windows (baseline, outage, recovery) and
one Prometheus ``query_range`` per :data:`QUERIES` entry over them. ``chaosext report`` (``chaosext.report.collect``)
reads it back; the queries are the same selectors the error-rate probe judges (``chaosext.metrics.prom``), so plot and
verdict agree.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import requests

from chaosext.core import safefs
from chaosext.core.errors import ConfigError
from chaosext.core.names import UNAUTHENTICATED_TENANT
from chaosext.core.target import MetricContract
from chaosext.metrics import prom
from chaosext.metrics.prom import ERROR_SELECTOR, TOTAL_SELECTOR, Prom, prom_of
from chaosext.run.context import RunContext
from chaosext.run.record import CheckResult

__all__ = ["QUERIES", "EVIDENCE_FORMAT", "EVIDENCE_FILE", "HTTP_TIMEOUT", "contract_queries", "query_ranges",
           "save_evidence", "load_windows", "run_windows", "save_run_evidence"]

#: What save_evidence writes (and load_windows / the report's load_ranges read back).
EVIDENCE_FORMAT = "chaosext-evidence/1"
EVIDENCE_FILE = "evidence.json"
HTTP_TIMEOUT = 10.0


def _literal(promql: str) -> str:
    """``promql`` safe inside a ``str.format`` template."""
    return promql.replace("{", "{{").replace("}", "}}")


#: Name -> PromQL; ``{w}`` is replaced by the rate window. Error = 5xx or 401 without chaosext's own forged-token
#: requests: the very selectors the error-rate probe judges (chaosext.metrics.prom), so plot and verdict agree.
QUERIES: dict[str, str] = {
    # "or total * 0": a service with no error series at all plots 0, not "no data"
    "error_rate": (f"(sum by (service) (rate({_literal(ERROR_SELECTOR)}[{{w}}]))"
                   f" or sum by (service) (rate({_literal(TOTAL_SELECTOR)}[{{w}}])) * 0)"
                   f" / sum by (service) (rate({_literal(TOTAL_SELECTOR)}[{{w}}]))"),
    # server side, from the services' histogram (bucket boundaries at 0.3 s and 0.6 s, 0.5 ms resolution at the
    # bottom); the unauthenticated pseudo-tenant's fast 401s are not users' latency
    "p95_latency": ("histogram_quantile(0.95, sum by (service, le) "
                    f"(rate(tenant_request_duration_seconds_bucket{{{{tenant!=\"{UNAUTHENTICATED_TENANT}\"}}}}[{{w}}])))"),
    "jwks_cache_state": "max by (service, state) (jwks_cache_state)",
    "jwks_cache_age": "max by (service) (jwks_cache_age_seconds)",
    # pending/firing per alert name (Prometheus' own ALERTS series)
    "alerts": "max by (alertname, alertstate) (ALERTS)",
}


def contract_queries(c: MetricContract) -> dict[str, str]:
    """QUERIES with the error rate over the run's metric contract (METRIC_* settings; the same as QUERIES with the
    lab's names), its service label copied to ``service`` for the plots."""
    if c.is_lab:
        return dict(QUERIES)

    def rate(selector: str) -> str:
        inner = f"rate({_literal(selector)}[{{w}}])"
        if c.service_label != "service":
            inner = f'label_replace({inner}, "service", "$1", "{c.service_label}", "(.*)")'
        return f"sum by (service) ({inner})"

    return {**QUERIES, "error_rate": f"({rate(c.error_selector())} or {rate(c.total_selector())} * 0)"
                                     f" / {rate(c.total_selector())}"}


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


def save_evidence(p: Prom, windows: dict[str, tuple[float, float]], out_dir: str) -> dict[str, Any]:
    """Save the series the experiment judged, for its windows (e.g. baseline, outage, recovery), into
    ``<out_dir>/evidence.json`` (mode 0600), so ``chaosext report`` draws the same pictures after the lab is gone or
    Prometheus has rotated the data.

    One ``query_range`` per QUERIES entry over the span from the earliest window start to the latest window end (the
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
    try:
        ranges = query_ranges(p, span[0], max(span[1], span[0] + 1))
    except (requests.RequestException, ValueError, KeyError) as exc:
        ranges, error = {}, f"{p.url} gave no ranges: {type(exc).__name__}: {exc}"
    doc = {"format": EVIDENCE_FORMAT, "prometheus_url": p.url, "windows": clean, "span": list(span),
           "ranges": ranges, "error": error}
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
        return save_evidence(prom_of(ctx), windows, str(ctx.run_dir))
    except (ValueError, OSError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
