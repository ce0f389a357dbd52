"""Run the Debian promtool over the shipped tenancy rules: `check rules` must be clean, every `test rules` file must
pass.

Also checks the rule files' own contract (alert names, labels, annotations, absolute runbook URLs from one base whose
anchors exist in docs/runbook.md, every recording rule used by an alert or a dashboard panel) and generates promtool
tests that need more than a thousand series (the active-tenant cardinality branch, with and without pseudo-tenants).
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
TENANT = HERE.parent
RECORDING = TENANT / "recording-rules.yaml"
ALERTS = TENANT / "alerts.yaml"
DASHBOARD = TENANT / "dashboards" / "tenant-audit.json"
RUNBOOK = TENANT.parents[2] / "docs" / "runbook.md"
TEST_FILES = sorted(HERE.glob("*.test.yaml"))
#: The one base every runbook_url is built from (deploy/README.md, "Runbook links", says how to change it).
RUNBOOK_BASE = "https://git.stellaops.example/stellaops/chaosext/blob/main/docs/runbook.md"
PLAN_ALERTS = {
    "tenant_error_rate_gt_0_5pct": "tenant-error-rate",
    "jwks_cache_miss_spike": "jwks-cache-miss-spike",
    "tenant_rate_limit_exceeded": "tenant-rate-limit",
    "tenant_latency_p95_high": "tenant-latency",
    "tenant_auth_failures_spike": "tenant-auth-failures",
    "unauthenticated_requests_spike": "unauthenticated-requests",
    "service_rejects_nearly_all_tokens": "service-rejects-tokens",
    "tenant_service_target_down": "tenant-service-down",
    "tenant_service_metrics_absent": "tenant-service-down",
    "tenant_cardinality_high": "tenant-cardinality",
}
PER_TENANT = {"tenant_error_rate_gt_0_5pct", "tenant_rate_limit_exceeded", "tenant_latency_p95_high",
              "tenant_auth_failures_spike"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool not found: run scripts/setup (Debian package 'prometheus') to install it")
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120, cwd=HERE)


def _rules(path: Path) -> list[dict]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules_is_clean() -> None:
    proc = _run("check", "rules", str(RECORDING), str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize("test_file", TEST_FILES, ids=[p.name for p in TEST_FILES])
def test_promtool_unit_tests_pass(test_file: Path) -> None:
    proc = _run("test", "rules", str(test_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_rule_has_a_unit_test() -> None:
    """Each recording rule appears in a promql_expr_test, each alert in an alert_rule_test."""
    tested_exprs, tested_alerts = "", set()
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            tested_exprs += " ".join(t["expr"] for t in test.get("promql_expr_test", [])) + " "
            tested_alerts |= {t["alertname"] for t in test.get("alert_rule_test", [])}
    records = [r["record"] for r in _rules(RECORDING)]
    missing = [r for r in records if r not in tested_exprs.split() and not any(
        e.startswith(r + "{") for e in tested_exprs.split())]
    assert not missing, f"recording rules without a promql_expr_test: {missing}"
    alerts = {r["alert"] for r in _rules(ALERTS)}
    assert alerts - tested_alerts == set(), f"alerts without an alert_rule_test: {alerts - tested_alerts}"


def test_alerts_are_the_plans_with_severity_annotations_and_runbook() -> None:
    rules = {r["alert"]: r for r in _rules(ALERTS)}
    assert set(rules) == set(PLAN_ALERTS)
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert rule["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#{PLAN_ALERTS[name]}", name
        assert rule.get("for"), f"{name} has no for: duration"
        assert "$labels.service" in rule["annotations"]["summary"], name
        if name in PER_TENANT:
            assert "$labels.tenant" in rule["annotations"]["summary"], name


def test_runbook_anchors_exist() -> None:
    """Every alert's anchor is an `<a id>` in docs/runbook.md, followed by a heading that names the alert."""
    text = RUNBOOK.read_text(encoding="utf-8")
    for name, anchor in PLAN_ALERTS.items():
        match = re.search(rf'<a id="{anchor}"></a>\n### [^\n]*', text)
        assert match, f"docs/runbook.md has no <a id=\"{anchor}\"> for {name}"
        assert f"`{name}`" in match.group(0), f"the heading under #{anchor} does not name {name}: {match.group(0)}"


def test_every_recording_rule_feeds_an_alert_or_a_panel() -> None:
    """A recorded series nobody reads costs TSDB space: each one is used by an alert, a panel, or another rule that
    is (transitively)."""
    alerts = " ".join(r["expr"] for r in _rules(ALERTS))
    panels = " ".join(json.dumps(p) for p in json.loads(DASHBOARD.read_text())["panels"])
    rules = {r["record"]: r["expr"] for r in _rules(RECORDING)}
    used = {name for name in rules if re.search(rf"{re.escape(name)}\b", alerts + " " + panels)}
    while True:
        more = {n for n in rules if n not in used and any(re.search(rf"{re.escape(n)}\b", rules[u]) for u in used)}
        if not more:
            break
        used |= more
    assert set(rules) - used == set(), f"recording rules no alert or panel uses: {sorted(set(rules) - used)}"


