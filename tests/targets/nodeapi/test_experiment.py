"""`chaos run experiments/jwks-outage.json` on the shop target (not the lab): configured only by its description
(TARGET_FILE), its per-tenant client credentials (TOKEN_CLIENTS) and the approval of its JWKS host, as a team with
its own services would run it (docs/own-services.md).

- the healthy target passes (`chaosext verdict` exit 0): test_walkthrough.py runs it through the commands of
  docs/own-services.md, and the counter-reset test below is a healthy run too;
- a service started with ``--fail-open`` fails the run, and ``no-fail-open`` is the check that says so;
- a service whose cache drops its keys on the first failed fetch (``--drop-keys-on-failure``, jwks-rsa before #502)
  fails the outage at ``cached-key-fallback``: valid tokens refused while the cache was within the lifetime the
  target promises (max-stale), although nothing was forged and the expiry alert told the truth;
- a service restarted just before the baseline (its counters back to 0) does not fail a healthy run.

Every run happens inside the target's apps namespace, where the fault (real iptables, FAULT_TARGET=local) can cut
the services off the IdP's address and nothing else; the runner removes every fault and checks no rule is left.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.experiment.experiment_util import ExperimentRunner, Outcome, needs_root_iptables, wait_for
from tests.targets.nodeapi.shoputil import SHOP_ENV, InNetns
from tests.targets.nodeapi.target import IDP_ADDR, Target

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.slow]


def shop_settings(shop: Target) -> dict[str, str]:
    """What a team sets besides its description: where it is, the clients' credentials, the approval, and (its
    services answer plain http in a namespace of this test's own) that credentials may go over http."""
    return {"TARGET_FILE": str(shop.description_file), "TOKEN_CLIENTS": json.dumps(shop.token_clients()),
            "CHAOSEXT_APPROVE": IDP_ADDR, "CHAOSEXT_ALLOW_HTTP": "true"}


@pytest.fixture
def shop_runner(tmp_path: Path, shop: Target) -> Iterator[ExperimentRunner]:
    """Runs the experiment in the shop's namespace; every fault it made is removed and checked gone afterwards."""
    needs_root_iptables()
    runner = ExperimentRunner(tmp_path, shop, base_env=SHOP_ENV)
    try:
        yield runner
    finally:
        left = runner.cleanup()
        assert not left, f"chaosext rules left behind: {left}"


def verdict(outcome: Outcome) -> tuple[int, str]:
    """(verdict exit code, what to show when it is not the expected one): the verdict and the run's output, never
    the Outcome itself (its env holds the clients' secrets)."""
    return outcome.verdict_rc, outcome.verdict_out + outcome.output[-4000:]


def judged(outcome: Outcome) -> dict[str, bool]:
    """{outage check: ok} of the run's judge-outage step."""
    return {name: bool(outcome.check(name).get("ok")) for name in
            ("outage-held", "cached-key-fallback", "no-fail-open", "server-error-rate-below-max",
             "client-error-rate-below-max", "auth-degraded-audited", "alerts-fire-iff-cache-expired")}


def test_counter_reset_just_before_the_baseline_does_not_fail_a_healthy_run(
        shop: Target, shop_ns: InNetns, shop_runner: ExperimentRunner, shop_variant: Callable[..., Target]) -> None:
    # orders counts some traffic, Prometheus scrapes it, then orders restarts with its counters at 0: the baseline
    # window (the last BASELINE_SECONDS, judged as soon as k6 has warmed it up) starts before the reset
    doc = json.loads(shop.description_file.read_text())
    orders, m = doc["services"]["orders"], doc["prometheus"]["metrics"]
    client = shop.token_clients()["globex"]
    tok = shop_ns.request("POST", f"{doc['identity_provider']['authority_url']}/token",
                          data={"grant_type": "client_credentials"},
                          auth=(client["client_id"], client["client_secret"])).json()["access_token"]
    for _ in range(300):
        shop_ns.request("GET", orders["url"] + "/v2/orders",
                        headers={"Authorization": f"Bearer {tok}", "X-Tenant-ID": "globex"})
    counted = f'sum({m["requests"]}{{service="orders",tenant="globex"}})'
    assert wait_for(lambda: float((shop_ns.prom(doc["prometheus"]["url"], counted) or [{"value": [0, 0]}])[0]
                                  ["value"][1]) >= 300, 20)
    shop_variant(orders=[])
    outcome = shop_runner.run(None, **shop_settings(shop))
    rc, shown = verdict(outcome)
    assert rc == 0, shown


def test_fail_open_fails_naming_no_fail_open(shop: Target, shop_runner: ExperimentRunner,
                                             shop_variant: Callable[..., Target]) -> None:
    shop_variant(orders=["--fail-open"])
    outcome = shop_runner.run(None, **shop_settings(shop))
    rc, shown = verdict(outcome)
    assert rc == 1, shown
    checks = judged(outcome)
    assert not checks["no-fail-open"], checks
    assert "no-fail-open" in outcome.verdict_out
    assert "orders" in str(outcome.check("no-fail-open"))
    assert checks["cached-key-fallback"], checks  # valid tokens were fine: it is the forgeries that got in


