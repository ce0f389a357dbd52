"""The experiment's configuration (chaosext.core.config): parsing (lists with ranges, SERVICE_URLS, FORGERY_ROUTES,
numbers), the target from the running lab's description, and validation whose every problem says what to set. No
network. The target description itself (TARGET_FILE, precedence per value) is tests/core/test_target.py."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from chaosext.core.config import ExperimentConfig, load_config, parse_routes, validate
from chaosext.core.errors import ConfigError
from chaosext.core.target import Route
from chaosext.safety.controls import approval_problem
from tests.labfake import write_running_lab
from tests.targetutil import description, target_config, write_lab

NO_LAB = {"chaosext_lab_dir": "/nonexistent"}


@pytest.fixture
def target(tmp_path: Path) -> dict[str, str]:
    """A configuration naming a valid target description (tests/targetutil.py: orders, billing on loopback)."""
    return target_config(tmp_path)


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every setting comes from the test's configuration, whatever the shell running the tests exports."""
    for f in dataclasses.fields(ExperimentConfig):
        monkeypatch.delenv(f.name.upper(), raising=False)
    for name in ("SERVICE_URLS", "CHAOSEXT_LAB_DIR", "CHAOSEXT_RUN_DIR", "CHAOSEXT_RUN_ID", "CHAOSEXT_APPROVE"):
        monkeypatch.delenv(name, raising=False)


def test_config_defaults_come_from_the_running_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A running lab names its own target description in state.json (``chaosext lab up`` writes it): with no
    TARGET_FILE, the run's target is the lab's, and the run base is under the lab's state directory."""
    lab = write_lab(tmp_path / "lab", description(
        identity_provider={"authority_url": "http://127.0.0.2:3333",
                           "jwks_url": "http://127.0.0.2:3333/.well-known/jwks.json",
                           "jwks_cache": {"ttl_seconds": 7, "max_stale_seconds": 70}},
        services={"policy": {"url": "http://127.0.0.1:1111", "routes": ["GET /api/v1/policies"]}},
        prometheus={"url": "http://127.0.0.1:4444"}, alertmanager={"url": "http://127.0.0.1:5555"},
        audit={"source": f"file:{tmp_path / 'lab' / 'audit.jsonl'}"}))
    monkeypatch.delenv("CHAOSEXT_RUN_DIR", raising=False)
    cfg = load_config({"chaosext_lab_dir": str(lab), "outage_seconds": "20", "tenants": "t01..t03"})
    assert cfg.service_urls == {"policy": "http://127.0.0.1:1111"} and cfg.lab_running
    assert cfg.services["policy"].probe_route == Route("GET", "/api/v1/policies")
    assert cfg.jwks_url.startswith("http://127.0.0.2:3333") and cfg.prometheus_url.endswith(":4444")
    assert (cfg.jwks_ttl, cfg.jwks_max_stale, cfg.outage_seconds) == (7.0, 70.0, 20)
    assert cfg.tenants == ("t01", "t02", "t03")  # the configuration over the lab's description
    assert (cfg.origins["jwks_url"], cfg.origins["tenants"]) == ("lab", "configuration")
    assert cfg.audit_source == f"file:{lab / 'audit.jsonl'}" and cfg.run_base == str(lab / "run")
    assert cfg.target_file == str(lab / "target.json")
    assert cfg.run_dir == ""  # no run yet: the run directory is <run base>/<run id> once the control made one
    assert cfg.is_lab_target and not validate(cfg) and not approval_problem(cfg)
    (lab / "state.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt"):
        load_config({"chaosext_lab_dir": str(lab)})


def test_a_target_file_given_wins_over_the_running_labs(tmp_path: Path) -> None:
    lab = write_lab(tmp_path / "lab")
    own = target_config(tmp_path / "own", description(tenants=["solo"]), chaosext_lab_dir=str(lab))
    cfg = load_config(own)
    assert cfg.tenants == ("solo",) and cfg.target_file == own["target_file"] and cfg.lab_running
    assert cfg.origins["tenants"] == "target file"


