"""JWKS_FAILURE through the lab's real Envoy 1.40 (`chaosext lab up --egress envoy`): slow and http-error by the fault
filter's runtime keys, rotated by the runtime switch of the JWKS route's direct responses (empty-keys and malformed
are the same switch with another body: tests/core/test_failures.py checks every body route against the driver's
keys), tls-untrusted refused with what Envoy can make. Same knobs and same expectations as tests/experiment/
test_scorecard_e2e.py: the modes pass and fail the same way behind Envoy. Three runs, to keep CI short."""
from __future__ import annotations

import pytest

from tests.egress.envoy_util import require_envoy
from tests.experiment.test_envoy_experiment import chaosext_keys
from tests.experiment.test_scorecard_e2e import run_scorecard

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.netns, pytest.mark.slow]


def test_envoy_makes_every_mode_it_can_and_the_same_services_fail_them(experiment, lab_factory, tmp_path):
    require_envoy()
    lab = lab_factory(egress="envoy", jwks_ttl=3, jwks_max_stale=120, jwks_swap="policy", jwks_fetch_inline="vuln")

    doc = run_scorecard(experiment, lab, tmp_path, "slow,http-error,rotated,tls-untrusted",
                        FAULT_VIA="envoy", FAULT_TARGET=lab["envoy_admin_url"])

    cells, out = doc["cells"], doc["_output"]
    assert chaosext_keys(experiment, lab["envoy_admin_url"]) == {}, "an Envoy fault was left on"
    why = cells["tls-untrusted"]["notify"]["why"]
    assert "FAULT_VIA=envoy cannot make JWKS_FAILURE=tls-untrusted" in why and "envoy can make: unreachable" in why
    for mode in ("slow", "http-error", "rotated"):
        assert cells[mode]["notify"]["status"] == "held", (mode, out)
    for mode in ("http-error", "rotated"):
        assert "cached-key-fallback" in cells[mode]["policy"]["checks"], (mode, out)
        assert cells[mode]["vuln"]["status"] == "held", (mode, out)
    assert cells["slow"]["policy"]["status"] == "held", out
    assert "latency-within-slo" in cells["slow"]["vuln"]["checks"], out
    for mode in ("slow", "http-error", "rotated"):  # Envoy made each mode itself: its keys set, verified, cleared
        block = doc["runs"][mode]
        assert block["verdict"] == "FAIL" and block["chaos_exit_code"] in (0, 1), (mode, out)
