"""Read audit events back from where they land: the lab's JSONL file, Loki, or ClickHouse.

Every reader returns events as dicts with the audit fields (docs/architecture.md, "Audit events") plus ``ts``
(unix seconds), read through the target's audit mapping (``audit.fields``: which field of its events holds the time,
the service, the action, the tenant; ``audit.actions``: its names for what chaosext looks for). Loki and ClickHouse
queries come from AUDIT_LOGQL / AUDIT_SQL when given, else ``chaosext.audit.schema`` (the shipped collector's
contract); the action is matched again on every event read, so a query may select more than it must.

- ``file:<path>``: one JSON object a line.
- ``loki:<url>``: ``GET /loki/api/v1/query_range`` with the LogQL of ``schema.loki_query``; the response's streams
  hold ``[[ns, line], ...]`` (a third element holds structured metadata with the categorize-labels encoding); the
  line is the original JSON audit line.
- ``clickhouse:<url>``: ``POST`` the SQL of ``schema.clickhouse_query`` (or AUDIT_SQL with ``{since}``/``{until}``
  unix seconds and ``{action}``) to the HTTP interface; ``FORMAT JSON`` returns ``{"meta": [...], "data": [...]}``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, cast

import requests

from chaosext.audit import schema
from chaosext.core.backends import Backend, BackendError
from chaosext.core.errors import ChaosextError, ConfigError
from chaosext.core.target import AuditMapping
from chaosext.run.context import RunContext

__all__ = ["AuditError", "AuditEvent", "parse_timestamp", "read_file", "read_loki", "read_clickhouse",
           "read_events", "role_mapped"]


class AuditError(ChaosextError, RuntimeError):
    """The audit store (Loki, ClickHouse) could not be read or answered something else than audit rows; the message
    names the store and what to check."""


class AuditEvent(schema.AuditRecord):
    """An audit record as read back, with ``ts``: its time in unix seconds."""

    ts: float


def parse_timestamp(value: Any) -> float:
    """ISO-8601 (``...Z``), ClickHouse DateTime64 (``2026-11-29 21:40:00.123000000``, UTC) or a unix time in s, ms
    (JavaScript's ``Date.now()``: pino's default ``time``, logback's), us or ns -> unix s. The unit is told by the
    magnitude: now is ~1.8e9 s = 1.8e12 ms = 1.8e15 us = 1.8e18 ns."""
    if isinstance(value, (int, float)):
        v = float(value)
        for unit, scale in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):
            if abs(v) >= unit:
                return v / scale
        return v
    text = str(value).strip()
    if text.replace(".", "", 1).isdigit():
        return parse_timestamp(float(text))
    text = text.replace("Z", "+00:00").replace(" ", "T", 1)
    if "." in text:  # Python accepts at most 6 fractional digits
        head, frac = text.split(".", 1)
        digits = "".join(ch for ch in frac if ch.isdigit())
        rest = frac[len(digits):]
        text = f"{head}.{digits[:6]}{rest}"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _dotted(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return doc.get(path)  # a flat key with dots in its name
        node = node[part]
    return node


def _event(fields: dict[str, Any], mapping: AuditMapping, ts: Any = None) -> AuditEvent:
    """One event in chaosext's shape from a record in the target's (``mapping.fields`` names its fields)."""
    ev = {k: fields.get(k) for k in schema.AUDIT_FIELDS}
    for ours, theirs in (("service", mapping.fields.get("service")), ("action", mapping.fields.get("action")),
                         ("tenant", mapping.fields.get("tenant")), ("timestamp", mapping.fields.get("time"))):
        if theirs:
            value = _dotted(fields, theirs)
            ev[ours] = value if value is None or isinstance(value, (int, float)) else str(value)
    ev["ts"] = parse_timestamp(ts if ts is not None else ev.get("timestamp"))
    return cast(AuditEvent, ev)  # AUDIT_FIELDS are AuditRecord's keys, plus ts


def _json(store: str, url: str, resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise AuditError(f"{store} at {url} answered {resp.headers.get('Content-Type') or 'something'} that is not "
                         f"JSON ({resp.text[:120]!r}); check that AUDIT_SOURCE points at {store}'s HTTP API") from None


def read_file(path: str, action: str, since: float, until: float,
              mapping: AuditMapping | None = None) -> list[AuditEvent]:
    """Events with ``action`` ('' = any) in [since, until] from a JSONL file (unparseable lines are skipped; no file:
    none)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return _matching(fh, action, since, until, mapping or AuditMapping())
    except FileNotFoundError:
        return []


def _matching(lines: Iterable[str], action: str, since: float, until: float,
              mapping: AuditMapping) -> list[AuditEvent]:
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                continue
            ev = _event(rec, mapping)
        except (ValueError, AttributeError, TypeError, OverflowError):
            continue
        if (not action or ev.get("action") == action) and since <= ev["ts"] <= until:
            out.append(ev)
    return out


def _ask(store: str, url: str, form: str, send: Callable[[], requests.Response]) -> requests.Response:
    """``send()`` to the audit store; AuditError saying what to check when it refuses or cannot be reached."""
    try:
        return send()
    except BackendError as exc:  # its message says which credentials or CA to set
        raise AuditError(f"{store} query failed: {exc}") from None
    except requests.RequestException as exc:
        raise AuditError(f"{store} at {url} unreachable ({type(exc).__name__}); check the URL in AUDIT_SOURCE "
                         f"({form}) and that {store} is up") from None


def read_loki(loki: Backend, action: str, since: float, until: float, services: tuple[str, ...] = (),
              timeout: float = 10.0, logql: str = "", mapping: AuditMapping | None = None) -> list[AuditEvent]:
    """Events with ``action`` ('' = any) in [since, until] from Loki's ``query_range`` (direction forward, limit
    5000), with the LogQL of ``logql`` (AUDIT_LOGQL: ``{services}`` and ``{action}`` are filled in) or the collector
    contract's; AuditError when Loki cannot be read."""
    mapping = mapping or AuditMapping()
    query = logql.replace("{services}", "|".join(re.escape(s) for s in services) or ".+").replace(
        "{action}", action) if logql else schema.loki_query(action, services)
    params = {"query": query, "start": str(int(since * 1e9)),
              "end": str(int(until * 1e9)), "limit": "5000", "direction": "forward"}
    # credentials, tenant (X-Scope-OrgID) and TLS from chaosext.core.backends
    url = loki.url
    r = _ask("Loki", url, "loki:<base URL>", lambda: loki.get("/loki/api/v1/query_range", params=params,
                                                              timeout=timeout))
    body = _json("Loki", url, r)
    if not isinstance(body, dict) or body.get("status") != "success" \
            or (body.get("data") or {}).get("resultType") != "streams":
        raise AuditError(f"unexpected Loki response: {str(body)[:300]}; AUDIT_SOURCE must be loki:<Loki's base URL>, "
                         f"whose /loki/api/v1/query_range answers log streams")
    out = []
    for stream in body["data"]["result"]:
        labels = stream.get("stream") or {}
        for value in stream.get("values") or []:
            ns, line = value[0], value[1]
            try:
                rec = json.loads(line)
            except ValueError:
                rec = {}
            if not isinstance(rec, dict):
                rec = {}
            meta = value[2].get("structuredMetadata", {}) if len(value) > 2 and isinstance(value[2], dict) else {}
            merged = {**labels, **meta, **rec}
            merged.setdefault("service", labels.get(schema.LOKI_SERVICE_LABEL))
            ev = _event(merged, mapping, ts=int(ns))
            if not action or ev.get("action") in (None, action):
                ev["action"] = ev.get("action") or action
                out.append(ev)
    return out


def read_clickhouse(clickhouse: Backend, action: str, since: float, until: float, services: tuple[str, ...] = (),
                    sql: str = "", timeout: float = 10.0, mapping: AuditMapping | None = None) -> list[AuditEvent]:
    """Events with ``action`` in [since, until] from ClickHouse's HTTP interface (``FORMAT JSON``); AuditError when
    ClickHouse cannot be read."""
    if sql:
        query = sql.format(since=since, until=until, action=action)
    else:
        query = schema.clickhouse_query(action=action, since_unix=since, services=services,
                                        database=clickhouse.auth.database)
    # user, password, database and TLS from chaosext.core.backends
    url = clickhouse.url
    r = _ask("ClickHouse", url, "clickhouse:<HTTP interface URL>", lambda: clickhouse.post(
        "/", data=query.encode(), timeout=timeout))
    body = _json("ClickHouse", url, r)
    if not isinstance(body, dict):
        raise AuditError(f"ClickHouse at {url} answered {str(body)[:200]}, not FORMAT JSON's object; end AUDIT_SQL "
                         f"with FORMAT JSON")
    out = []
    for row in body.get("data") or []:
        ev = _event(row, mapping or AuditMapping())
        if since <= ev["ts"] <= until and (not action or ev.get("action") in (None, action)):
            ev["action"] = ev.get("action") or action
            out.append(ev)
    return out


def role_mapped(ctx: RunContext, role: str) -> bool:
    """True when the target names its audit action for ``role``."""
    return bool(ctx.cfg.audit.action(role))


def read_events(ctx: RunContext, role: str, since: float, until: float,
                services: tuple[str, ...] = ()) -> list[AuditEvent]:
    """Events of ``role`` (degraded, recovered, expired, rejected: the target's action name for it, ``audit.actions``;
    '' = any action) in [since, until] from the run's AUDIT_SOURCE (``file:``, ``loki:``, ``clickhouse:``, with
    AUDIT_LOGQL / AUDIT_SQL and the activity's credentials). ConfigError for another kind, or for a role the target
    does not name (callers check :func:`role_mapped` first and report the gap)."""
    cfg = ctx.cfg
    action = cfg.audit.action(role) if role else ""
    if role and not action:
        raise ConfigError(f"the target names no audit action for {role!r}: give audit.actions.{role} in TARGET_FILE")
    kind, where = cfg.audit_kind, cfg.audit_location
    if kind == "file":
        return read_file(where, action, since, until, cfg.audit)
    if kind == "loki":
        return read_loki(ctx.backend("loki"), action, since, until, services, logql=cfg.audit_logql,
                         mapping=cfg.audit)
    if kind == "clickhouse":
        return read_clickhouse(ctx.backend("clickhouse"), action, since, until, services, cfg.audit_sql,
                               mapping=cfg.audit)
    raise ConfigError(f"AUDIT_SOURCE={cfg.audit_source!r} must be file:<path>, loki:<url> or clickhouse:<url>")
