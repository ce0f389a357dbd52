"""Fast tests of the experiment's parts without a lab: verdict on real journals, config, audit readers, Prometheus math.

The Loki and ClickHouse tests are contract tests (no Loki/ClickHouse binary is installable here): a local HTTP
server answers with the response shapes the projects document — Loki ``GET /loki/api/v1/query_range``
(``{"status": "success", "data": {"resultType": "streams", "result": [{"stream": {...}, "values": [[ns, line]]}]}}``,
grafana.com/docs/loki/latest/reference/loki-http-api/) and ClickHouse's HTTP interface with ``FORMAT JSON``
(``{"meta": [...], "data": [...], "rows": n, "statistics": {...}}``, 64-bit integers quoted,
clickhouse.com/docs/interfaces/formats/JSON) — and the real client code is run against it.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaosext.audit import probes as audit_probes
from chaosext.audit import schema
from chaosext.audit.sources import parse_timestamp, read_clickhouse, read_loki
from chaosext.core.config import load_config, validate
from chaosext.core.runfile import new_run, update_run
from chaosext.metrics import prom
from chaosext.safety.controls import approval_problem
from tests.jsonstub import JsonStub

pytestmark = [pytest.mark.contract]


# ---------------------------------------------------------------------------------------------------- HTTP stub
@pytest.fixture
def stub() -> Iterator[Callable[..., JsonStub]]:
    """``stub(handler) -> JsonStub``; all stopped after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda handler: stack.enter_context(JsonStub(handler))


# ---------------------------------------------------------------------------------------------------- verdict
def _chaos(tmp: Path, experiment: dict) -> tuple[int, Path]:
    path = tmp / "exp.json"
    path.write_text(json.dumps(experiment))
    journal = tmp / "journal.json"
    p = subprocess.run(["chaos", "--no-log-file", "run", "--journal-path", str(journal), str(path)], cwd=tmp,
                       capture_output=True, text=True, timeout=120, check=False)
    return p.returncode, journal


def _exists_probe(name: str, path: str) -> dict:
    return {"type": "probe", "name": name, "tolerance": True,
            "provider": {"type": "python", "module": "os.path", "func": "exists", "arguments": {"path": path}}}


def _verdict(journal: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chaosext.cli", "verdict", str(journal), *extra],
                          capture_output=True, text=True, timeout=60, check=False)


def test_verdict_fails_when_before_hypothesis_fails_although_chaos_exits_0(tmp_path: Path) -> None:
    """A real Chaos Toolkit run whose steady state does not hold before the method: chaos exits 0, the verdict says
    "not run: baseline unhealthy" (exit 3), distinct from a failed experiment."""
    rc, journal = _chaos(tmp_path, {
        "title": "before fails", "description": "d",
        "steady-state-hypothesis": {"title": "h", "probes": [_exists_probe("marker-exists", str(tmp_path / "no"))]},
        "method": [_exists_probe("noop", "/")]})
    assert rc == 0  # Chaos Toolkit's own exit code says nothing is wrong
    v = _verdict(journal)
    assert v.returncode == 3
    assert "VERDICT: NOT RUN" in v.stdout and "baseline unhealthy" in v.stdout and "marker-exists" in v.stdout


def test_verdict_fails_on_a_failed_method_action_and_passes_a_clean_run(tmp_path: Path) -> None:
    ok_probe = _exists_probe("root-exists", "/")
    failing = {"type": "action", "name": "remove-missing-file",
               "provider": {"type": "python", "module": "os", "func": "remove",
                            "arguments": {"path": str(tmp_path / "missing")}}}
    (tmp_path / "a").mkdir()
    rc, journal = _chaos(tmp_path / "a", {"title": "action fails", "description": "d",
                                          "steady-state-hypothesis": {"title": "h", "probes": [ok_probe]},
                                          "method": [failing]})
    assert rc == 0
    v = _verdict(journal)
    assert v.returncode == 1 and "'remove-missing-file' failed" in v.stdout

    # a clean run that never applied the JWKS fault (e.g. the method removed) is not a pass
    (tmp_path / "b").mkdir()
    rc, journal = _chaos(tmp_path / "b", {"title": "clean", "description": "d",
                                          "steady-state-hypothesis": {"title": "h", "probes": [ok_probe]},
                                          "method": [_exists_probe("noop", "/")]})
    v = _verdict(journal, "--json")
    assert rc == 0 and v.returncode == 1
    assert json.loads(v.stdout)["verdict"] == "FAIL" and "the fault was never applied" in v.stdout


