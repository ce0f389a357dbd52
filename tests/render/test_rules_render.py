"""`chaosext render rules|dashboard`: the tenancy rules and dashboard for any target's metric names.

The lab's names give the shipped files back byte for byte; another target's names give rules that the shipped
promtool unit tests (ops/devops/tenant/tests/*.test.yaml) pass on, once the tests' own series are written in that
target's names (real promtool)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaosext.core.config import load_config
from chaosext.core.rulefiles import EXPECTED_SERVICES_RECORD
from chaosext.core.target import MetricContract, Service
from chaosext.render.dashboard import dashboard_text, render_dashboard
from chaosext.render.mapping import Mapping, mapping_for
from chaosext.render.promql import Names, parse_selector, rewrite
from chaosext.render.rules import RULE_FILES, render_rules, source_dir

SHIPPED = source_dir()
TEST_FILES = sorted((SHIPPED / "tests").glob("*.test.yaml"))

#: a target of its own: Micrometer/prom-client-like names, a job matcher, another error regex, its own cache gauge
SHOP_METRICS = {
    "requests": "http_requests_total", "requests_matchers": 'job="tenant-apis"', "status_label": "code",
    "tenant_label": "org", "service_label": "app", "error_status": "5[0-9][0-9]|401",
    "latency_histogram": "http_request_duration_seconds",
    "cache_fresh": 'max without (instance) (key_cache_phase{phase="fresh"})',
    "cache_stale": 'key_cache_phase{phase="stale"}', "cache_expired": 'key_cache_phase{phase="expired"}',
    "cache_empty": 'key_cache_phase{phase="empty"}', "cache_lookups": 'key_lookups_total{cache="jwks"}',
}
#: the unit tests' service names (test data) -> the shop's
SHOP_SERVICES = {"policy": "orders", "vuln": "billing", "notify": "shipping"}
LABELS = {"tenant": "org", "service": "app", "status": "code"}


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool not found: run scripts/setup (Debian package 'prometheus')")
    return path


def shop_mapping(**overrides: str) -> Mapping:
    contract = MetricContract.parse({**SHOP_METRICS, **overrides})
    return mapping_for(contract, {name: Service(name, f"http://{name}.shop:8080") for name in
                                  SHOP_SERVICES.values()}, [])


# ------------------------------------------------------------------------------------------------ the lab's names
def test_the_labs_names_give_the_shipped_rules_and_dashboard_byte_for_byte(tmp_path: Path) -> None:
    """Rendered from the lab's own description (what `chaosext lab up` writes), nothing changes."""
    from chaosext.lab import target as lab_target
    from chaosext.lab.plan import LabConfig

    cfg = LabConfig(state_dir=str(tmp_path / "lab"))
    comps = {name: {"url": f"http://127.0.0.1:{8451 + i}", "health": f"http://127.0.0.1:{8451 + i}/healthz"}
             for i, name in enumerate(cfg.services)}
    described = tmp_path / "target.json"
    described.write_text(json.dumps(lab_target.describe(cfg, comps)))
    settings = load_config({"target_file": str(described), "chaosext_lab_dir": str(tmp_path / "no-lab")})
    lab = mapping_for(settings.metrics, settings.services, [])
    rendered = render_rules(lab, "the lab")
    for name in RULE_FILES:
        assert rendered.files[name] == (SHIPPED / name).read_text(encoding="utf-8"), name
    assert rendered.left_out == {} and rendered.notes == []
    dash, left_out = render_dashboard(lab)
    assert dashboard_text(dash) == (SHIPPED / "dashboards" / "tenant-audit.json").read_text(encoding="utf-8")
    assert left_out == []


def test_the_shipped_alerts_name_no_service_the_services_file_does(tmp_path: Path) -> None:
    """The one target-specific part of the rules is services.yaml: one series per described service."""
    rendered = render_rules(shop_mapping(), "shop")
    assert not re.search(r'service="', (SHIPPED / "alerts.yaml").read_text())
    services = tmp_path / "services.yaml"
    services.write_text(rendered.files["services.yaml"])
    test = {"rule_files": [str(services)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": [],
        "promql_expr_test": [{"expr": EXPECTED_SERVICES_RECORD, "eval_time": "1m", "exp_samples": [
            {"labels": f'{EXPECTED_SERVICES_RECORD}{{app="{s}"}}', "value": 1} for s in SHOP_SERVICES.values()]}]}]}
    path = tmp_path / "services.test.yaml"
    path.write_text(yaml.safe_dump(test))
    proc = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------ another target
