"""The audit probe's readers and its judging, without Loki or ClickHouse.

Contract tests (no Loki/ClickHouse binary is installable here): a local HTTP server answers with the response shapes
the projects document — Loki ``GET /loki/api/v1/query_range``
(``{"status": "success", "data": {"resultType": "streams", "result": [{"stream": {...}, "values": [[ns, line]]}]}}``,
grafana.com/docs/loki/latest/reference/loki-http-api/) and ClickHouse's HTTP interface with ``FORMAT JSON``
(``{"meta": [...], "data": [...], "rows": n, "statistics": {...}}``, 64-bit integers quoted,
clickhouse.com/docs/interfaces/formats/JSON) — and the real client code is run against it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from chaosext.audit import schema
from chaosext.audit.sources import parse_timestamp, read_clickhouse, read_loki
from chaosext.core.backends import Backend, backend
from chaosext.core.config import ExperimentConfig
from chaosext.outage import checks
from chaosext.outage.judging import judging_of
from chaosext.outage.notebook import Notebook, save_notebook
from chaosext.run.context import run_context
from chaosext.run.record import edit_run
from tests.runutil import run_dir, start_run

pytestmark = [pytest.mark.contract]


def _store(name: str, url: str) -> Backend:
    return backend(name, url, ExperimentConfig())


def _line(service: str, action: str, ts: float) -> str:
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
    return json.dumps({"timestamp": iso, "service": service, "tenant": "*", "subject": "system", "action": action,
                       "resource": "jwks:http://127.0.0.2:1/.well-known/jwks.json", "result": "degraded",
                       "traceId": "0" * 32})


def test_loki_reader_against_documented_query_range_shape(stub) -> None:
    now = time.time()

    def loki(method: str, path: str, q: dict, body: bytes) -> tuple[int, Any]:
        assert path == "/loki/api/v1/query_range"
        return 200, {"status": "success", "data": {"resultType": "streams", "stats": {}, "result": [
            {"stream": {"service_name": "policy", "service_namespace": schema.SERVICE_NAMESPACE},
             "values": [[str(int((now - 5) * 1e9)), _line("policy", "auth.degraded", now - 5)]]},
            {"stream": {"service_name": "vuln", "service_namespace": schema.SERVICE_NAMESPACE},
             "values": [[str(int((now - 4) * 1e9)), _line("vuln", "auth.degraded", now - 4),
                         {"structuredMetadata": {"action": "auth.degraded"}}]]}]}}

    s = stub(loki)
    events = read_loki(_store("loki", s.url), "auth.degraded", now - 60, now, ("policy", "vuln"))
    assert sorted(e["service"] for e in events) == ["policy", "vuln"]
    assert abs(events[0]["ts"] - (now - 5)) < 0.01
    q = s.requests[0].query
    assert q["query"] == schema.loki_query("auth.degraded", ("policy", "vuln"))
    assert int(q["start"]) == int((now - 60) * 1e9) and q["direction"] == "forward"


def test_clickhouse_reader_against_documented_format_json_shape(stub) -> None:
    now = time.time()
    ts = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now - 3)) + ".123456789"

    def clickhouse(method: str, path: str, q: dict, body: bytes) -> tuple[int, Any]:
        assert method == "POST" and body.decode().endswith("FORMAT JSON")
        return 200, {"meta": [{"name": f, "type": "String"} for f in schema.AUDIT_FIELDS],
                     "data": [{"timestamp": ts, "service": "notify", "tenant": "*", "subject": "system",
                               "action": "auth.degraded", "resource": "jwks:x", "result": "degraded",
                               "traceId": "ab" * 16}],
                     "rows": 1, "rows_before_limit_at_least": "1",
                     "statistics": {"elapsed": 0.001, "rows_read": "12", "bytes_read": "3456"}}

    s = stub(clickhouse)
    events = read_clickhouse(_store("clickhouse", s.url), "auth.degraded", now - 60, now, ("notify",))
    assert [e["service"] for e in events] == ["notify"]
    assert events[0]["ts"] == pytest.approx(int(now - 3) + 0.123456, abs=1e-5)
    sql = s.requests[0][3].decode()
    assert f"FROM {schema.CLICKHOUSE_DATABASE}.{schema.CLICKHOUSE_TABLE}" in sql and "'notify'" in sql
    # custom SQL (AUDIT_SQL) gets the window substituted
    read_clickhouse(_store("clickhouse", s.url), "auth.degraded", now - 60, now,
                    sql="SELECT * FROM logs WHERE t > {since} FORMAT JSON")
    assert s.requests[1][3].decode() == f"SELECT * FROM logs WHERE t > {now - 60} FORMAT JSON"


def test_audit_probe_judges_each_stale_service(stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After an outage in which policy and vuln served stale keys, only vuln's auth.degraded is in Loki."""
    now = time.time()
    vuln = {"stream": {"service_name": "vuln"}, "values": [[str(int(now * 1e9)), _line("vuln", "auth.degraded", now)]]}
    s = stub(lambda m, p, q, b: (200, {"status": "success", "data": {"resultType": "streams", "result": [vuln]}}))
    monkeypatch.setitem(checks.PIPELINE_WAIT_SECONDS, "loki", 0.0)
    closed = stub(lambda m, p, q, b: (503, {}))  # Prometheus down: the watch observations alone decide
    conf = start_run(tmp_path, audit_source=f"loki:{s.url}", prometheus_url=closed.url,
                     service_urls="policy=http://127.0.0.1:1,vuln=http://127.0.0.1:2,notify=http://127.0.0.1:3")
    assert judging_of(run_context(conf)) is None  # no outage recorded: nothing to judge (never a vacuous pass)
    with edit_run(run_dir(conf)) as run:
        run.begin_outage(now - 20, "ab12cd34", None)
        run.end_outage(now - 1, "", None)
    save_notebook(run_dir(conf), Notebook.from_json({"observations": [{"t": now - 10, "elapsed": 10, "services": {
        "policy": {"state": "stale"}, "vuln": {"state": "stale"}, "notify": {"state": "fresh"}}}]}))
    judging = judging_of(run_context(conf))
    assert judging is not None
    res = checks.audit_degraded_recorded(judging)
    assert res["affected"] == ["policy", "vuln"] and res["missing"] == ["policy"] and res["ok"] is False
    assert res["source"] == "loki" and res["recorded"] == ["vuln"]


def test_parse_timestamp_forms() -> None:
    assert parse_timestamp("2026-11-29T21:40:00.123Z") == pytest.approx(1795988400.123, abs=1e-3)
    assert parse_timestamp("2026-11-29 21:40:00.123456789") == pytest.approx(1795988400.123456, abs=1e-5)
    assert parse_timestamp(1795988400123456789) == pytest.approx(1795988400.123, abs=1e-3)
    # pino's default `time` (and JavaScript's Date.now()) is milliseconds; microseconds and seconds are read too
    assert parse_timestamp(1795988400123) == pytest.approx(1795988400.123, abs=1e-3)
    assert parse_timestamp("1795988400123") == pytest.approx(1795988400.123, abs=1e-3)
    assert parse_timestamp(1795988400123456) == pytest.approx(1795988400.123, abs=1e-3)
    assert parse_timestamp(1795988400.5) == pytest.approx(1795988400.5)