def test_config_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="SERVICE_URLS entry 'policy' is not name=url"):
        load_config({"service_urls": "policy", "chaosext_lab_dir": "/nonexistent"})
    with pytest.raises(ValueError, match="K6_RATE='lots' is not a whole number"):
        load_config({"k6_rate": "lots", "chaosext_lab_dir": "/nonexistent"})
    cfg = load_config({"chaosext_lab_dir": "/nonexistent", "error_rate_max": "5", "fault_mode": "melt",
                       "audit_source": "s3:bucket", "jwks_ttl": "100", "jwks_max_stale": "10"})
    text = " | ".join(validate(cfg))
    for expected in ("ERROR_RATE_MAX=5.0 must be a fraction", "FAULT_MODE='melt' is unknown",
                     "AUDIT_SOURCE='s3:bucket' must be", "JWKS_MAX_STALE=10.0 is below JWKS_TTL=100.0"):
        assert expected in text


@pytest.mark.parametrize("given, tenants", [
    ("t01..t12", tuple(f"t{i:02d}" for i in range(1, 13))),
    ("t1..t3", ("t1", "t2", "t3")),
    ("a08..a11", ("a08", "a09", "a10", "a11")),
    ("t01..t02, acme ,, t10", ("t01", "t02", "acme", "t10")),
    (["t01", " t02 "], ("t01", "t02")),
])
def test_tenants_are_a_list_with_ranges(given: object, tenants: tuple[str, ...]) -> None:
    assert load_config({**NO_LAB, "tenants": given}).tenants == tenants


def test_every_list_setting_reads_commas_and_ranges_alike() -> None:
    cfg = load_config({**NO_LAB, "expiry_alerts": "jwks_cache_miss_spike, tenant_error_rate_gt_0_5pct",
                       "forgery_skip": "alg-none,", "refused_statuses": "401, 403,404"})
    assert cfg.expiry_alerts == ("jwks_cache_miss_spike", "tenant_error_rate_gt_0_5pct")
    assert cfg.forgery_skip == ("alg-none",) and cfg.refused_statuses == (401, 403, 404)


def test_the_environment_fills_what_the_configuration_leaves_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTAGE_SECONDS", "45")
    monkeypatch.setenv("TENANTS", "t01..t02")
    cfg = load_config({**NO_LAB, "outage_seconds": "${OUTAGE_SECONDS}", "k6_rate": ""})
    assert (cfg.outage_seconds, cfg.tenants, cfg.k6_rate) == (45, ("t01", "t02"), ExperimentConfig().k6_rate)
    assert load_config({**NO_LAB, "outage_seconds": "30"}).outage_seconds == 30


def test_without_a_lab_or_a_target_file_the_target_is_empty_and_validate_says_what_to_give() -> None:
    """No lab defaults stand in for a target that was not described: every fact of the target is empty, and the
    run is refused with what to give."""
    cfg = load_config(NO_LAB)
    assert (cfg.services, cfg.tenants, cfg.jwks_url, cfg.authority_url, cfg.audience) == ({}, (), "", "", "")
    assert (cfg.prometheus_url, cfg.alertmanager_url, cfg.audit_source, cfg.tenant_header) == ("", "", "", "")
    # a user's run base is in the working directory; root's is root-private (chaosext.core.safefs.default_dir)
    base = "/var/lib/chaosext/run" if os.geteuid() == 0 else ".chaosext-run"
    assert (cfg.run_base, cfg.run_dir, cfg.lab_running, cfg.outage_seconds) == (base, "", False, 300)
    text = " | ".join(validate(cfg))
    for expected in ("no service to drive: describe the target's services in TARGET_FILE", "TENANTS is empty",
                     "JWKS_URL=''", "AUTHORITY_URL=''", "PROMETHEUS_URL=''",
                     "ALERTMANAGER_URL=''", "AUDIT_SOURCE='' must be"):
        assert expected in text, text


