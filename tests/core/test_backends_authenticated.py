"""The lab's real Prometheus and Alertmanager behind authenticating reverse proxies on loopback (Prometheus: HTTPS with
a test CA, a bearer token and X-Scope-OrgID as Mimir/Cortex want; Alertmanager: HTTP Basic). With the credentials in
the experiment's secrets the pre-flight check and the probes work; without them they fail saying what to give.
"""
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from chaosext.core import backends
from chaosext.metrics import prom
from chaosext.metrics.probes import jwks_cache_expired
from chaosext.outage.evidence import query_ranges
from chaosext.safety.controls import check_configuration
from tests.core.authproxy import AuthProxy, make_ca

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

TOKEN, ORG = "prom-test-token", "team-a"
AM_USER, AM_PASS = "am-user", "am p@ss"
SECRETS = {"chaosext": {"prometheus_bearer_token": TOKEN, "prometheus_headers": '{"X-Scope-OrgID": "team-a"}',
                        "alertmanager_username": AM_USER, "alertmanager_password": AM_PASS}}


@pytest.fixture(scope="module")
def proxies(lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    deadline = time.monotonic() + 60  # a fresh lab: wait for Prometheus' first scrape
    while time.monotonic() < deadline and not requests.get(lab["prometheus_url"] + "/api/v1/query",
                                                           params={"query": "up"}, timeout=5).json()["data"]["result"]:
        time.sleep(0.5)
    tls = make_ca(tmp_path_factory.mktemp("ca"))
    basic = "Basic " + base64.b64encode(f"{AM_USER}:{AM_PASS}".encode()).decode()
    with AuthProxy(lab["prometheus_url"], {"Authorization": f"Bearer {TOKEN}", "X-Scope-OrgID": ORG}, tls) as p, \
            AuthProxy(lab["alertmanager_url"], {"Authorization": basic}) as a:
        yield {"prometheus": p, "alertmanager": a, "ca": str(tls["ca"])}


@pytest.fixture(autouse=True)
def fresh_registration() -> Iterator[None]:
    backends.reset()
    yield
    backends.reset()


def configuration(lab: dict[str, Any], proxies: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return {"prometheus_url": proxies["prometheus"].url, "alertmanager_url": proxies["alertmanager"].url,
            "prometheus_ca_bundle": proxies["ca"], "chaosext_lab_dir": lab["state_dir"],
            "chaosext_run_dir": str(tmp_path / "run"),
            "chaosext_allow_http": "true"}  # the Alertmanager gateway here is plain http (Prometheus' is https)


def test_with_credentials_the_preflight_and_the_probes_read_through_the_gateways(
        lab: dict[str, Any], proxies: dict[str, Any], tmp_path: Path) -> None:
    cfg = configuration(lab, proxies, tmp_path)
    backends.register(cfg, SECRETS)  # what the safety control does before anything else
    before = proxies["prometheus"].forwarded
    problems = [p for p in check_configuration(cfg) if "PROMETHEUS" in p or "ALERTMANAGER" in p]
    assert problems == []
    assert jwks_cache_expired(configuration=cfg, secrets=SECRETS) == {"phase": "before-fault", "expired": []}
    # instant and range queries (prometheus-api-client; the range query as the report does) through the gateway; a
    # lab started a moment ago may hold no scrape yet, so wait until both see one
    deadline = time.time() + 30
    while True:
        now = time.time()
        instant, ranges = prom.query(cfg["prometheus_url"], "up"), query_ranges(cfg["prometheus_url"], now - 60, now,
                                                                                 {"up": "up"})
        if (instant and ranges["up"]) or time.time() > deadline:
            break
        time.sleep(1)
    assert instant and ranges["up"] and ranges["up"][0]["values"]
    assert isinstance(prom.prometheus_alerts(cfg["prometheus_url"]), list)
    assert isinstance(prom.alertmanager_alerts(cfg["alertmanager_url"]), list)
    assert proxies["prometheus"].forwarded > before and proxies["alertmanager"].forwarded > 0


def test_without_credentials_every_read_fails_saying_what_to_give(
        lab: dict[str, Any], proxies: dict[str, Any], tmp_path: Path) -> None:
    cfg = configuration(lab, proxies, tmp_path)
    backends.register(cfg, {"chaosext": {"prometheus_bearer_token": "", "alertmanager_password": ""}})
    problems = check_configuration(cfg)
    prom_problem = next(p for p in problems if p.startswith("PROMETHEUS_URL"))
    am_problem = next(p for p in problems if p.startswith("ALERTMANAGER_URL"))
    assert "401" in prom_problem and "prometheus_bearer_token" in prom_problem and "no credentials" in prom_problem
    assert "401" in am_problem and "alertmanager_username" in am_problem
    with pytest.raises(requests.RequestException, match="prometheus_bearer_token"):
        jwks_cache_expired(configuration=cfg)
    with pytest.raises(requests.RequestException, match="alertmanager_username"):
        prom.alertmanager_alerts(cfg["alertmanager_url"])


def test_a_wrong_token_is_refused_and_the_message_never_shows_it(
        lab: dict[str, Any], proxies: dict[str, Any], tmp_path: Path) -> None:
    cfg = configuration(lab, proxies, tmp_path)
    backends.register(cfg, {"chaosext": {"prometheus_bearer_token": "wrong-t0ken-value",
                                         "prometheus_headers": '{"X-Scope-OrgID": "team-a"}'}})
    with pytest.raises(requests.RequestException) as err:
        prom.query(cfg["prometheus_url"], "up")
    assert "401" in str(err.value) and "bearer token + headers X-Scope-OrgID" in str(err.value)
    assert "wrong-t0ken-value" not in str(err.value)


def test_tls_is_verified_against_the_ca_bundle(lab: dict[str, Any], proxies: dict[str, Any], tmp_path: Path) -> None:
    cfg = configuration(lab, proxies, tmp_path)
    del cfg["prometheus_ca_bundle"]  # the system CAs do not know the test CA
    backends.register(cfg, SECRETS)
    with pytest.raises(requests.RequestException, match="PROMETHEUS_CA_BUNDLE"):
        prom.query(cfg["prometheus_url"], "up")
    backends.register({**cfg, "prometheus_insecure": "true"}, SECRETS)  # the explicit opt-out still works
    assert prom.query(cfg["prometheus_url"], "up")


def test_backend_settings_are_checked_before_use() -> None:
    with pytest.raises(backends.BackendError, match="JSON object"):
        backends.register({}, {"chaosext": {"loki_headers": "X-Scope-OrgID: a"}})
    with pytest.raises(backends.BackendError, match="CLICKHOUSE_DATABASE"):
        backends.register({"clickhouse_database": "otel; DROP TABLE x"}, {})
    loki = backends.auth_for("loki", {"loki_tenant": "team-b"}, {"chaosext": {"loki_username": "u",
                                                                          "loki_password": "p"}})
    assert loki.headers == {"X-Scope-OrgID": "team-b"} and loki.basic == ("u", "p")
    ch = backends.auth_for("clickhouse", {"clickhouse_database": "audit"},
                           {"chaosext": {"clickhouse_user": "reader", "clickhouse_password": "pw"}})
    assert ch.headers == {"X-ClickHouse-User": "reader", "X-ClickHouse-Key": "pw", "X-ClickHouse-Database": "audit"}
    assert ch.database == "audit" and "pw" not in repr(ch)


def test_doctor_checks_the_backends_with_the_credentials_from_the_environment(
        proxies: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from chaosext.doctor import check_http

    url = proxies["prometheus"].url
    monkeypatch.setenv("PROMETHEUS_CA_BUNDLE", proxies["ca"])
    refused = check_http("prometheus", url, "/-/ready", "flag")
    assert not refused.ok and "401" in refused.detail and "PROMETHEUS_BEARER_TOKEN" in refused.fix
    monkeypatch.setenv("PROMETHEUS_BEARER_TOKEN", TOKEN)
    monkeypatch.setenv("PROMETHEUS_HEADERS", '{"X-Scope-OrgID": "team-a"}')
    assert check_http("prometheus", url, "/-/ready", "flag").ok