def test_drop_keys_on_failure_fails_the_outage_at_cached_key_fallback(
        shop: Target, shop_runner: ExperimentRunner, shop_variant: Callable[..., Target]) -> None:
    shop_variant(billing=["--drop-keys-on-failure"])
    outcome = shop_runner.run(None, **shop_settings(shop))
    rc, shown = verdict(outcome)
    assert rc == 1, shown
    checks = judged(outcome)
    assert not checks["cached-key-fallback"], checks
    assert "billing" in str(outcome.check("cached-key-fallback"))
    assert "cached-key-fallback" in outcome.verdict_out
    # not a fail-open, and the target's expiry alert fired for the cache that really expired
    assert checks["no-fail-open"], checks
    assert checks["alerts-fire-iff-cache-expired"], checks


def baseline_forgery(outcome: Outcome) -> dict[str, Any]:
    """The baseline's forged-tokens-refused result (the steady-state hypothesis before the fault)."""
    before = outcome.journal.get("steady_states", {}).get("before") or {}
    for probe in before.get("probes") or []:
        if probe.get("activity", {}).get("name") == "forged-tokens-refused":
            return dict(probe.get("output") or {})
    raise AssertionError(f"no baseline forged-tokens-refused in the journal: {outcome.output[-2000:]}")


def test_doctor_says_which_claim_classes_this_idp_lets_the_run_try(shop: Target, shop_runner: ExperimentRunner) -> None:
    # the description names another API of the IdP (other_audience): a real token for it is the wrong-aud forgery
    rc, out = shop_runner.doctor(None, **shop_settings(shop))
    assert rc == 0, out
    line = next(ln for ln in out.splitlines() if "claim classes" in ln)
    assert "1 of 7 IdP-signed claim classes can be tried on this IdP: wrong-aud (TOKEN_OTHER_AUDIENCE=" in line, line
    assert "expired" in line  # skipped, named
    # another audience this IdP does not serve is refused before anything changes, by doctor as by the run
    bad = {**shop_settings(shop), "TOKEN_OTHER_AUDIENCE": "https://nowhere.shop.example"}
    rc, out = shop_runner.doctor(None, **bad)
    assert rc != 0 and "the IdP gave no token for TOKEN_OTHER_AUDIENCE=https://nowhere.shop.example" in out, out


def test_a_service_that_skips_the_audience_check_fails_on_a_real_idps_token_for_another_api(
        shop: Target, shop_runner: ExperimentRunner, shop_variant: Callable[..., Target]) -> None:
    # billing verifies signature, issuer and expiry but is not given the audience (jsonwebtoken without `audience`):
    # the IdP's own token for the reports API is let in. No lab minting: the token is oidc-provider's, as issued.
    shop_variant(billing=["--any-audience"])
    outcome = shop_runner.run(None, **shop_settings(shop))
    rc, shown = verdict(outcome)
    assert rc == 1, shown
    assert "SECURITY" in outcome.verdict_out and "wrong-aud" in outcome.verdict_out, shown
    forged = baseline_forgery(outcome)
    accepted = {(a["class"], a["service"]) for a in forged.get("accepted") or []}
    assert ("wrong-aud", "billing") in accepted and all(c == "wrong-aud" for c, _ in accepted), forged
    assert forged["idp_sources"]["wrong-aud"].startswith("TOKEN_OTHER_AUDIENCE=")
    assert "FORGERY_TOKENS_FILE" in forged["skipped"]["expired"]  # what would let it be tried here
    assert not (outcome.run.get("outage") or {}).get("start"), "a forgery let in before the fault stops the run there"


def test_a_declared_latency_slo_catches_jwks_libraries_that_fetch_on_the_request_path(
        shop: Target, shop_runner: ExperimentRunner) -> None:
    # jose's createRemoteJWKSet (orders) and jwks-rsa (billing) fetch the JWKS on the request path once their max age
    # has passed; with the JWKS dropped each such fetch waits for its timeout. Unset, LATENCY_SLO_SECONDS judges
    # latency in JWKS_FAILURE=slow only (the healthy runs above pass); declared, the same healthy shop fails on it
    # alone, on the latency of the requests it served (its histogram has a status label: the 2xx ones).
    outcome = shop_runner.run(None, **shop_settings(shop), LATENCY_SLO_SECONDS="0.3")
    rc, shown = verdict(outcome)
    assert rc == 1, shown
    latency = outcome.check("latency-within-slo")
    assert latency["services_failed"], latency
    assert all(latency["per_service"][s]["requests"] == "2xx" for s in latency["services_failed"]), latency
    assert all(judged(outcome).values()), judged(outcome)  # everything else held
    assert "latency-within-slo" in outcome.verdict_out
