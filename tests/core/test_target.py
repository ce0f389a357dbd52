"""The target description (chaosext.core.target, docs/target.md): read_target reads the documented format and refuses
what it cannot use naming the key; load_config resolves every value configuration > environment > TARGET_FILE >
default; SERVICE_URLS and FORGERY_ROUTES act on the described services; the lab's own description is one like any
other. No network."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaosext.core.config import DEFAULT_ALERTS, ExperimentConfig, load_config, validate
from chaosext.core.errors import ConfigError
from chaosext.core.target import AuditMapping, CacheSignal, Route, TargetError, read_target
from chaosext.lab import target as lab_target
from chaosext.lab.plan import LabConfig
from tests.targetutil import description, target_config

ROOT = Path(__file__).resolve().parents[2]
#: the example of the working spec (TARGET_SPEC.md, issue 23), verbatim
SPEC_EXAMPLE = Path(__file__).parent / "data" / "target-spec-example.yaml"


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every setting comes from the test, whatever the shell running the tests exports."""
    for f in dataclasses.fields(ExperimentConfig):
        monkeypatch.delenv(f.name.upper(), raising=False)
    for name in ("SERVICE_URLS", "FORGERY_ROUTES", "TARGET_FILE", "CHAOSEXT_LAB_DIR", "CHAOSEXT_RUN_DIR",
                 "CHAOSEXT_RUN_ID", "TENANT_HEADER", "TOKEN_TENANT_PARAM", "METRIC_REQUESTS", "METRIC_TENANT_LABEL"):
        monkeypatch.delenv(name, raising=False)


def docs_example(tmp_path: Path) -> Path:
    """The first YAML block of docs/target.md, as a file."""
    page = (ROOT / "docs" / "target.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", page, re.S)
    assert block, "docs/target.md has no yaml example"
    path = tmp_path / "docs-example.yaml"
    path.write_text(block.group(1))
    return path


# ------------------------------------------------------------------------------------------------ reading the file
@pytest.mark.parametrize("source", ["spec", "docs"])
def test_the_documented_example_reads_as_written(source: str, tmp_path: Path) -> None:
    path = SPEC_EXAMPLE if source == "spec" else docs_example(tmp_path)
    doc = read_target(str(path))
    s = doc.settings
    assert (s["authority_url"], s["jwks_url"], s["audience"]) == (
        "http://10.77.0.2:3000", "http://10.77.0.2:3000/jwks", "https://orders.example")
    assert (s["token_auth_method"], s["token_tenant_param"], s["token_audience_param"]) == (
        "client_secret_basic", "", "resource")  # a present empty value is kept: it says "none"
    assert (s["jwks_ttl"], s["jwks_max_stale"], s["tenants"], s["tenant_header"]) == (
        60, 600, "acme,globex,initech", "X-Tenant-ID")
    assert (s["metric_requests"], s["metric_status_label"], s["metric_unverified_accepts"]) == (
        "http_request_duration_seconds_count", "status_code", "off")
    assert (s["expiry_alerts"], s["refused_statuses"], s["forgery_skip"]) == ("JwksKeysExpired", "401,403", "")
    assert s["audit_source"] == "file:/var/log/tenant-apis/audit.log"
    assert s["audit_logql"] == '{app=~"{services}"} | json'
    orders = doc.services["orders"]
    assert orders.url == "http://10.77.0.3:4000" and orders.ready_url == "http://10.77.0.3:4000/ready"
    assert orders.routes == (Route("GET", "/v2/orders", "", 9, "read"),
                             Route("POST", "/v2/orders", '{"sku":"x-1"}', 1, "write"))
    assert orders.probe_route == Route("GET", "/v2/orders")
    assert [r.text for r in orders.forgery_routes] == ["GET /v2/orders", "POST /v2/orders"]
    assert orders.cache.kind == "prometheus" and set(orders.cache.queries) == {"fresh", "stale", "expired"}
    assert orders.cache.queries["expired"] == 'jwks_keys_cached{app="orders"} == bool 0'
    assert doc.audit == AuditMapping(fields={"time": "time", "service": "svc", "action": "event", "tenant": "tenant"},
                                     actions={"degraded": "jwks.stale", "recovered": "jwks.recovered",
                                              "expired": "jwks.expired", "rejected": "token.rejected"})