def test_service_urls_are_name_url_pairs_each_name_once() -> None:
    cfg = load_config({**NO_LAB, "service_urls": " policy=http://10.0.0.1:80/ , orders=https://orders.example "})
    assert cfg.service_urls == {"policy": "http://10.0.0.1:80", "orders": "https://orders.example"}
    assert load_config({**NO_LAB, "service_urls": {"a": "http://x/"}}).service_urls == {"a": "http://x"}
    with pytest.raises(ConfigError, match="SERVICE_URLS names 'policy' twice"):
        load_config({**NO_LAB, "service_urls": "policy=http://a,policy=http://b"})
    with pytest.raises(ConfigError, match="'=http://a' is not name=url"):
        load_config({**NO_LAB, "service_urls": "=http://a"})


def test_run_id_picks_the_runs_directory_under_the_run_base(tmp_path: Path) -> None:
    cfg = load_config({**NO_LAB, "chaosext_run_dir": str(tmp_path), "chaosext_run_id": "0a1b2c3d"})
    assert (cfg.run_base, cfg.run_dir, cfg.run_id) == (str(tmp_path), str(tmp_path / "0a1b2c3d"), "0a1b2c3d")
    with pytest.raises(ConfigError, match="not a chaosext run id"):
        load_config({**NO_LAB, "chaosext_run_id": "../../etc"})


def test_the_unverified_accepts_backstop_can_be_switched_off() -> None:
    assert load_config({**NO_LAB, "metric_unverified_accepts": "off"}).metrics.unverified_accepts == ""
    assert load_config({**NO_LAB, "metric_unverified_accepts": "x_total"}).metrics.unverified_accepts == "x_total"
    assert 'key_source="none"' in load_config(NO_LAB).metrics.unverified_accepts


def test_forgery_routes_as_text_or_mapping() -> None:
    text = "policy=GET /api/v1/policies|post /api/v1/policies; vuln=GET /api/v1/findings;"
    assert parse_routes(text) == {"policy": (("GET", "/api/v1/policies"), ("POST", "/api/v1/policies")),
                                  "vuln": (("GET", "/api/v1/findings"),)}
    assert parse_routes({"notify": ["DELETE /n/1"], "vuln": "GET /f|PUT /f"}) == {
        "notify": (("DELETE", "/n/1"),), "vuln": (("GET", "/f"), ("PUT", "/f"))}
    assert parse_routes("") == {} and parse_routes(None) == {}
    cfg = load_config({**NO_LAB, "service_urls": "policy=http://p,vuln=http://v", "forgery_routes": text})
    assert {n: tuple(r.text for r in s.forgery_routes) for n, s in cfg.services.items()} == {
        "policy": ("GET /api/v1/policies", "POST /api/v1/policies"), "vuln": ("GET /api/v1/findings",)}


