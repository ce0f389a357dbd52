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
from chaosext.core.config import load_config
from chaosext.metrics import prom
from chaosext.metrics.checks import check_ready
from chaosext.outage.evidence import query_ranges
from chaosext.outage.hypothesis import expiry_alerts_clear
from chaosext.run.context import RunContext
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


def configuration(lab: dict[str, Any], proxies: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return {"prometheus_url": proxies["prometheus"].url, "alertmanager_url": proxies["alertmanager"].url,
            "prometheus_ca_bundle": proxies["ca"], "chaosext_lab_dir": lab["state_dir"],
            "chaosext_run_dir": str(tmp_path / "run"),
            "chaosext_allow_http": "true"}  # the Alertmanager gateway here is plain http (Prometheus' is https)


def context(conf: dict[str, Any], secrets: dict[str, Any] | None) -> RunContext:
    """An activity's view: the run's settings and the secrets Chaos Toolkit hands it (credentials built from them)."""
    return RunContext(load_config(conf), secrets)


def test_with_credentials_the_preflight_and_the_probes_read_through_the_gateways(
        lab: dict[str, Any], proxies: dict[str, Any], tmp_path: Path) -> None:
    conf = configuration(lab, proxies, tmp_path)
    ctx = context(conf, SECRETS)
    before = proxies["prometheus"].forwarded
    assert [f.sentence() for f in (check_ready(ctx, "prometheus"), check_ready(ctx, "alertmanager")) if not f.ok] \
        == []
    alerts = expiry_alerts_clear(configuration=conf, secrets=SECRETS)  # Prometheus' and Alertmanager's alerts
    assert alerts["phase"] == "baseline" and isinstance(alerts["active_alertmanager"], list)
    # instant and range queries (prometheus-api-client; the range query as the report does) through the gateway; a
    # lab started a moment ago may hold no scrape yet, so wait until both see one
    p = prom.prom_of(ctx)
    deadline = time.time() + 30
    while True:
        now = time.time()
        instant, ranges = prom.query(p, "up"), query_ranges(p, now - 60, now, {"up": "up"})
        if (instant and ranges["up"]) or time.time() > deadline:
            break
        time.sleep(1)
    assert instant and ranges["up"] and ranges["up"][0]["values"]
    assert isinstance(prom.prometheus_alerts(p), list)
    assert isinstance(prom.alertmanager_alerts(ctx.backend("alertmanager")), list)
    assert proxies["prometheus"].forwarded > before and proxies["alertmanager"].forwarded > 0


def test_without_credentials_every_read_fails_saying_what_to_give(
        lab: dict[str, Any], proxies: dict[str, Any], tmp_path: Path) -> None:
    conf = configuration(lab, proxies, tmp_path)
    empty = {"chaosext": {"prometheus_bearer_token": "", "alertmanager_password": ""}}
    ctx = context(conf, empty)
    prom_problem = check_ready(ctx, "prometheus").sentence()
    am_problem = check_ready(ctx, "alertmanager").sentence()
    assert "401" in prom_problem and "prometheus_bearer_token" in prom_problem and "no credentials" in prom_problem
    assert "401" in am_problem and "alertmanager_username" in am_problem
    with pytest.raises(requests.RequestException, match="prometheus_bearer_token"):
        expiry_alerts_clear(configuration=conf, secrets=empty)
    with pytest.raises(requests.RequestException, match="alertmanager_username"):
        prom.alertmanager_alerts(ctx.backend("alertmanager"))


def test_a_wrong_token_is_refused_and_the_message_never_shows_it(
        lab: dict[str, Any], proxies: dict[str, Any], tmp_path: Path) -> None:
    ctx = context(configuration(lab, proxies, tmp_path), {"chaosext": {
        "prometheus_bearer_token": "wrong-t0ken-value", "prometheus_headers": '{"X-Scope-OrgID": "team-a"}'}})
    with pytest.raises(requests.RequestException) as err:
        prom.query(prom.prom_of(ctx), "up")
    assert "401" in str(err.value) and "bearer token + headers X-Scope-OrgID" in str(err.value)
    assert "wrong-t0ken-value" not in str(err.value)


def test_tls_is_verified_against_the_ca_bundle(lab: dict[str, Any], proxies: dict[str, Any], tmp_path: Path) -> None:
    conf = configuration(lab, proxies, tmp_path)
    del conf["prometheus_ca_bundle"]  # the system CAs do not know the test CA
    with pytest.raises(requests.RequestException, match="PROMETHEUS_CA_BUNDLE"):
        prom.query(prom.prom_of(context(conf, SECRETS)), "up")
    insecure = context({**conf, "prometheus_insecure": "true"}, SECRETS)  # the explicit opt-out still works
    assert prom.query(prom.prom_of(insecure), "up")


def test_backend_settings_are_checked_before_use(tmp_path: Path) -> None:
    nolab = {"chaosext_lab_dir": str(tmp_path / "nolab")}
    with pytest.raises(backends.BackendError, match="JSON object"):
        backends.auth_for("loki", load_config(nolab), {"chaosext": {"loki_headers": "X-Scope-OrgID: a"}})
    with pytest.raises(backends.BackendError, match="CLICKHOUSE_DATABASE"):
        backends.auth_for("clickhouse", load_config({**nolab, "clickhouse_database": "otel; DROP TABLE x"}), {})
    loki = backends.auth_for("loki", load_config({**nolab, "loki_tenant": "team-b"}),
                             {"chaosext": {"loki_username": "u", "loki_password": "p"}})
    assert loki.headers == {"X-Scope-OrgID": "team-b"} and loki.basic == ("u", "p")
    ch = backends.auth_for("clickhouse", load_config({**nolab, "clickhouse_database": "audit"}),
                           {"chaosext": {"clickhouse_user": "reader", "clickhouse_password": "pw"}})
    assert ch.headers == {"X-ClickHouse-User": "reader", "X-ClickHouse-Key": "pw", "X-ClickHouse-Database": "audit"}
    assert ch.database == "audit" and "pw" not in repr(ch)


def test_doctor_checks_the_backends_with_the_credentials_from_the_environment(
        proxies: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = proxies["prometheus"].url
    monkeypatch.setenv("PROMETHEUS_CA_BUNDLE", proxies["ca"])

    def ready() -> Any:  # what `chaosext doctor` checks: no secrets handed in, the environment's credentials
        return check_ready(RunContext(load_config({"prometheus_url": url,
                                                   "chaosext_lab_dir": str(tmp_path / "nolab")})), "prometheus")

    refused = ready()
    assert not refused.ok and "401" in refused.detail and "PROMETHEUS_BEARER_TOKEN" in refused.fix
    monkeypatch.setenv("PROMETHEUS_BEARER_TOKEN", TOKEN)
    monkeypatch.setenv("PROMETHEUS_HEADERS", '{"X-Scope-OrgID": "team-a"}')
    assert ready().ok
