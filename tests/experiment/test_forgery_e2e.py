"""End to end: each JWT validation hole of the lab (``lab up --holes ...``) makes the verdict fail on the forgery
catalogue, naming the class that got through; and the 404 stand-in (never checks signatures, 404 for tenants it does
not know) fails too, because the forged requests carry real tenants.

A hole lets forged tokens in whether or not the JWKS is reachable, so the live baseline (``forged-tokens-refused``)
already catches it and nothing is injected (short runs, no outage); a forged token accepted is a security finding, so
the verdict is FAIL (exit 1), never "not run". The during-outage path (``no-fail-open``) is covered by the fail-open
knob in test_experiment_e2e.py and per tenant in test_gate_e2e.py.
"""
from __future__ import annotations

import pytest

from tests.experiment.experiment_util import ExperimentRunner

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.slow]


def _before_probe(outcome, name: str) -> dict:
    before = (outcome.journal.get("steady_states") or {}).get("before") or {}
    for p in before.get("probes") or []:
        if p["activity"]["name"] == name:
            return p
    raise AssertionError(f"no {name} probe before the fault:\n{outcome.output[-3000:]}")


@pytest.mark.parametrize("hole, caught", [
    ("accept-alg-none", {"alg-none"}),
    ("alg-confusion", {"alg-confusion"}),
    ("ignore-exp", {"expired", "exp-missing"}),
    ("trust-token-key", {"embedded-jwk", "x5c"}),
    ("ignore-tenant", {"cross-tenant"}),
    ("skip-signature-404", {"alg-none", "unknown-kid", "bad-signature", "expired", "wrong-aud"}),
])
def test_each_hole_fails_the_baseline_naming_its_class(experiment: ExperimentRunner, lab_factory, hole: str,
                                                       caught: set[str]) -> None:
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120, holes=(hole,))
    out = experiment.run(lab, OUTAGE_SECONDS="10")
    assert out.verdict_rc == 1 and "VERDICT: FAIL" in out.verdict_out, out.verdict_out  # a security finding
    assert not out.journal.get("run"), "a fault was injected although the baseline failed"
    probe = _before_probe(out, "forged-tokens-refused")
    result = probe["output"]
    assert probe["tolerance_met"] is False and result["phase"] == "baseline"
    accepted = {name for name, c in result["classes"].items() if c.get("accepted")}
    assert caught <= accepted, result["classes"]
    if hole != "skip-signature-404":  # one hole lets in only its own family
        assert accepted == caught, accepted
    # the verdict screen names the class, the service, a real tenant and the route
    lines = out.verdict_out.splitlines()
    assert any(line.strip().startswith("forged-tokens-refused") and "FAIL" in line for line in lines)
    for name in caught:
        assert any(line.split()[:2] == [name, "FAIL-OPEN"] for line in lines if line.strip()), out.verdict_out
    first = result["accepted"][0]
    assert first["tenant"] in ("t01", "t02", "t03") and first["route"].startswith("/api/v1/")
    assert "FAIL-OPEN" in result["why"]
    assert out.verdict_out.split("VERDICT: FAIL", 1)[1].splitlines()[1].startswith("  - SECURITY:")
