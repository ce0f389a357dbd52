"""Gather what a report shows: the journal's verdict, timeline, probes, outage window, Prometheus ranges, audit events.

Sources, in order of preference for the metric ranges: a JSON file of ranges recorded during the run (``--ranges``),
else Prometheus ``/api/v1/query_range`` for the journal's start..end window (``--prometheus-url``). Both use the
Prometheus API's matrix shape: ``{name: [{"metric": {...}, "values": [[unix_ts, "value"], ...]}, ...]}``.
"""
from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from chaosext.metrics import contract, prom
from chaosext.metrics.prom import ERROR_SELECTOR, TOTAL_SELECTOR

__all__ = [
    "QUERIES", "AUDIT_ACTIONS", "EVIDENCE_FORMAT", "EVIDENCE_FILE", "load_journal", "parse_time", "verdict_of",
    "timeline", "probe_results", "outage_window", "query_ranges", "load_ranges", "load_windows", "audit_events",
    "save_evidence", "evidence_in_journal", "k6_p95_ms",
]

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
                    "(rate(tenant_request_duration_seconds_bucket{{tenant!=\"__unauthenticated__\"}}[{w}])))"),
    "jwks_cache_state": "max by (service, state) (jwks_cache_state)",
    "jwks_cache_age": "max by (service) (jwks_cache_age_seconds)",
    # pending/firing per alert name (Prometheus' own ALERTS series)
    "alerts": "max by (alertname, alertstate) (ALERTS)",
}


def contract_queries() -> dict[str, str]:
    """QUERIES with the error rate over the run's metric contract (METRIC_* settings; the same as QUERIES with the
    lab's names), its service label copied to ``service`` for the plots."""
    c = contract.current()
    if c == contract.MetricContract():
        return dict(QUERIES)

    def rate(selector: str) -> str:
        inner = f"rate({_literal(selector)}[{{w}}])"
        if c.service_label != "service":
            inner = f'label_replace({inner}, "service", "$1", "{c.service_label}", "(.*)")'
        return f"sum by (service) ({inner})"

    return {**QUERIES, "error_rate": f"({rate(c.error_selector())} or {rate(c.total_selector())} * 0)"
                                     f" / {rate(c.total_selector())}"}


#: What save_evidence writes (and load_ranges / load_windows read back).
EVIDENCE_FORMAT = "chaosext-evidence/1"
EVIDENCE_FILE = "evidence.json"
AUDIT_ACTIONS = ("auth.degraded", "auth.recovered", "auth.expired")
FAULT_ACTIONS = ("block_jwks_egress",)
RESTORE_ACTIONS = ("restore_jwks_egress",)
HTTP_TIMEOUT = 10.0


def load_journal(path: str | Path) -> dict[str, Any]:
    """Read a Chaos Toolkit journal.json; ValueError with the fix when it is not one."""
    try:
        journal = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read journal {path}: {exc.strerror}; pass the file `chaos run --journal-path` "
                         f"wrote") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc}); was the run interrupted while writing it?") from exc
    if not isinstance(journal, dict) or "experiment" not in journal or "run" not in journal:
        raise ValueError(f"{path} is not a Chaos Toolkit journal (no 'experiment'/'run' keys)")
    return journal


def parse_time(value: Any) -> float | None:
    """ISO time (naive = UTC, as chaoslib writes it) or unix seconds -> unix seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def verdict_of(journal: dict[str, Any]) -> dict[str, Any]:
    """The same judgement as `chaosext verdict` (``chaosext.verdict.judge``), as ``{passed, summary, reasons}``."""
    from chaosext.verdict import judge

    reasons = judge(journal)
    return {"passed": not reasons, "summary": "PASS" if not reasons else "FAIL", "reasons": reasons}


def _func(item: dict[str, Any]) -> str:
    provider = (item.get("activity") or {}).get("provider") or {}
    return str(provider.get("func") or provider.get("path") or "")


def _items(journal: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(phase, run item) for every activity the journal recorded, in run order."""
    states = journal.get("steady_states") or {}
    out: list[tuple[str, dict[str, Any]]] = []
    for item in (states.get("before") or {}).get("probes", []):
        out.append(("hypothesis before", item))
    out += [("method", item) for item in journal.get("run") or []]
    for during in states.get("during") or []:
        out += [("hypothesis during", item) for item in (during or {}).get("probes", [])]
    for item in (states.get("after") or {}).get("probes", []):
        out.append(("hypothesis after", item))
    out += [("rollback", item) for item in journal.get("rollbacks") or []]
    return out


