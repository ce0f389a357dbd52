"""The shipped alert rules, loaded by the lab's Prometheus (lab `for:` cap 10 s), fire on real lab conditions and reach
the lab's Alertmanager; and the JWKS alert stays silent while a service serves stale keys within max-stale.

JWKS outage without iptables: the Authority process is SIGSTOPped (connections hang like a DROP), and SIGCONTed in
teardown before the lab is stopped.
"""

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from chaosext.core.config import DEFAULT_ALERTS
from tests.traffic import Pump, service_urls, token

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.slow]


def prometheus_alerts(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Prometheus GET /api/v1/alerts: pending and firing alerts."""
    return requests.get(state["prometheus_url"] + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]


def alertmanager_alerts(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Alertmanager GET /api/v2/alerts: alerts it has received and holds active."""
    return requests.get(state["alertmanager_url"] + "/api/v2/alerts", timeout=5).json()


def matching(alerts: list[dict[str, Any]], name: str, **labels: str) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("alertname") == name
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll check() every second until it returns something truthy; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1)


def firing_everywhere(state: dict[str, Any], name: str, **labels: str) -> Callable[[], bool]:
    """True once the alert is firing in Prometheus and active in Alertmanager."""
    def check() -> bool:
        prom = [a for a in matching(prometheus_alerts(state), name, **labels) if a["state"] == "firing"]
        am = [a for a in matching(alertmanager_alerts(state), name, **labels) if a["status"]["state"] == "active"]
        return bool(prom and am)
    return check


def test_one_tenant_over_its_rate_limit_fires_tenant_rate_limit_exceeded(
        lab_factory: Callable[..., dict[str, Any]]) -> None:
    state = lab_factory(services="policy", rate_limit=2, rate_burst=2)
    base = service_urls(state)["policy"]
    greedy, polite = token(state, "t01"), token(state, "t02")
    with Pump(base, "/api/v1/policies", "t01", greedy, rps=30) as hog, \
            Pump(base, "/api/v1/policies", "t02", polite, rps=1) as ok:
        wait_for("tenant_rate_limit_exceeded{tenant=t01} firing in Prometheus and in Alertmanager",
                 firing_everywhere(state, "tenant_rate_limit_exceeded", tenant="t01", service="policy"), 60)
        others = [a["labels"] for a in prometheus_alerts(state) if a["labels"].get("tenant") == "t02"]
    assert hog.statuses.get(429, 0) > hog.statuses.get(200, 0), hog.statuses
    assert ok.statuses.get(429, 0) == 0 and ok.statuses.get(200, 0) > 0, ok.statuses
    assert others == [], f"the tenant within its limit must not alert: {others}"


def _jwks_state(base: str) -> dict[str, Any]:
    return requests.get(base + "/healthz", timeout=3).json()["jwks"]


def test_jwks_alerts_silent_while_stale_and_fire_once_the_cache_expired(
        lab_factory: Callable[..., dict[str, Any]]) -> None:
    state = lab_factory(services="policy", jwks_ttl=2, jwks_max_stale=16)
    base = service_urls(state)["policy"]
    authority_pid = state["components"]["authority"]["pid"]
    jwt = token(state, "t01")
    jwks_alerts = ("jwks_cache_miss_spike", "tenant_error_rate_gt_0_5pct", "tenant_auth_failures_spike")
    expiry_alerts = DEFAULT_ALERTS  # what the experiment expects on expiry (EXPIRY_ALERTS default)
    with Pump(base, "/api/v1/policies", "t01", jwt, rps=30) as pump:
        wait_for("requests succeeding", lambda: pump.statuses.get(200, 0) > 30, 20)
        os.kill(authority_pid, signal.SIGSTOP)  # the JWKS endpoint stops answering (connections hang)
        try:
            # Stale for (max_stale - ttl) = 14 s, longer than the lab's 10 s `for:`: a rule that fired on stale
            # keys would be pending or firing by now. Serving stale keys is the intended degradation: silence.
            wait_for("the cache serving stale keys for 12 s",
                     lambda: (lambda j: j["state"] == "stale" and j["age_seconds"] >= 14)(_jwks_state(base)), 30)
            during_stale = [a["labels"] for a in prometheus_alerts(state) if a["labels"]["alertname"] in jwks_alerts]
            failures_while_stale = sum(n for code, n in pump.statuses.items() if code != 200)
            wait_for("the cache to expire", lambda: _jwks_state(base)["state"] == "expired", 15)
            for name in expiry_alerts:
                labels = {"service": "policy"} | ({"tenant": "t01"} if name.startswith("tenant_") else {})
                wait_for(f"{name} {labels} firing in Prometheus and in Alertmanager",
                         firing_everywhere(state, name, **labels), 45)
            # an expired cache is the service's failure (401 no_keys), not the tenant's own tokens
            own_tokens = matching(prometheus_alerts(state), "tenant_auth_failures_spike")
        finally:
            os.kill(authority_pid, signal.SIGCONT)
    assert during_stale == [], f"alerts while the service served stale keys within max-stale: {during_stale}"
    assert failures_while_stale == 0, pump.statuses
    assert pump.statuses.get(401, 0) > 0, pump.statuses
    assert own_tokens == [], f"the tenant's-own-tokens alert fired on a JWKS expiry: {own_tokens}"


def _rejections_labelled(base: str, tenant: str) -> bool:
    """Does the service count 401s under the tenant's own label (``tenant_requests_total{status="401"}``)?"""
    text = requests.get(base.split("/api/")[0] + "/metrics", timeout=5).text
    return any(s.labels.get("tenant") == tenant and s.labels.get("status") == "401"
               for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "tenant_requests_total")


def test_a_tenants_expired_tokens_fire_its_own_alert_not_the_slo_alert(
        lab_factory: Callable[..., dict[str, Any]]) -> None:
    """A tenant whose client keeps sending an expired (genuine) token: tenant_auth_failures_spike fires for that
    tenant and unauthenticated_requests_spike for the service, the SLO alert stays silent for everyone (D1)."""
    state = lab_factory(services="policy")
    base = service_urls(state)["policy"]
    expired = token(state, "t02", ttl=1)
    time.sleep(2.5)
    with Pump(base, "/api/v1/policies", "t01", token(state, "t01"), rps=10) as ok, \
            Pump(base, "/api/v1/policies", "t02", expired, rps=20) as broken:
        wait_for("t02's first rejections", lambda: broken.statuses.get(401, 0) > 5, 20)
        if _rejections_labelled(base, "t02"):
            pytest.xfail("the services still label a tenant's own rejected tokens with the tenant instead of "
                         "__unauthenticated__ (D1's service label change is not in this tree)")
        wait_for("tenant_auth_failures_spike{tenant=t02} firing in Prometheus and in Alertmanager",
                 firing_everywhere(state, "tenant_auth_failures_spike", tenant="t02", service="policy"), 60)
        wait_for("unauthenticated_requests_spike{service=policy} firing in Prometheus and in Alertmanager",
                 firing_everywhere(state, "unauthenticated_requests_spike", service="policy"), 60)
        slo = matching(prometheus_alerts(state), "tenant_error_rate_gt_0_5pct")
        others = [a["labels"] for a in matching(prometheus_alerts(state), "tenant_auth_failures_spike")
                  if a["labels"].get("tenant") != "t02"]
    assert broken.statuses.get(401, 0) > 0 and set(broken.statuses) == {401}, broken.statuses
    assert ok.statuses.get(200, 0) > 0 and set(ok.statuses) == {200}, ok.statuses
    assert slo == [], f"a tenant's own expired tokens must not page the SLO alert: {slo}"
    assert others == [], others