def test_recording_rules_aggregate_to_tenant_and_service_only() -> None:
    """Cardinality: recorded series never keep instance, route, status or any other label."""
    allowed = {"tenant", "service", "kind", "le"}
    for rule in _rules(RECORDING):
        name = rule["record"]
        level, _, _ = name.split(":")
        assert set(level.split("_")) <= {"tenant", "service", "kind"}, name
        for clause in rule["expr"].split("by (")[1:]:
            labels = {x.strip() for x in clause.split(")")[0].split(",")}
            assert labels <= allowed, f"{name} aggregates by {labels}"


@pytest.mark.parametrize("pseudo", [False, True], ids=["real-tenants", "with-pseudo-tenants"])
def test_cardinality_alert_fires_above_1000_active_tenants(tmp_path: Path, pseudo: bool) -> None:
    """1001 active tenants on one service fire tenant_cardinality_high; a service with a few tenants stays silent.

    with-pseudo-tenants: policy has exactly 1000 real tenants plus `__overflow__` and `__unauthenticated__` series
    (no overflow counter increase): the pseudo-tenants are no tenants, so the count is 1000 and the alert is silent."""
    series = []
    real = 1000 if pseudo else 1001
    names = [f"t{i:04d}" for i in range(real)] + (["__overflow__", "__unauthenticated__"] if pseudo else [])
    for svc, tenants in (("policy", names), ("vuln", ["t0000", "t0001", "t0002"])):
        for tenant in tenants:
            series.append({
                "series": f'tenant_requests_total{{tenant="{tenant}",service="{svc}",route="/r",status="200"}}',
                "values": "0+1x20",
            })
    expected = [{
        "exp_labels": {"service": "policy", "severity": "warning"},
        "exp_annotations": _rendered_cardinality_annotations("policy", "1001"),
    }]
    doc = {
        "rule_files": [str(RECORDING), str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [{
                "expr": "service:tenants_active:count", "eval_time": "10m",
                "exp_samples": [
                    {"labels": 'service:tenants_active:count{service="policy"}', "value": real},
                    {"labels": 'service:tenants_active:count{service="vuln"}', "value": 3},
                ],
            }],
            "alert_rule_test": [{
                "eval_time": "15m", "alertname": "tenant_cardinality_high",
                "exp_alerts": [] if pseudo else expected,
            }],
        }],
    }
    test_file = tmp_path / "cardinality.test.yaml"
    test_file.write_text(yaml.safe_dump(doc))
    proc = _run("test", "rules", str(test_file))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _rendered_cardinality_annotations(service: str, value: str) -> dict[str, str]:
    """The cardinality alert's annotations as Prometheus renders them (plain substitutions only)."""
    rule = next(r for r in _rules(ALERTS) if r["alert"] == "tenant_cardinality_high")
    out = {}
    for key, text in rule["annotations"].items():
        out[key] = text.replace("{{ $labels.service }}", service).replace("{{ $value }}", value).strip()
    return out


def test_the_dashboards_p95_panels_plot_no_nan_for_a_tenant_that_stopped_sending(tmp_path: Path) -> None:
    """The p95 panels' own queries (variables set to "All"), evaluated by promtool over the shipped rules: a tenant
    silent for 10 minutes has no point at all (histogram_quantile of all-zero bucket rates would be NaN), a tenant
    still sending keeps its p95."""
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if "p95" in p.get("title", "")]
    exprs = [t["expr"].replace("$tenant", ".*").replace("$service", ".*") for p in panels for t in p["targets"]]
    assert len(exprs) >= 2, "no p95 panels found"

    def buckets(tenant: str, kind: str, values: str) -> list[dict[str, str]]:
        return [{"series": f'tenant_request_duration_seconds_bucket{{tenant="{tenant}",service="vuln",kind="{kind}",'
                           f'le="{le}",instance="a"}}', "values": values} for le in ("0.1", "+Inf")]

    series = []
    for kind in ("read", "write"):
        series += buckets("t01", kind, "0+60x5 300x15") + buckets("t02", kind, "0+60x20")
    tests = [{"expr": e, "eval_time": "15m", "exp_samples": [
        {"labels": f'tenant_service_kind:tenant_request_duration_seconds:p95_5m{{tenant="t02",service="vuln",'
                   f'kind="{kind}"}}', "value": 0.095}]}
        for e in exprs for kind in ("read", "write") if f'kind=\\"{kind}\\"' in json.dumps(e)]
    assert len(tests) == len(exprs)
    doc = {"rule_files": [str(RECORDING), str(ALERTS)], "evaluation_interval": "1m",
           "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}]}
    test_file = tmp_path / "p95.test.yaml"
    test_file.write_text(yaml.safe_dump(doc))
    proc = _run("test", "rules", str(test_file))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
