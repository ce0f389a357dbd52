"""End to end with FAULT_VIA=envoy: `chaos run experiments/jwks-outage.json` against `chaosext lab up --egress envoy`.

The services fetch the JWKS through the lab's real Envoy; the experiment switches the Envoy fault filter on through
the admin API (FAULT_TARGET = the lab's admin URL, accepted as a lab target without CHAOSEXT_APPROVE) while k6 drives
traffic. Short timings as in tests/experiment (TTL 3 s, 15 s outage). After each run no chaosext runtime key may be
left in the lab's Envoy.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.egress.envoy_util import require_envoy
from tests.experiment.experiment_util import ExperimentRunner

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.slow, pytest.mark.netns]


@pytest.fixture(autouse=True)
def _envoy() -> None:
    require_envoy()


def chaosext_keys(experiment: ExperimentRunner, admin: str) -> dict:
    """The chaosext runtime keys the lab's Envoy holds (read from inside the test's namespace)."""
    code = ("import sys, json, requests; print(json.dumps(requests.get(sys.argv[1] + '/runtime', timeout=5)"
            ".json()['entries']))")
    out = subprocess.run(experiment.netns.prefix + [sys.executable, "-c", code, admin], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return {k: v for k, v in json.loads(out).items() if k.startswith("chaosext.")}


def run_envoy(experiment: ExperimentRunner, lab: dict, **extra: str):
    env = {"FAULT_VIA": "envoy", "FAULT_TARGET": lab["envoy_admin_url"], "OUTAGE_SECONDS": "15", **extra}
    out = experiment.run(lab, **env)
    assert chaosext_keys(experiment, lab["envoy_admin_url"]) == {}, "the Envoy fault was left on"
    assert experiment.netns.get(lab["jwks_url"]) == 200
    return out


def _failing(out) -> set[str]:
    for r in out.journal.get("run") or []:
        res = r.get("output")
        if isinstance(res, dict) and isinstance(res.get("checks"), dict):
            return {n for n, c in res["checks"].items() if not c.get("ok")}
    raise AssertionError(f"no judge-outage output:\n{out.output[-3000:]}")


def test_healthy_lab_behind_envoy_passes(experiment, lab_factory):
    """reject: Envoy answers the services' fetches 503 at once; they keep serving their cached keys."""
    mode = "reject"
    lab = lab_factory(egress="envoy", jwks_ttl=3, jwks_max_stale=120)
    out = run_envoy(experiment, lab, FAULT_MODE=mode)
    assert out.verdict_rc == 0, out.verdict_out + out.output[-3000:]
    assert not _failing(out)
    block = next(r["output"] for r in out.journal["run"] if r["activity"]["name"] == "block-jwks-egress")
    assert block["via"] == "envoy" and block["target"] == lab["envoy_admin_url"] and block["mode"] == mode
    # the services were really cut off (they served stale keys) and this host saw the JWKS blocked through Envoy
    states = {s["state"] for obs in out.run["observations"] for s in obs["services"].values()}
    assert "stale" in states
    assert all(obs["fault_holds"] for obs in out.run["observations"]) and out.check("outage-held")["ok"]
    assert out.check("auth-degraded-audited")["affected"] == sorted(lab["service_urls"])


def test_fail_open_behind_envoy_fails_no_fail_open(experiment, lab_factory):
    """drop (the default mode): the fetches hang in Envoy; a service that accepts what it cannot verify is caught."""
    lab = lab_factory(egress="envoy", jwks_ttl=3, jwks_max_stale=120, fail_open=True)
    out = run_envoy(experiment, lab, FAULT_MODE="drop")
    assert out.verdict_rc == 1, out.verdict_out
    assert "no-fail-open" in _failing(out)
    assert out.check("no-fail-open")["accepted_count"] > 0


def test_cache_expiry_behind_envoy_fails_on_error_rate_while_alerts_fire(experiment, lab_factory):
    """Outage longer than max-stale through Envoy: as with iptables, the services fail closed (a true finding), the
    verdict fails on the server error rate and the expiry alerts fire (timings of tests/experiment)."""
    lab = lab_factory(egress="envoy", jwks_ttl=3, jwks_max_stale=6)
    out = run_envoy(experiment, lab, FAULT_MODE="reject", OUTAGE_SECONDS="18", ABORT_ERROR_RATE="2",
                    TENANTS="t01,t02", K6_RATE="150")
    assert out.verdict_rc == 1, out.verdict_out
    failing = _failing(out)
    assert "server-error-rate-below-max" in failing
    alerts = out.check("alerts-fire-iff-cache-expired")
    assert "alerts-fire-iff-cache-expired" not in failing, alerts
    assert alerts["cache_expired"] is True


def test_a_service_validated_by_envoy_jwt_authn_fails_the_outage_the_services_survive(experiment, lab_factory):
    """policy behind Envoy's jwt_authn (cache_duration = jwks-ttl 3 s; Envoy has no stale fallback), the services'
    own caches good for 120 s, 15 s outage: the services serve stale keys, but the gateway answers valid tokens 401
    ("Jwks remote fetch is failed") once its cache lapses. The verdict fails and names the cached-key fallback, for
    policy only, and the client-side (k6) error rate."""
    lab = lab_factory(egress="envoy", envoy_jwt_service="policy", jwks_ttl=3, jwks_max_stale=120)
    out = run_envoy(experiment, lab, FAULT_MODE="reject")
    assert out.verdict_rc == 1, out.verdict_out
    failing = _failing(out)
    assert {"cached-key-fallback", "client-error-rate-below-max"} <= failing, out.verdict_out
    fallback = out.check("cached-key-fallback")
    assert {f["service"] for f in fallback["failures"]} == {"policy"}
    assert {f["status"] for f in fallback["failures"]} == {401}
    assert "no-fail-open" not in failing and "alerts-fire-iff-cache-expired" not in failing
