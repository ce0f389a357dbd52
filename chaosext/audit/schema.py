"""Where audit events land once the OpenTelemetry Collector has shipped them.

This module is the single contract between ``ops/devops/tenant/otel-collector.yaml`` (which writes the events) and
``chaosext.audit.probes`` (which reads them back from Loki or ClickHouse). A test
(``tests/ops/test_retention_and_collector.py``) checks the collector config against these constants, so the probe
and the collector cannot drift apart silently.

How one audit line travels (see docs/architecture.md, "Audit events"):

- the filelog receiver tails ``audit.jsonl``; the body stays the original JSON line;
- ``service``  -> resource attribute ``service.name``  -> Loki index label ``service_name`` / ClickHouse
  ``ServiceName``;
- constant resource attribute ``service.namespace`` = :data:`SERVICE_NAMESPACE` -> Loki index label
  ``service_namespace``;
- ``timestamp`` -> the log record's timestamp (Loki entry time / ClickHouse ``Timestamp``);
- ``traceId``  -> the log record's trace id (ClickHouse ``TraceId``, Loki structured metadata ``trace_id``) and is
  also kept as a log attribute;
- ``tenant``, ``subject``, ``action``, ``resource``, ``result``, ``traceId`` -> log attributes: Loki structured
  metadata of the same name (filter with ``| action="auth.degraded"``), ClickHouse ``LogAttributes['action']``.
"""
import re
from typing import TypedDict

__all__ = [
    "AuditRecord",
    "AUDIT_FIELDS",
    "AUDIT_ACTIONS",
    "SERVICE_NAMESPACE",
    "RESOURCE_ATTRIBUTES",
    "LOG_ATTRIBUTES",
    "LOKI_STREAM_LABELS",
    "LOKI_SERVICE_LABEL",
    "LOKI_SELECTOR_TEMPLATE",
    "LOKI_QUERY_TEMPLATE",
    "LOKI_TRACE_ID_FIELD",
    "CLICKHOUSE_DATABASE",
    "CLICKHOUSE_TABLE",
    "CLICKHOUSE_COLUMNS",
    "loki_query",
    "clickhouse_query",
]

class AuditRecord(TypedDict):
    """One audit JSONL line, fields in the order the lab writes them: strings (``timestamp`` ISO-8601), None where
    a store returned no value."""

    timestamp: str | None
    service: str | None
    tenant: str | None
    subject: str | None
    action: str | None
    resource: str | None
    result: str | None
    traceId: str | None


#: Fields of one audit JSONL line, in the order the lab writes them.
AUDIT_FIELDS: tuple[str, ...] = tuple(AuditRecord.__annotations__)

#: Actions the services write (``<svc>.read`` / ``<svc>.write`` are never logged per request).
AUDIT_ACTIONS: tuple[str, ...] = (
    "auth.degraded", "auth.recovered", "auth.expired", "auth.rejected", "tenant.mismatch",
)

#: Constant ``service.namespace`` resource attribute the collector stamps on every audit record.
SERVICE_NAMESPACE = "stellaops-tenant"

#: Audit field -> OTel resource attribute.
RESOURCE_ATTRIBUTES: dict[str, str] = {"service": "service.name"}

#: Audit fields kept as OTel log attributes (same names).
LOG_ATTRIBUTES: tuple[str, ...] = ("tenant", "subject", "action", "resource", "result", "traceId")

#: Loki index (stream) labels: Loki's OTLP endpoint indexes ``service.name`` / ``service.namespace`` by default and
#: turns the dots into underscores. Values: the namespace is fixed, ``service_name`` is the audit ``service`` field.
LOKI_STREAM_LABELS: dict[str, str] = {"service_namespace": SERVICE_NAMESPACE, "service_name": "<service>"}
LOKI_SERVICE_LABEL = "service_name"
#: Loki structured-metadata key of the record's trace id (set from ``traceId``).
LOKI_TRACE_ID_FIELD = "trace_id"

#: Stream selector; ``services`` is a regex alternation such as ``orders|billing`` (``.+`` for all).
LOKI_SELECTOR_TEMPLATE = '{{service_namespace="{namespace}", service_name=~"{services}"}}'
#: Full LogQL: log attributes are structured metadata, filtered with a label filter after the selector.
LOKI_QUERY_TEMPLATE = LOKI_SELECTOR_TEMPLATE + ' | action="{action}"'

#: The OTel ClickHouse exporter's defaults (``database: otel``, ``logs_table_name: otel_logs``).
CLICKHOUSE_DATABASE = "otel"
CLICKHOUSE_TABLE = "otel_logs"
#: Audit field -> ClickHouse column expression in ``otel_logs``.
CLICKHOUSE_COLUMNS: dict[str, str] = {
    "timestamp": "Timestamp",
    "service": "ServiceName",
    "tenant": "LogAttributes['tenant']",
    "subject": "LogAttributes['subject']",
    "action": "LogAttributes['action']",
    "resource": "LogAttributes['resource']",
    "result": "LogAttributes['result']",
    "traceId": "LogAttributes['traceId']",
}


def _logql_string(value: str) -> str:
    """Escape a value for a double-quoted LogQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _sql_string(value: str) -> str:
    """Quote a value as a ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def loki_query(action: str = "auth.degraded", services: tuple[str, ...] = (), tenant: str = "") -> str:
    """LogQL that selects audit events with ``action`` ('' = any; optionally only these services / this tenant)."""
    svc = "|".join(re.escape(s) for s in services) if services else ".+"
    template = LOKI_QUERY_TEMPLATE if action else LOKI_SELECTOR_TEMPLATE
    query = template.format(namespace=SERVICE_NAMESPACE, services=_logql_string(svc), action=_logql_string(action))
    if tenant:
        query += f' | tenant="{_logql_string(tenant)}"'
    return query


def clickhouse_query(action: str = "auth.degraded", since_unix: float = 0.0, services: tuple[str, ...] = (),
                     limit: int = 1000, database: str = CLICKHOUSE_DATABASE) -> str:
    """SQL returning audit events with ``action`` since ``since_unix`` as rows named after :data:`AUDIT_FIELDS`.

    Ends in ``FORMAT JSON`` (ClickHouse HTTP interface; 64-bit numbers come back as strings).
    """
    cols = ", ".join(f"{expr} AS {field}" for field, expr in CLICKHOUSE_COLUMNS.items())
    where = [f"{CLICKHOUSE_COLUMNS['action']} = {_sql_string(action)}",
             f"Timestamp >= toDateTime64({float(since_unix):.3f}, 3)"]
    if services:
        where.append(f"ServiceName IN ({', '.join(_sql_string(s) for s in services)})")
    return (f"SELECT {cols} FROM {database or CLICKHOUSE_DATABASE}.{CLICKHOUSE_TABLE} WHERE {' AND '.join(where)} "
            f"ORDER BY Timestamp LIMIT {int(limit)} FORMAT JSON")