def timeline(journal: dict[str, Any]) -> list[dict[str, Any]]:
    """Every activity with phase, kind, function, start/end (unix s), status and the first error line."""
    rows = []
    for phase, item in _items(journal):
        activity = item.get("activity") or {}
        exc = item.get("exception") or []
        rows.append({
            "phase": phase, "name": activity.get("name", "?"), "type": activity.get("type", "?"),
            "func": _func(item), "background": bool(activity.get("background")),
            "start": parse_time(item.get("start")), "end": parse_time(item.get("end")),
            "status": item.get("status", "?"),
            "error": (exc[-1] if isinstance(exc, list) and exc else str(exc or "")).strip(),
        })
    rows.sort(key=lambda r: (r["start"] is None, r["start"] or 0))
    return rows


def probe_results(journal: dict[str, Any]) -> list[dict[str, Any]]:
    """Each hypothesis probe: its value against its tolerance and whether the tolerance was met."""
    rows = []
    for phase, item in _items(journal):
        if not phase.startswith("hypothesis"):
            continue
        activity = item.get("activity") or {}
        rows.append({"phase": phase.split()[-1], "name": activity.get("name", "?"),
                     "tolerance": activity.get("tolerance"), "value": item.get("output"),
                     "met": item.get("tolerance_met"), "status": item.get("status", "?")})
    return rows


def outage_window(journal: dict[str, Any]) -> tuple[float, float] | None:
    """(start, end) unix seconds of the fault: block action start .. restore end (or start + duration)."""
    start = end = None
    duration = None
    for _phase, item in _items(journal):
        func = _func(item)
        if func in FAULT_ACTIONS and start is None:
            start = parse_time(item.get("start"))
            args = ((item.get("activity") or {}).get("provider") or {}).get("arguments") or {}
            output = item.get("output") if isinstance(item.get("output"), dict) else {}
            for key in ("duration_seconds", "duration", "outage_seconds"):
                value = output.get(key, args.get(key))
                if isinstance(value, (int, float)) or (isinstance(value, str) and value.isdigit()):
                    duration = float(value)
                    break
        elif func in RESTORE_ACTIONS and start is not None and end is None:
            end = parse_time(item.get("end"))
    if start is None:
        return None
    if end is None:
        end = start + duration if duration else parse_time(journal.get("end"))
    return (start, end or start)