def test_the_example_is_a_valid_run_target_in_yaml_and_in_json(tmp_path: Path) -> None:
    as_json = tmp_path / "target.json"
    as_json.write_text(json.dumps(yaml.safe_load(SPEC_EXAMPLE.read_text())))
    for path in (SPEC_EXAMPLE, as_json):
        cfg = load_config({"chaosext_lab_dir": str(tmp_path / "no-lab"), "target_file": str(path)})
        assert validate(cfg) == [], path
        assert cfg.token.tenant_param == "" and cfg.metrics.unverified_accepts == ""
        assert cfg.metrics.requests_selector().startswith('http_request_duration_seconds_count{tenant!~')
        assert cfg.expiry_alerts == ("JwksKeysExpired",) and cfg.audit.action("expired") == "jwks.expired"
        assert cfg.origins["jwks_url"] == "target file"


def _refusal(tmp_path: Path, doc: Any) -> str:
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(TargetError) as caught:
        read_target(str(path))
    assert str(path) in str(caught.value)  # it names the file
    return str(caught.value)


def _with(**changes: Any) -> dict[str, Any]:
    """The example with keys replaced by dotted path (``services.orders.routes``), a value of ... deletes it."""
    doc = yaml.safe_load(SPEC_EXAMPLE.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = doc
        for p in parents:
            node = node[p]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return doc


@pytest.mark.parametrize("changes, message", [
    ({"tenant_headers": "X-T"}, "tenant_headers is not a key of the target description"),
    ({"identity_provider__jwks_uri": "http://x"}, "identity_provider.jwks_uri is not a key"),
    ({"prometheus__metrics__request": "x_total"}, "prometheus.metrics.request is not a key"),
    ({"services__orders__rout": []}, "services.orders: unknown key(s) rout"),
    ({"audit__actions__degradated": "x"}, "audit.actions must map degraded, recovered, expired, rejected"),
    ({"version": 2}, "version 2 is not understood"),
])
def test_an_unknown_key_is_refused_naming_it(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    assert message in _refusal(tmp_path, _with(**changes))


@pytest.mark.parametrize("route, message", [
    ("FETCH /v2/orders", "services.orders.routes[1]: FETCH /v2/orders is not a route"),
    ("GET v2/orders", "services.orders.routes[1]: GET v2/orders is not a route"),
    ({"method": "GET"}, "services.orders.routes[1]: GET (no path) is not a route"),
    ({"method": "GET", "path": "/x", "weight": -1}, "services.orders.routes[1].weight=-1 must be a whole number"),
    ({"method": "GET", "path": "/x", "weight": "9"}, "services.orders.routes[1].weight='9'"),
    ({"method": "GET", "path": "/x", "kind": "both"}, "services.orders.routes[1].kind='both' must be read or write"),
    ({"method": "GET", "path": "/x", "headers": {}}, "services.orders.routes[1]: unknown key(s) headers"),
    (42, "services.orders.routes[1] must be 'METHOD /path' or a mapping"),
])
def test_a_bad_route_is_refused_naming_it(tmp_path: Path, route: Any, message: str) -> None:
    doc = _with(services__orders__routes=[{"method": "GET", "path": "/v2/orders"}, route])
    assert message in _refusal(tmp_path, doc)


def test_a_bad_probe_or_forgery_route_is_refused_naming_it(tmp_path: Path) -> None:
    assert "services.orders.probe: GET (no path) is not a route" in _refusal(tmp_path, _with(
        services__orders__probe="GET"))
    assert "services.orders.forgery_routes[1]: TRACE /x is not a route" in _refusal(tmp_path, _with(
        services__orders__forgery_routes=["GET /v2/orders", "TRACE /x"]))


@pytest.mark.parametrize("cache, message", [
    ({"statsd": {"fresh": "x"}}, "services.orders.cache must be one of"),
    ({"prometheus": {"fresh": "a"}, "http": {}}, "services.orders.cache must be one of"),
    ({"prometheus": {"warm": "a > 0"}}, "services.orders.cache.prometheus: give a PromQL expression per state of "
                                        "fresh, stale, expired, empty (warm is none)"),
    ({"prometheus": {}}, "services.orders.cache.prometheus: give a PromQL expression"),
    ({"prometheus": "a > 0"}, "services.orders.cache.prometheus must be a mapping"),
    ({"http": {"url": "http://x/h", "field": "s", "states": {"ok": ["fresh"]}}},
     "services.orders.cache.http.states must map fresh, stale, expired, empty"),
    ({"http": {"field": "s", "states": {"fresh": ["ok"]}}}, "services.orders.cache.http needs url (http(s)) and field"),
    ({"http": {"url": "http://x/h", "states": {"fresh": ["ok"]}}}, "services.orders.cache.http needs url"),
    ({"http": {"url": "http://x/h", "field": "s", "states": {"fresh": "ok"}, "agefield": "a"}},
     "services.orders.cache.http: unknown key(s) agefield"),
])
def test_a_bad_cache_signal_is_refused_naming_it(tmp_path: Path, cache: Any, message: str) -> None:
    assert message in _refusal(tmp_path, _with(services__orders__cache=cache))


def test_a_service_without_a_url_and_a_file_that_is_not_one_are_refused(tmp_path: Path) -> None:
    assert "services.orders.url='' must be the service's http(s) base URL" in _refusal(
        tmp_path, _with(services__orders__url=...))
    assert "services must name at least one service" in _refusal(tmp_path, _with(services={}))
    for text, message in (("- a\n- b\n", "must hold a mapping"), ("a: [", "is not YAML/JSON")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(TargetError, match=re.escape(message)):
            read_target(str(bad))
    with pytest.raises(TargetError, match="cannot read it"):
        read_target(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="cannot read it"):  # and a run with such a TARGET_FILE does not start
        load_config({"chaosext_lab_dir": str(tmp_path), "target_file": str(tmp_path / "missing.yaml")})


# ------------------------------------------------------------------------------------------------ precedence
def test_each_value_configuration_over_environment_over_file_over_default(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    doc = description(tenant_header="X-File", prometheus={"url": "http://127.0.0.1:9", "metrics": {
        "requests": "file_requests_total"}})
    conf = target_config(tmp_path, doc)
    cfg = load_config(conf)
    assert (cfg.tenant_header, cfg.metrics.requests, cfg.outage_seconds) == ("X-File", "file_requests_total", 300)
    assert (cfg.origins["tenant_header"], cfg.origins["metric_requests"], cfg.origins["outage_seconds"]) == (
        "target file", "target file", "default")
    assert cfg.metrics.status_label == "status"  # the file says nothing: the default
    monkeypatch.setenv("TENANT_HEADER", "X-Env")
    monkeypatch.setenv("METRIC_REQUESTS", "env_requests_total")
    cfg = load_config(conf)
    assert (cfg.tenant_header, cfg.metrics.requests) == ("X-Env", "env_requests_total")
    assert (cfg.origins["tenant_header"], cfg.origins["metric_requests"]) == ("env", "env")
    cfg = load_config({**conf, "tenant_header": "X-Conf", "metric_requests": "conf_requests_total"})
    assert (cfg.tenant_header, cfg.metrics.requests) == ("X-Conf", "conf_requests_total")
    assert cfg.origins["tenant_header"] == "configuration"
    monkeypatch.setenv("TARGET_FILE", conf["target_file"])  # the file named by the environment reads the same
    monkeypatch.delenv("TENANT_HEADER")
    assert load_config({"chaosext_lab_dir": conf["chaosext_lab_dir"]}).tenant_header == "X-File"


def test_a_present_empty_value_in_the_file_says_none_and_beats_the_default(tmp_path: Path) -> None:
    doc = description(expiry_alerts=[], tenant_header="",
                      prometheus={"url": "http://127.0.0.1:9", "metrics": {"tenant_label": "none"}})
    doc["identity_provider"]["token"]["tenant_param"] = ""
    cfg = load_config(target_config(tmp_path, doc))
    assert cfg.expiry_alerts == () and ExperimentConfig().expiry_alerts == DEFAULT_ALERTS
    assert cfg.token.tenant_param == "" and cfg.metrics.tenant_label == "" and cfg.tenant_header == ""
    assert cfg.origins["expiry_alerts"] == cfg.origins["token_tenant_param"] == "target file"
    without = description()
    del without["identity_provider"]["token"]["tenant_param"]
    cfg = load_config(target_config(tmp_path / "other", without))
    assert cfg.token.tenant_param == "tenant" and cfg.expiry_alerts == DEFAULT_ALERTS  # absent: the default


def test_none_in_a_setting_empties_what_the_file_gives(tmp_path: Path) -> None:
    doc = description()
    doc["identity_provider"]["token"]["tenant_param"] = "org"
    conf = target_config(tmp_path, doc)
    assert load_config(conf).token.tenant_param == "org"
    cfg = load_config({**conf, "token_tenant_param": "none", "tenant_header": "none"})
    assert (cfg.token.tenant_param, cfg.tenant_header) == ("", "")


def test_service_urls_picks_described_services_keeping_their_routes_and_signals(tmp_path: Path) -> None:
    conf = target_config(tmp_path, service_urls="billing=http://10.0.0.2:8080/")
    cfg = load_config(conf)
    assert list(cfg.services) == ["billing"]  # orders is described, but not driven in this run
    described = read_target(conf["target_file"]).services["billing"]
    assert cfg.services["billing"] == dataclasses.replace(described, url="http://10.0.0.2:8080")
    assert cfg.services["billing"].cache.kind == "http" and cfg.services["billing"].routes
    assert validate(cfg) == []


def test_service_urls_with_a_name_the_target_does_not_describe_is_refused(tmp_path: Path) -> None:
    cfg = load_config(target_config(tmp_path, service_urls="orders=http://10.0.0.1,shop=http://10.0.0.3"))
    shop = cfg.services["shop"]
    assert (shop.routes, shop.probe_route, shop.forgery_routes, shop.cache) == ((), None, (), CacheSignal())
    assert cfg.services["orders"].routes  # the described one keeps its routes
    assert validate(cfg) == ["service shop has no routes: describe what to drive in TARGET_FILE's "
                             "services.shop.routes (docs/target.md)"]


def test_forgery_routes_override_the_described_ones_and_refuse_an_unknown_service(tmp_path: Path) -> None:
    conf = target_config(tmp_path)
    cfg = load_config(conf)
    assert [r.text for r in cfg.services["orders"].forgery_routes] == ["GET /v2/orders", "POST /v2/orders"]
    cfg = load_config({**conf, "forgery_routes": "orders=DELETE /v2/orders/1|GET /v2/orders/2"})
    assert [r.text for r in cfg.services["orders"].forgery_routes] == ["DELETE /v2/orders/1", "GET /v2/orders/2"]
    assert [r.text for r in cfg.services["billing"].forgery_routes] == ["GET /invoices"]  # not named: the default
    with pytest.raises(ConfigError, match="FORGERY_ROUTES names service 'shop', which the target does not have; use "
                                          "one of orders, billing"):
        load_config({**conf, "forgery_routes": "shop=GET /x"})


def test_the_probe_never_picks_a_route_with_a_placeholder(tmp_path: Path) -> None:
    doc = description(services={"items": {"url": "http://127.0.0.1:9", "routes": [
        "GET /items/{id}", "POST /items", "PUT /items/{id}", "GET /items", "DELETE /items"]}})
    svc = load_config(target_config(tmp_path, doc)).services["items"]
    assert svc.probe_route == Route("GET", "/items")
    assert [r.text for r in svc.forgery_routes] == ["GET /items", "POST /items"]
    only_templated = description(services={"items": {"url": "http://127.0.0.1:9", "routes": ["GET /items/{id}"]}})
    cfg = load_config(target_config(tmp_path / "t2", only_templated))
    assert cfg.services["items"].probe_route is None
    assert any("service items has no read route for the valid-token probe" in p for p in validate(cfg))


# ------------------------------------------------------------------------------------------------ the lab's own
def test_the_labs_description_reads_like_any_other(tmp_path: Path) -> None:
    cfg = LabConfig(state_dir=str(tmp_path / "lab"), tenants="t01,t02")
    cfg.state_path.mkdir(parents=True)
    comps = {name: {"url": f"http://127.0.0.1:{8451 + i}", "health": f"http://127.0.0.1:{8451 + i}/healthz"}
             for i, name in enumerate(cfg.services)}
    comps["prometheus"] = {"url": "http://127.0.0.1:9490"}
    path = lab_target.write(cfg, comps)
    assert path.stat().st_mode & 0o777 == 0o600
    doc = read_target(str(path))
    assert set(doc.services) == set(cfg.services) and doc.settings["tenants"] == "t01,t02"
    for svc in doc.services.values():
        assert svc.probe_route is not None and not svc.probe_route.templated and svc.probe_route.method == "GET"
        assert {r.kind for r in svc.routes} == {"read", "write"} and any(r.templated for r in svc.routes)
        assert svc.cache.kind == "http" and svc.cache.state_of("stale") == "stale"
    assert doc.settings["prometheus_url"] == "http://127.0.0.1:9490" and "alertmanager_url" not in doc.settings
