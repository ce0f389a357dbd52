"""The Tenancy dashboard: a valid Grafana dashboard whose every query is valid PromQL returning data from the lab."""

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.traffic import Pump, call, service_urls, token

ROOT = Path(__file__).resolve().parents[2]
TENANT_DIR = ROOT / "ops" / "devops" / "tenant"
DASHBOARD = TENANT_DIR / "dashboards" / "tenant-audit.json"
PROVISIONING = TENANT_DIR / "dashboards" / "provisioning.yaml"
DS = {"type": "prometheus", "uid": "${datasource}"}
# What the plan asks the dashboard to show, and a metric that proves a panel shows it.
REQUIRED = {
    "p95 read latency": r'p95_5m\{kind="read"',
    "p95 write latency": r'p95_5m\{kind="write"',
    "error rate": r"tenant_requests_errors:ratio_rate5m",
    "rate-limit hits": r"tenant_rate_limit_hits",
    "JWKS cache hit rate": r"jwks_cache_lookups_hit:ratio_rate5m",
    "JWKS cache state": r"jwks_cache_state",
    "a tenant's own auth failures": r"tenant_auth_failures:rate5m",
    "unauthenticated traffic": r"tenant_requests_unauthenticated:rate5m",
    "token validation failures by reason": r"jwt_validations_total\{result=\"invalid\"",
    "request rate": r"tenant_service:tenant_requests:rate5m",
    "queue depth": r"tenant_queue_depth",
    "data volume": r"tenant_data_volume_bytes",
}
CONTRACT_METRICS = {
    "tenant_requests_total", "tenant_rate_limit_hits_total", "tenant_data_volume_bytes_total", "tenant_queue_depth",
    "tenant_request_duration_seconds_bucket", "tenant_label_overflow_total", "jwks_fetch_total", "jwks_cache_state",
    "jwks_cache_age_seconds", "jwks_cache_lookups_total", "jwt_validations_total", "tenant_auth_failures_total",
    "ALERTS",
}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p["targets"]]


