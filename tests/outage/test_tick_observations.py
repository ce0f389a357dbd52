"""A watch tick's arithmetic and readings without a lab: error rates from Prometheus counters, forged-request counts,
the fault check from the driver's verify."""
from __future__ import annotations

from typing import Any

import pytest

from chaosext.egress.base import FaultSpec
from chaosext.outage.observe import fault_check, forged_counts, tick_rates

SPEC = FaultSpec(jwks_url="http://127.0.0.2:8440/.well-known/jwks.json", host="127.0.0.2", port=8440,
                 addresses=("127.0.0.2",), via="iptables", target="local", mode="drop", duration_seconds=30,
                 run_id="ab12cd34")


def test_rates_since_the_outage_and_over_the_last_tick() -> None:
    r = tick_rates(total=(60.0, 1000.0), tick=(50.0, 500.0))
    assert r.overall == pytest.approx(60 / 1000) and r.recent == pytest.approx(50 / 500)
    assert (r.requests, r.recent_requests) == (1000.0, 500.0)


def test_no_new_request_is_a_zero_rate_not_a_division_error() -> None:
    r = tick_rates(total=(5.0, 100.0), tick=(0.0, 0.0))  # Prometheus down: nothing counted this tick
    assert (r.recent, r.recent_requests) == (0.0, 0.0) and r.overall == pytest.approx(0.05)
    assert tick_rates((0.0, 0.0), (0.0, 0.0)).overall == 0.0


def test_a_count_is_never_negative() -> None:
    r = tick_rates(total=(-3.0, -1103.0), tick=(-1.0, -50.0))
    assert (r.requests, r.recent_requests, r.overall, r.recent) == (0.0, 0.0, 0.0, 0.0)


def test_forged_requests_are_refused_accepted_or_inconclusive_per_service() -> None:
    attempts = [{"service": "policy", "status": 401}, {"service": "policy", "status": 403},
                {"service": "policy", "status": 200}, {"service": "vuln", "status": 0},
                {"service": "vuln", "status": 503}, {"service": "vuln", "status": 204}]
    assert forged_counts(attempts, (401, 403)) == {
        "policy": {"tried": 3, "refused": 2, "accepted": 1, "inconclusive": 0},
        "vuln": {"tried": 3, "refused": 0, "accepted": 1, "inconclusive": 2}}
    assert forged_counts(attempts, (401,))["policy"]["inconclusive"] == 1  # 403 not allowed as a refusal


class FakeDriver:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def verify(self, spec: FaultSpec) -> dict[str, Any]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return dict(self.answer)


def test_the_fault_holds_only_when_the_driver_verifies_it_blocked() -> None:
    assert fault_check(SPEC, FakeDriver({"blocked": True})) == (True, "")
    lifted = {"blocked": False, "targets": [{"probes": [{"address": "127.0.0.2", "reachable": True},
                                                        {"address": "::1", "reachable": False}]}]}
    assert fault_check(SPEC, FakeDriver(lifted)) == (False, "reachable at 127.0.0.2")
    assert fault_check(SPEC, FakeDriver({"blocked": False})) == (False, "rules/keys of the fault missing")
    holds, detail = fault_check(SPEC, FakeDriver(RuntimeError("iptables gone")))
    assert not holds and detail == "verify failed: RuntimeError: iptables gone"