def _values(text: str) -> str:
    """The unit tests' service names -> the shop's (label values, job names, rendered annotations)."""
    for lab, shop in SHOP_SERVICES.items():
        text = re.sub(rf"\b{lab}\b(?!_)", shop, text)
    return text


def _series(selector: str) -> str | None:
    """An input series of the unit tests, written as the shop exports it (None: the shop has no such series)."""
    name, matchers = parse_selector(selector)
    labels = {LABELS.get(m.label, m.label): m.unquoted for m in matchers}
    if name == EXPECTED_SERVICES_RECORD:
        return None  # services.yaml, rendered from the shop's services, records it
    if name == "tenant_requests_total":
        name, labels = "http_requests_total", {**labels, "job": "tenant-apis"}
    elif name.startswith("tenant_request_duration_seconds"):
        name = name.replace("tenant_request_duration_seconds", "http_request_duration_seconds")
    elif name == "jwks_cache_state":
        name, labels = "key_cache_phase", {("phase" if k == "state" else k): v for k, v in labels.items()}
    elif name == "jwks_cache_lookups_total":
        name, labels = "key_lookups_total", {**labels, "cache": "jwks"}
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return _values(f"{name}{{{body}}}")


def _lab_gauge_lookback(alert: str) -> bool:
    """The shipped alert finds a target's service through the lab's cache gauge over a lookback (a series the shop
    has under another name and shape): its unit test's data cannot be written for the shop."""
    rule = next((r for g in yaml.safe_load((SHIPPED / "alerts.yaml").read_text())["groups"] for r in g["rules"]
                 if r["alert"] == alert), {"expr": ""})
    return "present_over_time(jwks_cache_state[" in rule["expr"]


def _shop_tests(doc: dict[str, Any], rendered_dir: Path, mapping: Mapping, left_out: set[str]) -> dict[str, Any]:
    """A promtool test file rewritten for the shop: its series and expectations in the shop's names, the rendered
    rule files, and no test of a rule the rendering left out."""
    out = {**doc, "rule_files": [str(rendered_dir / n) for n in (*RULE_FILES, "services.yaml")], "tests": []}
    labels_only = Names(labels=mapping.names.labels)  # expected label sets are no selectors: only labels renamed
    for group in doc["tests"]:
        series = [{**s, "series": _series(s["series"])} for s in group.get("input_series", [])]
        exprs = []
        for t in group.get("promql_expr_test", []):
            done = rewrite(t["expr"], mapping.names)
            alert = re.search(r'alertname="([^"]+)"', t["expr"])
            if done.missing or (alert and alert.group(1) in left_out):
                continue
            exprs.append({**t, "expr": done.text, "exp_samples": [
                {**s, "labels": _values(rewrite(s["labels"], labels_only).text)} for s in t.get("exp_samples", [])]})
        alerts = []
        for t in group.get("alert_rule_test", []):
            if t["alertname"] in left_out or _lab_gauge_lookback(t["alertname"]):
                continue
            alerts.append({**t, "exp_alerts": [
                {"exp_labels": {LABELS.get(k, k): _values(str(v)) for k, v in a.get("exp_labels", {}).items()},
                 "exp_annotations": {k: _values(v.replace("tenant_requests_total", "http_requests_total"))
                                     for k, v in a.get("exp_annotations", {}).items()}}
                for a in t.get("exp_alerts", [])]})
        if exprs or alerts:
            out["tests"].append({**group, "input_series": [s for s in series if s["series"]],
                                 "promql_expr_test": exprs, "alert_rule_test": alerts})
    return out