def _recorded_names() -> set[str]:
    doc = yaml.safe_load((TENANT_DIR / "recording-rules.yaml").read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"]}


def substitute(expr: str) -> str:
    """What Grafana sends for 'All' tenants/services (regex alternation) with a 1m rate interval."""
    return (expr.replace("$__rate_interval", "1m").replace("$tenant", "t01|t02")
            .replace("$service", "policy|vuln|notify"))


def test_dashboard_is_a_valid_grafana_dashboard() -> None:
    dash = _dashboard()
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dash["uid"])
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("tenant", "service"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == DS
        assert variables[name]["multi"] and variables[name]["includeAll"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels():
        assert panel["datasource"] == DS, f"panel {panel['title']!r} must use the $datasource variable"
        assert panel["targets"], f"panel {panel['title']!r} has no queries"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
            assert target.get("datasource", DS) == DS, panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


#: Keys Grafana reads that the SDK's typed model does not carry (legacy Prometheus annotation fields, the variables'
#: display text of their query): the only ones a typed round trip may drop.
SDK_UNMODELLED = {".annotations.list[0].titleFormat", ".annotations.list[0].textFormat", ".annotations.list[0].step",
                  ".templating.list[1].definition", ".templating.list[2].definition"}


def _dropped_or_changed(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths in a (the JSON we ship) that b (its typed round trip) lost or changed."""
    if isinstance(a, dict):
        if not isinstance(b, dict):
            return [f"{path}: became {type(b).__name__}"]
        return [d for k, v in a.items() for d in (
            [f"{path}.{k}"] if k not in b else _dropped_or_changed(v, b[k], f"{path}.{k}"))]
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return [f"{path}: list changed"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _dropped_or_changed(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]


def test_dashboard_loads_as_a_typed_grafana_dashboard() -> None:
    """grafana-foundation-sdk (Grafana's own generated types) loads the JSON as a typed Dashboard: every panel with
    the typed options of its plugin, every query a typed Prometheus query, and the round trip back to JSON keeps every
    field we wrote (a misspelled or misplaced key would be dropped) except the few Grafana fields the SDK does not
    model."""
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.models import prometheus, statetimeline, timeseries
    from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel

    plugins.register_default_plugins()
    raw = _dashboard()
    shipped = {k: v for k, v in raw.items() if not k.startswith("__")}  # __inputs/__requires: import-only fields
    dash = Dashboard.from_json(shipped)
    assert dash.uid == raw["uid"] and dash.title == raw["title"]
    option_types = {"timeseries": timeseries.Options, "state-timeline": statetimeline.Options}
    for typed, panel in zip(dash.panels, raw["panels"], strict=True):
        if panel["type"] == "row":
            assert isinstance(typed, RowPanel), panel["title"]
            continue
        assert isinstance(typed, Panel) and typed.type_val == panel["type"], panel["title"]
        assert isinstance(typed.options, option_types[panel["type"]]), (panel["title"], type(typed.options))
        assert [type(t) for t in typed.targets] == [prometheus.Dataquery] * len(panel["targets"]), panel["title"]
        assert [t.expr for t in typed.targets] == [t["expr"] for t in panel["targets"]]
    assert [v.name for v in dash.templating.list_val] == ["datasource", "service", "tenant"]
    round_trip = json.loads(json.dumps(dash.to_json(), default=lambda o: o.to_json()))
    lost = set(_dropped_or_changed(shipped, round_trip))
    assert lost <= SDK_UNMODELLED, sorted(lost - SDK_UNMODELLED)


def test_import_dialog_asks_for_the_prometheus_data_source() -> None:
    """`__inputs` makes Grafana's import dialog ask for a Prometheus data source; every `${DS_...}` in the JSON is a
    declared input, and `__requires` names every panel plugin the dashboard uses."""
    raw = _dashboard()
    (ds,) = raw["__inputs"]
    assert (ds["type"], ds["pluginId"]) == ("datasource", "prometheus") and ds["name"] == "DS_PROMETHEUS"
    used = set(re.findall(r"\$\{(DS_[A-Z_]+)\}", json.dumps(raw)))
    assert used == {"DS_PROMETHEUS"}
    variable = next(v for v in raw["templating"]["list"] if v["name"] == "datasource")
    assert variable["current"]["value"] == "${DS_PROMETHEUS}"  # import binds the variable to the chosen source
    required = {(r["type"], r["id"]) for r in raw["__requires"]}
    assert {("datasource", "prometheus"), ("grafana", "grafana")} <= required
    assert {("panel", p["type"]) for p in _panels()} <= required


def test_cache_state_timeline_shows_the_worst_replica_not_a_sum() -> None:
    """Two stale replicas must read "stale" (1), not 2 = "expired": the state panel takes max by (service)."""
    (panel,) = [p for p in _panels() if p["type"] == "state-timeline"]
    (expr,) = [t["expr"] for t in panel["targets"]]
    assert expr.startswith("max by (service) (") and "sum" not in expr, expr


def test_dashboard_shows_everything_the_plan_asks_for() -> None:
    exprs = "\n".join(_exprs())
    missing = [what for what, pattern in REQUIRED.items() if not re.search(pattern, exprs)]
    assert not missing, f"no panel for: {missing}"
    per_tenant = [e for e in _exprs() if "tenant" in e and "tenant_label_overflow" not in e]
    assert all('tenant=~"$tenant"' in e for e in per_tenant if "tenant_service" in e)
    assert all('service=~"$service"' in e for e in _exprs())


def test_dashboard_uses_only_existing_recording_rules_and_contract_metrics() -> None:
    recorded = _recorded_names()
    for expr in _exprs():
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?=\{)", expr):
            if ":" in name:
                assert name in recorded, f"{name} is not a recording rule in recording-rules.yaml"
            else:
                assert name in CONTRACT_METRICS, f"{name} is not a metric of docs/architecture.md"


def test_provisioning_puts_the_dashboard_in_the_tenancy_folder() -> None:
    doc = yaml.safe_load(PROVISIONING.read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["folder"] == "StellaOps / Tenancy"
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", provider["folderUid"])
    assert provider["type"] == "file" and provider["options"]["path"]


def _query(prom: str, expr: str) -> dict[str, Any]:
    resp = requests.get(prom + "/api/v1/query", params={"query": expr}, timeout=5)
    return resp.json()


@pytest.mark.e2e
@pytest.mark.lab
def test_every_panel_query_returns_data_from_the_lab(lab: dict[str, Any]) -> None:
    prom = lab["prometheus_url"]
    urls = service_urls(lab)
    paths = {"policy": "/api/v1/policies", "vuln": "/api/v1/findings", "notify": "/api/v1/notifications"}
    tokens = {t: token(lab, t) for t in ("t01", "t02")}
    exprs = [substitute(e) for e in _exprs()]
    pumps = [Pump(urls[s], paths[s], t, tokens[t], rps=4, write_every=3) for s in urls for t in tokens]
    with requests.Session() as session:
        wrong_aud = token(lab, "t01", audience="someone-else")
        for svc in urls:  # rejected tokens per service: the auth-failure panel's reason breakdown, the tenant's own
            assert call(session, urls[svc], paths[svc], "t01", "not-a-jwt") == 401
            assert call(session, urls[svc], paths[svc], "t01", wrong_aud) == 401
            assert call(session, urls[svc], paths[svc], "nobody", "not-a-jwt") == 401  # tenant="__unauthenticated__"
    empty: list[str] = []
    for pump in pumps:
        pump.__enter__()
    try:
        deadline = time.monotonic() + 45
        while True:
            empty = []
            for expr in exprs:
                body = _query(prom, expr)
                assert body["status"] == "success", f"invalid PromQL {expr!r}: {body.get('error')}"
                if not body["data"]["result"]:
                    empty.append(expr)
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(2)
    finally:
        for pump in pumps:
            pump.__exit__(None, None, None)
    assert all(p.statuses.get(200, 0) + p.statuses.get(201, 0) > 0 for p in pumps), [p.statuses for p in pumps]
    assert not empty, f"panel queries with no data from the lab: {empty}"
    annotation = substitute(_dashboard()["annotations"]["list"][0]["expr"])
    assert _query(prom, annotation)["status"] == "success"
    # the tenant and service variables' label_values() queries, through the label values API Grafana uses
    variables = {v["name"]: v["query"]["query"] for v in _dashboard()["templating"]["list"] if v["type"] == "query"}
    for label, want in (("service", set(urls)), ("tenant", {"t01", "t02"})):
        match = re.fullmatch(rf"label_values\((.+), {label}\)", variables[label]).group(1)
        resp = requests.get(f"{prom}/api/v1/label/{label}/values",
                            params={"match[]": match.replace("$service", "policy|vuln|notify")}, timeout=5).json()
        assert want <= set(resp["data"]), resp
        if label == "tenant":  # pseudo-tenants are no choice in the tenant picker
            assert not {v for v in resp["data"] if v.startswith("__")}, resp