@pytest.mark.parametrize("bad, message", [
    ("GET /api/v1/policies", "entry 'GET /api/v1/policies' is not service=METHOD /path"),
    ("policy=FETCH /x", "route 'FETCH /x' of policy is not 'METHOD /path'"),
    ("policy=GET api/v1", "route 'GET api/v1' of policy is not 'METHOD /path'"),
    ("policy=", "route '' of policy is not 'METHOD /path'"),
    ({"policy": []}, "gives policy no route"),
])
def test_a_forgery_route_that_cannot_be_read_is_refused_with_an_example(bad: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_routes(bad)
    assert "e.g. orders=GET /v2/orders|POST /v2/orders" in str(caught.value)


@pytest.mark.parametrize("override, problem", [
    ({"outage_seconds": "0"}, "OUTAGE_SECONDS=0 must be a positive number of seconds"),
    ({"outage_seconds": "3601"},
     "OUTAGE_SECONDS=3601 is above MAX_OUTAGE_SECONDS=3600; use OUTAGE_SECONDS=3600 or less"),
    ({"outage_seconds": "3600"}, None),  # the cap is on the outage; the fault's deadline adds its margin to it
    ({"outage_seconds": "3601", "max_outage_seconds": "4000"}, None),
    ({"outage_seconds": "120", "max_outage_seconds": "60"}, "raise MAX_OUTAGE_SECONDS to 120"),
    ({"baseline_seconds": "4"}, "BASELINE_SECONDS=4 is too short"),
    ({"baseline_min_requests": "0"}, "BASELINE_MIN_REQUESTS=0 must be at least 1"),
    ({"recovery_seconds": "0"}, "RECOVERY_SECONDS=0 must be at least 1"),
    ({"heartbeat_grace": "3"}, "HEARTBEAT_GRACE=3.0 must be at least 4 s"),
    ({"fault_via": "ebpf"}, "FAULT_VIA='ebpf' is unknown; use one of iptables, envoy, k8s-networkpolicy, istio"),
    ({"jwks_url": "ftp://idp/jwks"}, "JWKS_URL='ftp://idp/jwks' is not an http(s) URL"),
    ({"prometheus_url": "http://127.0.0.1:99999"}, "PROMETHEUS_URL='http://127.0.0.1:99999' has an invalid port"),
    ({"service_urls": "orders=127.0.0.1:8451"}, "SERVICE_URLS[orders]='127.0.0.1:8451' is not an http(s) URL"),
    ({"service_urls": "orders=http://127.0.0.1:8451,shop=http://127.0.0.1:8452"}, "service shop has no routes"),
    ({"tenants": ","}, "TENANTS is empty"),
    ({"tenants": "t05..t03"}, "TENANTS is empty"),
    ({"k6_rate": "0"}, "K6_RATE=0 must be a positive number"),
    ({"abort_error_rate": "0"}, "ABORT_ERROR_RATE=0.0 must be > 0"),
    ({"audit_source": "loki:not-a-url"}, "AUDIT_SOURCE='not-a-url' is not an http(s) URL"),
    ({"audit_source": "file:"}, "AUDIT_SOURCE='file:' must be file:<path>, loki:<url> or clickhouse:<url>"),
    ({"refused_statuses": "401,200"}, "REFUSED_STATUSES=401,200 must list HTTP statuses outside 2xx"),
    ({"refused_statuses": "401,700"}, "REFUSED_STATUSES=401,700 must list"),
    ({"forgery_concurrency": "0"}, "FORGERY_CONCURRENCY=0 must be >= 1"),
    ({"forgery_timeout": "0"}, "FORGERY_TIMEOUT=0.0 must be > 0 seconds"),
    ({"tokens_file": "/nonexistent/tokens.json"}, "TOKENS_FILE='/nonexistent/tokens.json' does not exist"),
])
def test_each_invalid_setting_is_one_problem_that_names_it(override: dict[str, str], problem: str | None,
                                                          target: dict[str, str]) -> None:
    problems = validate(load_config({**target, **override}))
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


@pytest.mark.parametrize("override, state, lab_target", [
    ({}, {}, True),
    ({"fault_via": "envoy", "fault_target": "http://127.0.0.1:9901"}, {"envoy_admin_url": "http://127.0.0.1:9901"},
     True),
    ({"fault_via": "envoy", "fault_target": "envoy:http://[::1]:9901/"}, {"envoy_admin_url": "http://[::1]:9901"},
     True),
    # a loopback Envoy admin that is not the lab's (a kubectl port-forward to production is loopback too)
    ({"fault_via": "envoy", "fault_target": "http://127.0.0.1:9901"}, {"envoy_admin_url": "http://127.0.0.1:9902"},
     False),
    ({"fault_via": "envoy", "fault_target": "http://127.0.0.1:9901"}, {}, False),
    ({"fault_target": "netns:lab"}, {}, False),
    ({"service_urls": "policy=http://127.0.0.1:8451"}, {}, False),  # loopback, but not one of the lab's services
    ({"jwks_url": "http://127.0.0.1:3333/.well-known/jwks.json"}, {}, False),
    ({"jwks_url": "https://idp.example.com/.well-known/jwks.json"}, {}, False),
    # FAULT_TARGET=local where this process is not in the lab's network namespace (another team's namespace)
    ({}, {"netns": "4:4026531840"}, False),
    # the lab's authority process is gone: its state file is left over, nothing there is the lab any more
    ({}, {"components": {"authority": {"pid": 2 ** 22 + 1, "start_ticks": 1}}}, False),
])
def test_the_lab_is_recognised_by_its_state_file_never_by_loopback(
        tmp_path: Path, override: dict[str, str], state: dict[str, object], lab_target: bool) -> None:
    write_running_lab(tmp_path / "lab", **state)
    cfg = load_config({"chaosext_lab_dir": str(tmp_path / "lab"), **override})
    assert cfg.is_lab_target is lab_target
    assert (approval_problem(cfg) == "") is lab_target


def test_loopback_urls_without_a_running_lab_need_approval(target: dict[str, str]) -> None:
    """A target all on loopback (tests/targetutil.py): without a lab whose state names it, it needs approval."""
    cfg = load_config(target)
    assert not cfg.is_lab_target
    assert "CHAOSEXT_APPROVE=127.0.0.1" in approval_problem(cfg)


def test_a_state_file_another_user_could_write_is_no_lab(tmp_path: Path) -> None:
    """state.json decides what the lab is: one in a directory others can write is refused, never trusted."""
    write_running_lab(tmp_path / "lab")
    (tmp_path / "lab").chmod(0o777)
    with pytest.raises(ValueError, match="writable by group or others"):
        load_config({"chaosext_lab_dir": str(tmp_path / "lab")})


def test_the_resolved_settings_are_json_for_the_journal(target: dict[str, str]) -> None:
    cfg = load_config({**target, "forgery_routes": "orders=GET /p", "tenants": "t01..t02"})
    d = json.loads(json.dumps(cfg.as_dict()))
    assert d["tenants"] == ["t01", "t02"] and d["refused_statuses"] == [401, 403]
    assert [(r["method"], r["path"]) for r in d["services"]["orders"]["forgery"]] == [("GET", "/p")]
    assert d["services"]["orders"]["url"] == "http://127.0.0.1:9/orders" and d["audit"]["fields"]["action"] == "action"


#: what the target description gives beyond plain settings: services with every kind of route and cache signal, and
#: an audit mapping (SERVICE_URLS below picks both services and moves them; their routes and signals stay)
DESCRIBED = description(
    services={"orders": {"url": "http://127.0.0.1:9/o", "probe": "HEAD /v2/orders/ping",
                         "routes": [{"method": "GET", "path": "/v2/orders/{id}", "weight": 9},
                                    {"method": "POST", "path": "/v2/orders", "body": {"sku": "x-1"}, "weight": 2,
                                     "kind": "read"}],
                         "forgery_routes": ["GET /v2/orders", "DELETE /v2/orders/1"],
                         "cache": {"prometheus": {"fresh": "a > 0", "stale": "b == 1", "expired": "a == 0",
                                                  "empty": "c == 0"}},
                         "ready": "http://127.0.0.1:9/o/ready"},
              "billing": {"url": "http://127.0.0.1:9/b", "routes": ["GET /invoices", "PATCH /invoices"],
                          "cache": {"http": {"url": "http://127.0.0.1:9/b/health", "field": "jwks.state",
                                             "age_field": "jwks.age", "states": {"fresh": ["ok", "good"],
                                                                                 "expired": "failed"}}}}},
    audit={"source": "file:/x", "fields": {"time": "ts", "service": "svc.name", "action": "event"},
           "actions": {"degraded": "jwks.stale", "recovered": "", "rejected": "token.rejected"}})

#: a value other than the default for every setting (configuration key -> value)
EVERY_SETTING = {
    "outage_seconds": "90", "max_outage_seconds": "1200", "fault_via": "k8s-networkpolicy",
    "fault_target": "tenancy/app=policy", "fault_mode": "reject", "envoy_admin_url": "http://127.0.0.1:9902",
    "kube_api_url": "http://127.0.0.1:8001", "kube_context": "kind-chaos", "fault_parallelism": "4",
    "jwks_url": "https://idp.example/.well-known/jwks.json", "authority_url": "https://idp.example",
    "service_urls": "orders=http://10.0.0.1:80,billing=http://10.0.0.2:80", "tenant_header": "X-Tenant",
    "tenants": "a01..a03", "audience": "orders-api", "prometheus_url": "https://prom.example",
    "alertmanager_url": "https://am.example", "audit_source": "clickhouse:https://ch.example",
    "audit_sql": "SELECT 1 FORMAT JSON", "loki_tenant": "team-a", "clickhouse_database": "audit",
    "k6_rate": "50", "error_rate_max": "0.02", "abort_error_rate": "0.7", "abort_after_seconds": "12",
    "jwks_ttl": "30", "jwks_max_stale": "90", "expiry_alerts": "a_alert,b_alert", "alert_wait_seconds": "10",
    "watch_interval": "2.5", "refused_statuses": "401", "forgery_skip": "x5u,jku",
    "forgery_routes": "billing=DELETE /b/1", "forgery_concurrency": "4",
    "forgery_timeout": "1.5", "baseline_seconds": "30", "baseline_min_requests": "20", "recovery_seconds": "45",
    "heartbeat_grace": "6", "chaosext_run_dir": "/var/tmp/chaosext-runs", "chaosext_run_id": "0a1b2c3d",
    "chaosext_approve": "tenancy/app=policy", "chaosext_allow_http": "true",
    "forgery_key_url": "http://10.0.0.9:8099", "forgery_key_listen": "0.0.0.0:8099", "jwks_failure":
    "cold-start-during-outage", "jwks_slow_seconds": "12", "jwks_error_status": "502", "jwks_malformed": "truncated",
    "rotate_url": "https://idp.example/rotate", "cold_start_url": "{service_url}/restart",
    "cold_start_service": "billing", "latency_slo_seconds": "0.5",
    "metric_requests": "http_server_requests_seconds_count", "metric_requests_matchers": 'job="api"',
    "metric_status_label": "code", "metric_error_status": "5..", "metric_tenant_label": "tenant_id",
    "metric_service_label": "application", "metric_cache_expired": 'keys_usable{usable="false"}',
    "metric_cache_stale": "keys_stale", "metric_cache_lookups": "key_lookups_total",
    "metric_cache_fresh": "max by (application) (keys_cached) > 0", "metric_cache_empty": "keys_cached == 0",
    "metric_latency_histogram": "http_server_requests_seconds", "metric_unverified_accepts": "off",
    "audit_logql": '{app=~"{services}"} | json',
    "token_endpoint": "https://idp.example/token", "token_auth_method": "client_secret_post",
    "token_tenant_param": "org", "token_scope": "api.read", "token_audience": "orders",
    "token_audience_param": "resource", "tokens_file": "/etc/chaosext/tokens.json",
    "token_other_audience": "https://reports.example", "forgery_tokens_file": "/etc/chaosext/forgery.json",
    "prometheus_ca_bundle": "/etc/ssl/prom-ca.pem", "loki_ca_bundle": "/etc/ssl/loki-ca.pem",
    "alertmanager_insecure": "true", "clickhouse_insecure": "yes",
}


def test_every_setting_the_run_keeps_reads_back_the_same(tmp_path: Path) -> None:
    """The safety control keeps the resolved settings in the run record (``to_json``) and every activity reads them
    back (``from_json``): each field, with nested contracts, tuples and mappings of tuples, must survive as it was."""
    cfg = dataclasses.replace(load_config(target_config(tmp_path, DESCRIBED, **EVERY_SETTING)), lab_running=True)
    default = ExperimentConfig()
    same = [f.name for f in dataclasses.fields(ExperimentConfig) if getattr(cfg, f.name) == getattr(default, f.name)]
    assert same == [], f"give EVERY_SETTING a non-default value for {same}: else the round trip does not test them"
    for nested in (cfg.metrics, cfg.token, cfg.audit):
        unchanged = [f.name for f in dataclasses.fields(nested) if getattr(nested, f.name) ==
                     getattr(type(nested)(), f.name)]
        assert unchanged == [], f"{type(nested).__name__}: give {unchanged} a non-default value"
    doc = json.loads(json.dumps(cfg.to_json()))  # what run.json holds
    back = ExperimentConfig.from_json(doc)
    assert back == cfg
    for f in dataclasses.fields(ExperimentConfig):
        assert type(getattr(back, f.name)) is type(getattr(cfg, f.name)), f.name
    assert back.service_urls == {"orders": "http://10.0.0.1:80", "billing": "http://10.0.0.2:80"}
    orders, billing = back.services["orders"], back.services["billing"]
    assert orders.routes == (Route("GET", "/v2/orders/{id}", "", 9, "read"),
                             Route("POST", "/v2/orders", '{"sku":"x-1"}', 2, "read"))
    assert orders.probe_route == Route("HEAD", "/v2/orders/ping") and orders.ready_url == "http://127.0.0.1:9/o/ready"
    assert [r.text for r in orders.forgery_routes] == ["GET /v2/orders", "DELETE /v2/orders/1"]
    assert orders.cache.kind == "prometheus" and orders.cache.queries["empty"] == "c == 0"
    assert [r.text for r in billing.forgery_routes] == ["DELETE /b/1"]  # FORGERY_ROUTES over the description
    assert billing.cache.words == {"fresh": ("ok", "good"), "expired": ("failed",)}
    assert billing.cache.state_of("good") == "fresh" and billing.cache.age_field == "jwks.age"
    assert back.audit.fields["service"] == "svc.name" and back.audit.action("recovered") == ""
    assert back.audit.fields["tenant"] == "tenant"  # a field not mapped keeps chaosext's name
    assert back.backend_insecure == ("alertmanager", "clickhouse") and back.tenants == ("a01", "a02", "a03")
    assert back.backend_ca_bundles == {"prometheus": "/etc/ssl/prom-ca.pem", "loki": "/etc/ssl/loki-ca.pem"}
    assert back.metrics.unverified_accepts == "" and back.token.auth_method == "client_secret_post"
    assert back.fault.items == ("tenancy/app=policy",) and back.run_dir == "/var/tmp/chaosext-runs/0a1b2c3d"
    assert ExperimentConfig.from_json({"outage_seconds": 42, "no_such_setting": 1}) == dataclasses.replace(
        default, outage_seconds=42)  # unknown keys ignored, missing ones default


def test_a_described_target_reads_back_the_same_without_a_json_file(tmp_path: Path) -> None:
    """run_context rebuilds the settings from ``to_json()`` in memory (no JSON text in between: dataclasses.asdict
    keeps tuples): a service's routes must come back as routes, not as dicts (k6's load plan reads ``route.method``)."""
    target = tmp_path / "target.json"
    target.write_text(json.dumps({"version": 1, "services": {"orders": {
        "url": "http://127.0.0.1:8081", "routes": [{"method": "GET", "path": "/v2/orders", "weight": 9},
                                                    {"method": "POST", "path": "/v2/orders", "body": {"sku": "x"}}]}}}))
    cfg = load_config({"chaosext_lab_dir": str(tmp_path / "nolab"), "target_file": str(target)})
    back = ExperimentConfig.from_json(cfg.to_json())
    assert back == cfg
    assert [r.text for r in back.services["orders"].routes] == ["GET /v2/orders", "POST /v2/orders"]