def query_ranges(prometheus_url: str, start: float, end: float,
                 queries: dict[str, str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run each query over [start, end] with ``/api/v1/query_range``; a step giving ~300 points.

    Raises requests.RequestException / ValueError when Prometheus is unreachable or answers an error.
    """
    step = max(2, math.ceil((end - start) / 300))
    window = f"{max(10, 4 * step)}s"
    out: dict[str, list[dict[str, Any]]] = {}
    for name, template in (queries or contract_queries()).items():
        out[name] = prom.query_range(prometheus_url, template.format(w=window), start, end, step,
                                     timeout=HTTP_TIMEOUT)
    return out


def save_evidence(prometheus_url: str, windows: dict[str, tuple[float, float]], out_dir: str) -> dict:
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
        raise ValueError("save_evidence needs at least one window, e.g. {'outage': (start, end)} in unix seconds")
    clean: dict[str, list[float]] = {}
    for name, pair in windows.items():
        try:
            start, end = float(pair[0]), float(pair[1])
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"window {name!r}: expected (start, end) unix seconds, got {pair!r}") from exc
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ValueError(f"window {name!r}: end {end} is before start {start}")
        clean[str(name)] = [start, end]
    span = (min(w[0] for w in clean.values()), max(w[1] for w in clean.values()))
    error = ""
    try:
        ranges = query_ranges(prometheus_url, span[0], max(span[1], span[0] + 1))
    except (requests.RequestException, ValueError, KeyError) as exc:
        ranges, error = {}, f"{prometheus_url} gave no ranges: {type(exc).__name__}: {exc}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = out / EVIDENCE_FILE
    doc = {"format": EVIDENCE_FORMAT, "prometheus_url": prometheus_url, "windows": clean, "span": list(span),
           "ranges": ranges, "error": error}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(doc, handle)
    os.chmod(path, 0o600)
    series = {name: len(matrix) for name, matrix in ranges.items()}
    points = sum(len(item.get("values", [])) for matrix in ranges.values() for item in matrix)
    return {"ok": not error and points > 0, "evidence_file": str(path), "windows": clean, "series": series,
            "points": points, "error": error or ("" if points else "Prometheus returned no samples for the windows")}


def evidence_in_journal(journal: dict[str, Any], journal_path: str | Path | None = None) -> str:
    """The first ``evidence_file`` named in any activity output of the journal that exists (relative paths are
    tried next to the journal too); "" when none."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            path = value.get("evidence_file")
            if isinstance(path, str) and path:
                found.append(path)
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    for _phase, item in _items(journal):
        walk(item.get("output"))
    base = Path(journal_path).parent if journal_path else None
    for path in found:
        for candidate in (Path(path), base / path if base is not None else None):
            if candidate is not None and candidate.is_file():
                return str(candidate)
    return ""


def k6_p95_ms(journal: dict[str, Any]) -> dict[str, float]:
    """k6's own p95 by kind (``{"read": ms, "write": ms}``, client side, whole k6 run) from the k6 summary probe's
    output in the journal; empty when the journal has none."""
    for _phase, item in _items(journal):
        output = item.get("output")
        if isinstance(output, dict):
            p95 = {k: output.get(f"p95_{k}_ms") for k in ("read", "write")}
            p95 = {k: float(v) for k, v in p95.items() if isinstance(v, (int, float))}
            if p95:
                return p95
    return {}


def load_windows(path: str | Path) -> dict[str, tuple[float, float]]:
    """The named windows of an evidence file (``{}`` for a plain ranges file)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(doc, dict) and doc.get("format") == EVIDENCE_FORMAT:
        return {name: (float(w[0]), float(w[1])) for name, w in (doc.get("windows") or {}).items()}
    return {}


def load_ranges(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Recorded ranges: ``{name: matrix}`` where matrix is a result list or a whole query_range response, or an
    evidence file written by save_evidence."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected an object {{query name: matrix}}")
    if doc.get("format") == EVIDENCE_FORMAT:
        doc = doc.get("ranges") or {}
    out = {}
    for name, value in doc.items():
        if isinstance(value, dict) and "data" in value:
            value = value["data"].get("result", [])
        out[name] = list(value or [])
    return out


def audit_events(path: str | Path, start: float | None = None, end: float | None = None) -> list[dict[str, Any]]:
    """``auth.degraded`` / ``auth.recovered`` / ``auth.expired`` lines of an audit JSONL file within [start, end]."""
    events = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line while the lab was writing
        if not isinstance(event, dict) or event.get("action") not in AUDIT_ACTIONS:
            continue
        ts = parse_time(event.get("timestamp"))
        if ts is None or (start is not None and ts < start) or (end is not None and ts > end):
            continue
        events.append({**event, "ts": ts})
    return sorted(events, key=lambda e: e["ts"])