@pytest.mark.parametrize("test_file", TEST_FILES, ids=[p.name for p in TEST_FILES])
def test_the_shipped_unit_tests_pass_on_another_targets_rendering(tmp_path: Path, test_file: Path) -> None:
    mapping = shop_mapping()
    rendered = render_rules(mapping, "shop")
    for name, text in rendered.files.items():
        (tmp_path / name).write_text(text)
    doc = _shop_tests(yaml.safe_load(test_file.read_text()), tmp_path, mapping, set(rendered.left_out))
    assert doc["tests"], "nothing left to test"
    path = tmp_path / test_file.name
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=4096))
    check = subprocess.run([promtool(), "check", "rules", *(str(tmp_path / n) for n in rendered.files)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # the shop's names reached the rules, the lab's are gone from every expression it runs
    exprs = " ".join(r["expr"] for n in RULE_FILES for g in yaml.safe_load(rendered.files[n])["groups"]
                     for r in g["rules"])
    assert "http_requests_total{" in exprs and 'job="tenant-apis"' in exprs and "key_cache_phase" in exprs
    assert not re.search(r"\btenant_requests_total\b|\bjwks_cache_state\b|\bby \(tenant", exprs)


def test_what_another_target_lacks_is_left_out_and_said(tmp_path: Path) -> None:
    rendered = render_rules(shop_mapping(latency_histogram="off"), "shop")
    assert {"tenant_latency_p95_high", "tenant_service_kind:tenant_request_duration_seconds:p95_5m",
            "tenant_rate_limit_exceeded", "tenant_cardinality_high"} <= set(rendered.left_out)
    assert {"tenant_error_rate_gt_0_5pct", "jwks_cache_miss_spike", "tenant_service_metrics_absent"}.isdisjoint(
        rendered.left_out), "the alerts the experiment judges (EXPIRY_ALERTS) are rendered for any target"
    alerts = rendered.files["alerts.yaml"]
    assert "# Left out: tenant_latency_p95_high" in alerts.split("groups:")[0]
    assert "alert: tenant_latency_p95_high" not in alerts
    dash, left_out = render_dashboard(shop_mapping(latency_histogram="off"))
    titles = [p["title"] for p in dash["panels"]]
    assert not [t for t in titles if "p95" in t] and "Error rate" in " ".join(titles)
    assert "Left out:" in dash["description"] and left_out


def test_without_a_tenant_label_per_tenant_rules_aggregate_by_service(tmp_path: Path) -> None:
    rendered = render_rules(shop_mapping(tenant_label="none", error_status="5.."), "shop")
    rules = {r.get("record") or r.get("alert"): r for n in RULE_FILES
             for g in yaml.safe_load(rendered.files[n])["groups"] for r in g["rules"]}
    errors = rules["tenant_service:tenant_requests_errors:rate5m"]["expr"]
    assert "sum by (app) (rate(http_requests_total{code=~\"5..\"" in errors
    assert not re.search(r"\b(org|tenant)\b", errors.replace('"tenant-apis"', ""))
    # a rule that selects the unauthenticated pseudo-tenant cannot exist without a tenant label
    assert "service:tenant_requests_unauthenticated:rate5m" in rendered.left_out
    assert "Tenant (all) error rate" in rules["tenant_error_rate_gt_0_5pct"]["annotations"]["summary"]
    for name, text in rendered.files.items():
        (tmp_path / name).write_text(text)
    check = subprocess.run([promtool(), "check", "rules", *(str(tmp_path / n) for n in rendered.files)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_services_own_prometheus_cache_signal_feeds_the_jwks_alert(tmp_path: Path) -> None:
    """A service whose description gives its own cache expressions is judged by them, labelled with its name; a
    latency series without the lab's kind label counts as a read (the stricter SLO)."""
    from chaosext.core.target import CacheSignal

    contract = MetricContract.parse(dict(SHOP_METRICS))
    own = CacheSignal("prometheus", queries={"expired": 'orders_keys_cached == bool 0',
                                             "fresh": 'orders_keys_cached > bool 0'})
    mapping = mapping_for(contract, {"orders": Service("orders", "http://o", cache=own)}, [])
    rendered = render_rules(mapping, "shop")
    for name, text in rendered.files.items():
        (tmp_path / name).write_text(text)
    tests = {"rule_files": [str(tmp_path / n) for n in rendered.files], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": "orders_keys_cached{instance=\"a\"}", "values": "3x5 0x20"},  # the keys go at minute 6
            # billing: 1 request/s, more than 5 % slower than 0.5 s (p95 in the +Inf bucket: 0.5), no kind label
            *({"series": f'http_request_duration_seconds_bucket{{org="t1",app="billing",le="{le}",'
                         f'job="tenant-apis"}}', "values": f"0+{n}x20"}
              for le, n in (("0.1", 30), ("0.5", 40), ("+Inf", 60))),
        ],
        "promql_expr_test": [
            {"expr": 'ALERTS{alertname="jwks_cache_miss_spike"}', "eval_time": "4m", "exp_samples": []},
            {"expr": 'ALERTS{alertname="jwks_cache_miss_spike"}', "eval_time": "10m", "exp_samples": [
                {"labels": 'ALERTS{alertname="jwks_cache_miss_spike",alertstate="firing",app="orders",'
                           'severity="critical"}', "value": 1}]},
            {"expr": "tenant_service_kind:tenant_request_duration_seconds:p95_5m", "eval_time": "5m",
             "exp_samples": [{"labels": 'tenant_service_kind:tenant_request_duration_seconds:p95_5m{org="t1",'
                                        'app="billing"}', "value": 0.5}]},
            {"expr": 'ALERTS{alertname="tenant_latency_p95_high"}', "eval_time": "5m", "exp_samples": [
                {"labels": 'ALERTS{alertname="tenant_latency_p95_high",alertstate="pending",org="t1",app="billing",'
                           'severity="warning"}', "value": 1}]},
        ],
    }]}
    path = tmp_path / "own.test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    latency = next(r for g in yaml.safe_load(rendered.files["alerts.yaml"])["groups"] for r in g["rules"]
                   if r["alert"] == "tenant_latency_p95_high")
    assert 'kind=~"read|"' in latency["expr"]