def test_verdict_of_a_dry_run_is_never_a_pass(tmp_path: Path) -> None:
    """`chaos run --dry actions` skips every action: its journal is judged "dry run" (exit 4), never PASS."""
    path = tmp_path / "exp.json"
    path.write_text(json.dumps({"title": "dry", "description": "d",
                                "steady-state-hypothesis": {"title": "h", "probes": [_exists_probe("root", "/")]},
                                "method": [{"type": "action", "name": "block-jwks-egress",
                                            "provider": {"type": "python", "module": "os.path", "func": "exists",
                                                         "arguments": {"path": "/"}}}]}))
    journal = tmp_path / "journal.json"
    subprocess.run(["chaos", "--no-log-file", "run", "--dry", "actions", "--journal-path", str(journal), str(path)],
                   cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    v = _verdict(journal)
    assert v.returncode == 4 and "VERDICT: DRY RUN" in v.stdout


def test_verdict_rejects_a_file_that_is_not_a_journal(tmp_path: Path) -> None:
    bad = tmp_path / "journal.json"
    bad.write_text("[]")
    v = _verdict(bad)
    assert v.returncode == 2 and "not a Chaos Toolkit journal" in v.stderr


# ---------------------------------------------------------------------------------------------------- config
def test_config_defaults_come_from_the_running_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "state.json").write_text(json.dumps({
        "version": 1, "config": {"jwks_ttl": 7, "jwks_max_stale": 70},
        "components": {"policy": {"pid": 1, "url": "http://127.0.0.1:1111"},
                       "prometheus": {"pid": 2, "url": "http://127.0.0.1:2"}},
        "jwks_url": "http://127.0.0.2:3333/.well-known/jwks.json", "authority_url": "http://127.0.0.2:3333",
        "audit_file": str(lab / "audit.jsonl"), "prometheus_url": "http://127.0.0.1:4444",
        "alertmanager_url": "http://127.0.0.1:5555"}))
    monkeypatch.delenv("CHAOSEXT_RUN_DIR", raising=False)
    cfg = load_config({"chaosext_lab_dir": str(lab), "outage_seconds": "20", "tenants": "t01..t03"})
    assert cfg.services == {"policy": "http://127.0.0.1:1111"}
    assert cfg.jwks_url.startswith("http://127.0.0.2:3333") and cfg.prometheus_url.endswith(":4444")
    assert (cfg.jwks_ttl, cfg.jwks_max_stale, cfg.outage_seconds) == (7.0, 70.0, 20)
    assert cfg.tenants == ("t01", "t02", "t03")
    assert cfg.audit_source == f"file:{lab / 'audit.jsonl'}" and cfg.run_dir == str(lab / "run")
    assert cfg.is_lab_target and not validate(cfg) and not approval_problem(cfg)
    (lab / "state.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt"):
        load_config({"chaosext_lab_dir": str(lab)})


def test_config_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="SERVICE_URLS entry 'policy' is not name=url"):
        load_config({"service_urls": "policy", "chaosext_lab_dir": "/nonexistent"})
    with pytest.raises(ValueError, match="K6_RATE='lots' is not a number"):
        load_config({"k6_rate": "lots", "chaosext_lab_dir": "/nonexistent"})
    cfg = load_config({"chaosext_lab_dir": "/nonexistent", "error_rate_max": "5", "fault_mode": "melt",
                       "audit_source": "s3:bucket", "jwks_ttl": "100", "jwks_max_stale": "10"})
    text = " | ".join(validate(cfg))
    for expected in ("ERROR_RATE_MAX=5.0 must be a fraction", "FAULT_MODE='melt' is unknown",
                     "AUDIT_SOURCE='s3:bucket' must be", "JWKS_MAX_STALE=10.0 is below JWKS_TTL=100.0"):
        assert expected in text


def test_non_lab_target_needs_approval_naming_it() -> None:
    base = {"chaosext_lab_dir": "/nonexistent", "jwks_url": "https://idp.example.com/.well-known/jwks.json"}
    assert "CHAOSEXT_APPROVE=idp.example.com" in approval_problem(load_config(base))
    assert approval_problem(load_config({**base, "chaosext_approve": "idp.example.com"})) == ""
    k8s = {**base, "fault_via": "k8s-networkpolicy", "fault_target": "prod/app=policy"}
    assert "CHAOSEXT_APPROVE=prod/app=policy" in approval_problem(load_config({**k8s, "chaosext_approve": "other"}))


# ---------------------------------------------------------------------------------------------------- audit
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
    events = read_loki(s.url, "auth.degraded", now - 60, now, ("policy", "vuln"))
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
    events = read_clickhouse(s.url, "auth.degraded", now - 60, now, ("notify",))
    assert [e["service"] for e in events] == ["notify"]
    assert events[0]["ts"] == pytest.approx(int(now - 3) + 0.123456, abs=1e-5)
    sql = s.requests[0][3].decode()
    assert f"FROM {schema.CLICKHOUSE_DATABASE}.{schema.CLICKHOUSE_TABLE}" in sql and "'notify'" in sql
    # custom SQL (AUDIT_SQL) gets the window substituted
    read_clickhouse(s.url, "auth.degraded", now - 60, now, sql="SELECT * FROM logs WHERE t > {since} FORMAT JSON")
    assert s.requests[1][3].decode() == f"SELECT * FROM logs WHERE t > {now - 60} FORMAT JSON"


