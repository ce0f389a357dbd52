"""Retention artefacts, the lab's generated Prometheus config, and the audit collector <-> audit probe correspondence.

No Loki, ClickHouse or OpenTelemetry Collector binary can be installed here. The correspondence tests therefore
apply the collector config's filelog operators (json_parser, trace_parser, move, add, remove) to a line written by
the lab's real audit writer, map the result the way Loki's OTLP endpoint and the ClickHouse exporter document it
(Loki: resource attributes service.name / service.namespace become index labels with dots turned into underscores,
log attributes become structured metadata, the body is the log line; ClickHouse: table otel_logs with ServiceName,
Timestamp, TraceId and the LogAttributes map), and serve that from small fake HTTP servers in the documented response
shapes (Loki query_range "streams"; ClickHouse FORMAT JSON) to the real audit probe readers
(chaosext.audit.sources), whose queries come from chaosext.audit.schema.
"""

import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaosext.audit import schema, sources
from chaosext.core.config import load_config
from chaosext.lab import promconfig
from chaosext.lab.audit import AuditLog
from chaosext.run.context import RunContext
from tests.jsonstub import JsonStub

ROOT = Path(__file__).resolve().parents[2]
TENANT_DIR = ROOT / "ops" / "devops" / "tenant"
COLLECTOR = TENANT_DIR / "otel-collector.yaml"
LOKI_DEFAULT_INDEX_LABELS = {  # Loki docs, "Ingesting logs to Loki using OpenTelemetry Collector"
    "cloud.availability_zone", "cloud.region", "container.name", "deployment.environment", "k8s.cluster.name",
    "k8s.container.name", "k8s.cronjob.name", "k8s.daemonset.name", "k8s.deployment.name", "k8s.job.name",
    "k8s.namespace.name", "k8s.pod.name", "k8s.replicaset.name", "k8s.statefulset.name", "service.instance.id",
    "service.name", "service.namespace",
}


def _days(duration: str) -> float:
    return promconfig.parse_duration(duration) / 86400


# ---------------------------------------------------------------------------------------------------- retention
def test_loki_keeps_audit_logs_30_days_via_the_compactor() -> None:
    doc = yaml.safe_load((TENANT_DIR / "retention" / "loki.yaml").read_text())
    assert doc["compactor"]["retention_enabled"] is True, "without it retention_period is ignored"
    assert doc["compactor"]["delete_request_store"], "Loki 3 refuses retention without a delete_request_store"
    assert _days(doc["limits_config"]["retention_period"]) == 30
    assert doc["limits_config"]["allow_structured_metadata"] is True


def test_thanos_keeps_metrics_90_days_downsampled_after_30() -> None:
    doc = yaml.safe_load((TENANT_DIR / "retention" / "thanos-compact.yaml").read_text())
    assert doc["spec"]["replicas"] == 1
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    args = dict(a[2:].split("=", 1) for a in container["args"] if a.startswith("--") and "=" in a)
    assert container["args"][0] == "compact"
    assert _days(args["retention.resolution-raw"]) == 30
    assert _days(args["retention.resolution-5m"]) == 90
    assert _days(args["retention.resolution-1h"]) == 90


def test_clickhouse_audit_rows_expire_after_30_days() -> None:
    exporter = yaml.safe_load(COLLECTOR.read_text())["exporters"]["clickhouse"]
    assert _days(exporter["ttl"]) == 30


def test_lab_prometheus_config_passes_promtool_check_config(tmp_path: Path) -> None:
    """The supervisor's generator with this repository's rule files (capped copies), checked by promtool."""
    rules = promconfig.write_rule_copies(promconfig.find_rule_files(TENANT_DIR), tmp_path / "rules", 10)
    assert {p.name for p in rules} == {"alerts.yaml", "recording-rules.yaml"}
    for path in rules:  # the lab override: every for: capped at 10 s, production values untouched in the source
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                assert promconfig.parse_duration(rule.get("for", "0s")) <= 10
    config = promconfig.prometheus_config({"policy": "127.0.0.1:1"}, rules, "127.0.0.1:2")
    path = promconfig.write_yaml(tmp_path / "prometheus.yml", config, "test")
    proc = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------- the collector's pipeline
def _field(path: str) -> tuple[str, str]:
    """'attributes.x' / 'resource["a.b"]' / 'body' -> (section, key)."""
    m = re.fullmatch(r'(attributes|resource)(?:\.([\w.]+)|\["([^"]+)"\])', path)
    if not m:
        assert path == "body", path
        return "body", ""
    return m.group(1), m.group(2) or m.group(3)