def test_the_rendering_reads_the_target_description_like_a_run(tmp_path: Path) -> None:
    target = tmp_path / "target.yaml"
    target.write_text(yaml.safe_dump({"version": 1, "tenants": ["acme"], "services": {
        "orders": {"url": "http://o:1", "routes": ["GET /v2/orders"]}},
        "prometheus": {"metrics": {k: v for k, v in SHOP_METRICS.items() if not k.startswith("cache")}}}))
    cfg = load_config({"target_file": str(target), "chaosext_lab_dir": str(tmp_path / "no-lab")})
    rendered = render_rules(mapping_for(cfg.metrics, cfg.services, []), str(target))
    assert 'label_replace(vector(1), "app", "orders", "", "")' in rendered.files["services.yaml"]
    assert "http_requests_total{" in rendered.files["recording-rules.yaml"]
    assert json.dumps(str(target))[1:-1] in rendered.files["alerts.yaml"].split("groups:")[0]


def test_every_query_of_another_targets_dashboard_is_valid_promql(tmp_path: Path) -> None:
    """promtool evaluates each rendered panel query (Grafana's variables filled in as for "All"): a query the rewrite
    broke would not parse. Its legends and variables speak the target's labels."""
    dash, _ = render_dashboard(shop_mapping())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs and not [e for e in exprs if re.search(r"\btenant_requests_total\b|\bby \(tenant|service=~", e)]
    legends = " ".join(t.get("legendFormat", "") for p in dash["panels"] for t in p.get("targets", []))
    assert "{{org}}" in legends and "{{app}}" in legends and "{{tenant}}" not in legends
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["service"]["query"]["query"] == 'label_values(http_requests_total{job="tenant-apis"}, app)'
    tests = [{"expr": e.replace("$__rate_interval", "1m").replace("$tenant", ".*").replace("$service", ".*"),
              "eval_time": "1m", "exp_samples": []} for e in exprs]
    path = tmp_path / "dashboard.test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [], "evaluation_interval": "1m", "tests": [
        {"interval": "1m", "input_series": [], "promql_expr_test": tests}]}))
    proc = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