def test_audit_probe_judges_each_stale_service(stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After an outage in which policy and vuln served stale keys, only vuln's auth.degraded is in Loki."""
    now = time.time()
    s = stub(lambda m, p, q, b: (200, {"status": "success", "data": {"resultType": "streams", "result": [
        {"stream": {"service_name": "vuln"}, "values": [[str(int(now * 1e9)), _line("vuln", "auth.degraded", now)]]}]}}))
    monkeypatch.setitem(audit_probes.PIPELINE_WAIT_SECONDS, "loki", 0.0)
    closed = stub(lambda m, p, q, b: (503, {}))  # Prometheus down: the watch observations alone decide
    conf = {"chaosext_lab_dir": "/nonexistent", "chaosext_run_dir": str(tmp_path / "run"),
            "audit_source": f"loki:{s.url}", "prometheus_url": closed.url,
            "service_urls": "policy=http://127.0.0.1:1,vuln=http://127.0.0.1:2,notify=http://127.0.0.1:3"}
    conf["chaosext_run_id"] = new_run(conf["chaosext_run_dir"])["run_id"]
    run_dir = str(Path(conf["chaosext_run_dir"]) / conf["chaosext_run_id"])
    before = audit_probes.audit_degraded_recorded(conf)  # an outage check never passes vacuously
    assert before["phase"] == "no-outage" and before["ok"] is False
    update_run(run_dir, outage={"start": now - 20, "end": now - 1},
               observations=[{"t": now - 10, "elapsed": 10, "services": {
                   "policy": {"state": "stale"}, "vuln": {"state": "stale"}, "notify": {"state": "fresh"}}}])
    res = audit_probes.audit_degraded_recorded(conf)
    assert res["affected"] == ["policy", "vuln"] and res["missing"] == ["policy"] and res["ok"] is False


def test_parse_timestamp_forms() -> None:
    assert parse_timestamp("2026-11-29T21:40:00.123Z") == pytest.approx(1795988400.123, abs=1e-3)
    assert parse_timestamp("2026-11-29 21:40:00.123456789") == pytest.approx(1795988400.123456, abs=1e-5)
    assert parse_timestamp(1795988400123456789) == pytest.approx(1795988400.123, abs=1e-3)


# ---------------------------------------------------------------------------------------------------- Prometheus
def test_error_rate_counts_series_that_appear_during_the_window(stub) -> None:
    """Counters at the end minus at the start; the 401 series born in the outage counts from 0 (increase() would
    miss its first value). Response shape: Prometheus GET /api/v1/query (instant vector)."""
    start, end = 1000.0, 1060.0

    def promapi(method: str, path: str, q: dict, body: bytes) -> tuple[int, Any]:
        t = float(q["time"])
        errors = q["query"].startswith(f"sum({prom.ERROR_SELECTOR}")
        value = (0 if t == start else 30) if errors else (1000 if t == start else 2000)
        result = [] if errors and t == start else [{"metric": {}, "value": [t, str(value)]}]
        assert 'tenant!~"chaosext-probe|__unauthenticated__"' in q["query"]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    s = stub(promapi)
    res = prom.error_rate_between(s.url, start, end)
    assert res == {"errors": 30.0, "requests": 1000.0, "error_rate": 0.03}


# ---------------------------------------------------------------------------------------------------- discovery
def test_chaos_discover_lists_the_experiment_probes_with_types(tmp_path: Path) -> None:
    out = tmp_path / "discovery.json"
    p = subprocess.run(["chaos", "--no-log-file", "discover", "--no-system-info", "--discovery-path", str(out),
                        "chaosext"], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    acts = {(a["mod"], a["name"]): a for a in json.loads(out.read_text())["activities"]}
    for mod, name in [("chaosext.auth.probes", "cached_key_fallback"), ("chaosext.auth.probes", "no_fail_open"),
                      ("chaosext.metrics.probes", "server_error_rate"), ("chaosext.metrics.probes", "watch_outage"),
                      ("chaosext.metrics.probes", "alerts_match_cache_state"),
                      ("chaosext.metrics.probes", "judge_outage"),
                      ("chaosext.audit.probes", "audit_degraded_recorded"),
                      ("chaosext.auth.drill", "fails_closed_after_expiry"), ("chaosext.auth.drill", "judge_drill")]:
        act = acts[(mod, name)]
        assert act["doc"] and act["type"] == "probe"
        assert all(arg.get("type") != "object" for arg in act.get("arguments", [])), act["arguments"]
    assert {"name": "duration_seconds", "default": 0, "type": "integer"} in acts[
        ("chaosext.metrics.probes", "watch_outage")]["arguments"]


def test_a_list_of_targets_is_approved_only_when_every_target_is() -> None:
    """FAULT_TARGET=netns:a,b is two targets: approving one of them is not enough."""
    base = {"chaosext_lab_dir": "/nonexistent", "fault_target": "netns:a,b"}
    assert "CHAOSEXT_APPROVE=netns:a,b" in approval_problem(load_config({**base, "chaosext_approve": "netns:a"}))
    assert approval_problem(load_config({**base, "chaosext_approve": "netns:a,netns:b"})) == ""
    assert approval_problem(load_config({**base, "chaosext_approve": "netns:a,b"})) == ""