def apply_filelog_operators(line: str, operators: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The subset of stanza operators the collector config uses, applied to one log line (None: dropped).

    on_error as stanza documents it: ``drop``/``drop_quiet`` drop the entry (``_quiet``: logged at debug level, not
    as an error), ``send``/``send_quiet`` pass it on unparsed."""
    rec: dict[str, Any] = {"body": line, "attributes": {}, "resource": {}, "timestamp": None, "trace_id": ""}
    for op in operators:
        kind = op["type"]
        if kind == "json_parser":
            assert op.get("parse_from", "body") == "body" and op.get("parse_to", "attributes") == "attributes"
            try:
                parsed = json.loads(rec["body"])
            except ValueError:
                if op.get("on_error", "send").startswith("drop"):
                    return None
                raise AssertionError(f"the json_parser passes a non-JSON line on ({op.get('on_error')}): {line!r}") \
                    from None
            rec["attributes"].update(parsed)
            ts = op.get("timestamp")
            if ts:
                _, key = _field(ts["parse_from"])
                assert ts["layout_type"] == "gotime" and ts["layout"] == "2006-01-02T15:04:05.999Z07:00"
                rec["timestamp"] = datetime.strptime(rec["attributes"][key], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                    tzinfo=UTC).timestamp()
        elif kind == "trace_parser":
            _, key = _field(op["trace_id"]["parse_from"])
            rec["trace_id"] = rec["attributes"][key]
        elif kind == "move":
            src, skey = _field(op["from"])
            dst, dkey = _field(op["to"])
            rec[dst][dkey] = rec[src].pop(skey)
        elif kind == "add":
            dst, dkey = _field(op["field"])
            rec[dst][dkey] = op["value"]
        elif kind == "remove":
            src, skey = _field(op["field"])
            del rec[src][skey]
        else:
            raise AssertionError(f"operator {kind} not modelled by this test: extend it")
    return rec


def _collector() -> dict[str, Any]:
    return yaml.safe_load(COLLECTOR.read_text())


def _audit_lines(tmp_path: Path) -> list[str]:
    """Lines from the lab's real audit writer."""
    path = tmp_path / "audit.jsonl"
    for svc in ("policy", "vuln"):
        log = AuditLog(str(path), svc)
        log.system("auth.degraded", "degraded", "jwks:http://127.0.0.2:8440/.well-known/jwks.json")
        log.request("auth.rejected", "t01", "user-1", "GET /api/v1/policies", "no_keys",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        log.close()
    return path.read_text().splitlines()


def _written(tmp_path: Path) -> list[dict[str, Any]]:
    receiver = _collector()["receivers"]["filelog/audit"]
    return [apply_filelog_operators(line, receiver["operators"]) for line in _audit_lines(tmp_path)]


def test_collector_pipeline_wires_the_audit_receiver_to_loki_and_clickhouse() -> None:
    doc = _collector()
    pipeline = doc["service"]["pipelines"]["logs/audit"]
    assert pipeline["receivers"] == ["filelog/audit"]
    assert set(pipeline["exporters"]) == {"otlp_http/loki", "clickhouse"}  # not the deprecated otlphttp alias
    assert doc["exporters"]["otlp_http/loki"]["endpoint"].rstrip("}").endswith("/otlp")
    assert doc["exporters"]["clickhouse"]["database"] == schema.CLICKHOUSE_DATABASE
    assert doc["exporters"]["clickhouse"]["logs_table_name"] == schema.CLICKHOUSE_TABLE
    assert "audit.jsonl" in doc["receivers"]["filelog/audit"]["include"][0]
    for name in pipeline["processors"] + ["memory_limiter"]:
        assert name in doc["processors"]


def test_collector_reads_lines_present_at_first_start_and_resumes_from_saved_offsets() -> None:
    """start_at: end would lose every audit event written before the collector's first start; start_at: beginning
    without stored offsets would re-send the whole file after each restart. Both together: nothing lost, nothing
    twice."""
    doc = _collector()
    receiver = doc["receivers"]["filelog/audit"]
    assert receiver["start_at"] == "beginning"
    assert receiver["storage"] in doc["extensions"] and receiver["storage"].startswith("file_storage")
    assert receiver["storage"] in doc["service"]["extensions"]


def test_collector_health_check_listens_where_a_kubelet_probe_reaches_it() -> None:
    """The kubelet probes the pod IP: a health_check on 127.0.0.1/localhost would fail every probe."""
    doc = _collector()
    endpoint = doc["extensions"]["health_check"]["endpoint"]
    host = re.sub(r"\$\{env:[A-Z_]+:-([^}]*)\}", r"\1", endpoint).rsplit(":", 1)[0]
    assert host not in {"127.0.0.1", "localhost", "::1", "[::1]"}, endpoint
    assert "MY_POD_IP" in endpoint or host == "0.0.0.0", endpoint
    assert "health_check" in doc["service"]["extensions"]


def test_collector_drops_non_json_lines_quietly_and_keeps_the_good_ones(tmp_path: Path) -> None:
    operators = _collector()["receivers"]["filelog/audit"]["operators"]
    parser = next(op for op in operators if op["type"] == "json_parser")
    assert parser["on_error"] == "drop_quiet"  # dropped, logged at debug level: no error line per bad line
    good = _audit_lines(tmp_path)
    out = [apply_filelog_operators(line, operators)
           for line in [good[0], "panic: stray debug print", '{"trunc', good[1]]]
    assert out[1] is None and out[2] is None
    assert out[0] is not None and out[3] is not None and out[0]["attributes"]["action"] == "auth.degraded"


def test_collector_writes_the_fields_the_schema_promises(tmp_path: Path) -> None:
    for rec in _written(tmp_path):
        original = json.loads(rec["body"])
        assert list(original) == list(schema.AUDIT_FIELDS), "the lab writes exactly AUDIT_FIELDS"
        assert set(rec["attributes"]) == set(schema.LOG_ATTRIBUTES)
        for field, attr in schema.RESOURCE_ATTRIBUTES.items():
            assert rec["resource"][attr] == original[field]
        assert rec["resource"]["service.namespace"] == schema.SERVICE_NAMESPACE
        assert rec["trace_id"] == original["traceId"] and re.fullmatch(r"[0-9a-f]{32}", rec["trace_id"])
        assert abs(rec["timestamp"] - sources.parse_timestamp(original["timestamp"])) < 1e-3
        loki_labels = {k.replace(".", "_") for k in rec["resource"] if k in LOKI_DEFAULT_INDEX_LABELS}
        assert loki_labels == set(schema.LOKI_STREAM_LABELS)
        for field, expr in schema.CLICKHOUSE_COLUMNS.items():
            assert _clickhouse_value(_clickhouse_row(rec), expr) == (
                _clickhouse_time(rec["timestamp"]) if field == "timestamp" else original[field])


# ------------------------------------------------------------------------- the probe's queries against them
def _loki_entry(rec: dict[str, Any]) -> tuple[dict[str, str], dict[str, str], str, int]:
    """(index labels, structured metadata, line, ns) as Loki's OTLP endpoint stores the record."""
    labels = {k.replace(".", "_"): v for k, v in rec["resource"].items() if k in LOKI_DEFAULT_INDEX_LABELS}
    meta = {k.replace(".", "_"): str(v) for k, v in rec["attributes"].items()}
    meta["trace_id"] = rec["trace_id"]
    return labels, meta, rec["body"], int(rec["timestamp"] * 1e9)


def logql_matches(query: str, labels: dict[str, str], meta: dict[str, str]) -> bool:
    """Evaluate `{l="v", l=~"re"} | k="v" ...` (the forms schema.loki_query produces) against one entry."""
    m = re.fullmatch(r"\{(.*?)\}((?:\s*\|\s*\w+\s*=\s*\"(?:[^\"\\]|\\.)*\")*)\s*", query)
    assert m, f"LogQL outside the modelled subset: {query}"
    for key, op, value in re.findall(r'(\w+)\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"', m.group(1)):
        value = value.encode().decode("unicode_escape")
        have = labels.get(key)
        if have is None or (op == "=" and have != value) or (op == "=~" and not re.fullmatch(value, have)):
            return False
    for key, value in re.findall(r'\|\s*(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"', m.group(2)):
        if {**labels, **meta}.get(key) != value.encode().decode("unicode_escape"):
            return False
    return True


def _clickhouse_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f") + "000"


def _clickhouse_row(rec: dict[str, Any]) -> dict[str, Any]:
    """The otel_logs row the ClickHouse exporter inserts for the record."""
    return {"Timestamp": _clickhouse_time(rec["timestamp"]), "TraceId": rec["trace_id"],
            "ServiceName": rec["resource"].get("service.name", ""), "Body": rec["body"],
            "ResourceAttributes": rec["resource"], "LogAttributes": rec["attributes"]}


def _clickhouse_value(row: dict[str, Any], expr: str) -> Any:
    m = re.fullmatch(r"(\w+)(?:\['([^']+)'\])?", expr.strip())
    assert m and m.group(1) in row, f"{expr} is not an otel_logs column"
    return row[m.group(1)].get(m.group(2), "") if m.group(2) else row[m.group(1)]


def _reading(tmp_path: Path, audit_source: str) -> RunContext:
    """A run's context reading the audit store at ``audit_source`` (no lab, no credentials)."""
    return RunContext(load_config({"audit_source": audit_source, "chaosext_lab_dir": str(tmp_path / "no-lab")}))


@pytest.mark.contract
def test_audit_probe_reads_back_what_the_collector_wrote_to_loki(tmp_path: Path) -> None:
    entries = [_loki_entry(r) for r in _written(tmp_path)]
    queries: list[str] = []

    def loki(method: str, path: str, params: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        assert method == "GET" and path == "/loki/api/v1/query_range"
        query = params["query"]
        queries.append(query)
        result = [{"stream": {**labels, **meta}, "values": [[str(ns), line]]}  # metadata merged into labels
                  for labels, meta, line, ns in entries if logql_matches(query, labels, meta)]
        return 200, {"status": "success", "data": {"resultType": "streams", "result": result, "stats": {}}}

    with JsonStub(loki) as stub:
        ctx = _reading(tmp_path, f"loki:{stub.url}")  # AUDIT_SOURCE as the probes read it
        events = sources.read_events(ctx, "degraded", 0, 4e9, services=("policy",))  # the lab's auth.degraded
        everything = sources.read_events(ctx, "degraded", 0, 4e9)
        none = sources.read_events(ctx, "recovered", 0, 4e9)
    assert [(e["service"], e["tenant"], e["action"]) for e in events] == [("policy", "*", "auth.degraded")]
    assert sorted(e["service"] for e in everything) == ["policy", "vuln"]
    assert none == []
    assert all(q.startswith("{") for q in queries)


@pytest.mark.contract
def test_audit_probe_reads_back_what_the_collector_wrote_to_clickhouse(tmp_path: Path) -> None:
    rows = [_clickhouse_row(r) for r in _written(tmp_path)]

    def clickhouse(method: str, path: str, params: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        sql = body.decode()
        m = re.fullmatch(r"SELECT (.+) FROM (\w+)\.(\w+) WHERE (.+) ORDER BY Timestamp LIMIT \d+ FORMAT JSON", sql)
        assert m, sql
        assert (m.group(2), m.group(3)) == (schema.CLICKHOUSE_DATABASE, schema.CLICKHOUSE_TABLE)
        columns = [c.rsplit(" AS ", 1) for c in m.group(1).split(", ")]
        action = re.search(r"LogAttributes\['action'\] = '([^']*)'", m.group(4)).group(1)
        services = re.search(r"ServiceName IN \(([^)]*)\)", m.group(4))
        wanted = set(re.findall(r"'([^']*)'", services.group(1))) if services else None
        data = [{alias: _clickhouse_value(row, expr) for expr, alias in columns} for row in rows
                if row["LogAttributes"]["action"] == action and (wanted is None or row["ServiceName"] in wanted)]
        return 200, {"meta": [{"name": alias, "type": "String"} for _, alias in columns], "data": data,
                     "rows": len(data), "statistics": {"elapsed": 0.001, "rows_read": len(rows), "bytes_read": 1}}

    with JsonStub(clickhouse) as stub:
        ctx = _reading(tmp_path, f"clickhouse:{stub.url}")  # AUDIT_SOURCE as the probes read it
        events = sources.read_events(ctx, "degraded", 0, 4e9, services=("vuln",))
        rejected = sources.read_events(ctx, "rejected", 0, 4e9)
    assert [(e["service"], e["tenant"], e["subject"]) for e in events] == [("vuln", "*", "system")]
    assert sorted((e["service"], e["tenant"], e["result"]) for e in rejected) == [
        ("policy", "t01", "no_keys"), ("vuln", "t01", "no_keys")]
    assert all(re.fullmatch(r"[0-9a-f]{32}", e["traceId"]) for e in events + rejected)
