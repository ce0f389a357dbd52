"""Gather what a report shows: the journal's verdict, timeline, probes, outage window, Prometheus ranges, audit events.

Sources, in order of preference for the metric ranges: the evidence file the run saved (``chaosext.outage.evidence``,
named in the journal), a JSON file of ranges recorded during the run (``--ranges``), else Prometheus
``/api/v1/query_range`` for the journal's start..end window (``--prometheus-url``). All use the Prometheus API's matrix
shape: ``{name: [{"metric": {...}, "values": [[unix_ts, "value"], ...]}, ...]}``. The queries, ``query_ranges``,
``save_evidence`` and ``load_windows`` are ``chaosext.outage.evidence``'s (the experiment saves the evidence at judge
time; the report reads it).
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaosext.core.errors import ChaosextError
from chaosext.core.walk import iter_dicts
from chaosext.outage.evidence import EVIDENCE_FORMAT
from chaosext.verdict import check_record, classify

__all__ = [
    "JournalError", "AUDIT_ACTIONS", "load_journal", "parse_time", "verdict_of", "timeline", "probe_results",
    "outage_window", "load_ranges", "audit_events", "evidence_in_journal", "k6_p95_ms",
]

AUDIT_ACTIONS = ("auth.degraded", "auth.recovered", "auth.expired")
FAULT_ACTIONS = ("block_jwks_egress",)
RESTORE_ACTIONS = ("restore_jwks_egress",)


class JournalError(ChaosextError, ValueError):
    """A journal or evidence file cannot be read; the message says which file and what to do."""


def load_journal(path: str | Path) -> dict[str, Any]:
    """Read a Chaos Toolkit journal.json; ValueError with the fix when it is not one."""
    try:
        journal = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise JournalError(f"cannot read journal {path}: {exc.strerror}; pass the file `chaos run --journal-path` "
                         f"wrote") from exc
    except json.JSONDecodeError as exc:
        raise JournalError(f"{path} is not JSON ({exc}); was the run interrupted while writing it?") from exc
    if not isinstance(journal, dict) or "experiment" not in journal or "run" not in journal:
        raise JournalError(f"{path} is not a Chaos Toolkit journal (no 'experiment'/'run' keys)")
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


def verdict_of(journal: dict[str, Any], run_dir: str = "") -> dict[str, Any]:
    """The same judgement as `chaosext verdict` (``chaosext.verdict.classify`` with the journal checked against its
    run's record, ``check_record``: an edited journal FAILS, a pass whose record cannot be read is UNVERIFIED), as
    ``{passed, summary, reasons}``. ``run_dir``: the run's directory when the journal's own is not it."""
    kind, reasons = classify(journal, check_record(journal, run_dir))
    return {"passed": kind == "PASS", "summary": kind, "reasons": reasons}


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
        exc = item.get("exception")
        error = exc[-1] if isinstance(exc, list) and exc else exc
        rows.append({
            "phase": phase, "name": activity.get("name", "?"), "type": activity.get("type", "?"),
            "func": _func(item), "background": bool(activity.get("background")),
            "start": parse_time(item.get("start")), "end": parse_time(item.get("end")),
            "status": item.get("status", "?"),
            "error": str(error or "").strip(),
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
            output = item.get("output")
            output = output if isinstance(output, dict) else {}
            for key in ("deadline_seconds", "duration_seconds", "duration", "outage_seconds"):
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


def evidence_in_journal(journal: dict[str, Any], journal_path: str | Path | None = None) -> str:
    """The first ``evidence_file`` named in any activity output of the journal that exists (relative paths are
    tried next to the journal too); "" when none."""
    found = [d["evidence_file"] for _phase, item in _items(journal) for d in iter_dicts(item.get("output"))
             if isinstance(d.get("evidence_file"), str) and d["evidence_file"]]
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
            p95 = {k: float(v) for k in ("read", "write")
                   if isinstance(v := output.get(f"p95_{k}_ms"), (int, float))}
            if p95:
                return p95
    return {}


def load_ranges(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Recorded ranges: ``{name: matrix}`` where matrix is a result list or a whole query_range response, or an
    evidence file written by save_evidence."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise JournalError(f"{path}: expected an object {{query name: matrix}}")
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
