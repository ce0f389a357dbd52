"""JWKS_FAILURE on the Kubernetes drivers, contract-tested: the real ``kubernetes`` client against the API stub
(tests/kubestub.py; no API server is installable here). The Istio VirtualService shapes follow Istio's own reference
(istio/api networking/v1alpha3/virtual_service.proto): ``HTTPRoute.fault`` with ``delay.fixedDelay`` /
``abort.httpStatus`` and ``percentage.value``; ``HTTPRoute.directResponse`` = ``{status, body: {string}}``
(``HTTPDirectResponse`` / ``HTTPBody``, added by "Virtual Service Direct Response", istio/api #2407, first released in
Istio 1.15.0), a rule with a direct response carries no ``route``, and its content type goes through
``headers.response.set``. A NetworkPolicy can only make the JWKS unreachable: every other mode is refused before any
object is created."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chaosext.core.failures import ANSWER_MODES, answer
from chaosext.egress.actions import block_jwks_egress, restore_jwks_egress
from chaosext.egress.base import FaultError
from tests.kubestub import KubeStub

pytestmark = [pytest.mark.contract]

VS = "/apis/networking.istio.io/v1beta1/namespaces/tenancy/virtualservices"
JOBS = "/apis/batch/v1/namespaces/tenancy/jobs"
URL = "http://authority.auth.svc.cluster.local:8440/.well-known/jwks.json"


@pytest.fixture
def kube() -> Iterator[KubeStub]:
    with KubeStub() as fake:
        yield fake


def _istio(kube: KubeStub, failure: str, **kw: Any) -> dict:
    return block_jwks_egress(URL, via="istio", target="tenancy/app=policy", mode="reject", deadline_seconds=60,
                             use_watchdog=False, kube_api_url=kube.url, jwks_failure=failure, **kw)


def _rule(kube: KubeStub) -> dict:
    post = [r for r in kube.requests if r[0] == "POST" and r[1] == VS]
    assert len(post) == 1
    return post[0][2]["spec"]["http"][0]


@pytest.mark.parametrize("failure,malformed", [("empty-keys", ""), ("malformed", "not-json"),
                                               ("malformed", "truncated"), ("rotated", "")])
def test_istio_body_modes_are_a_direct_response_of_the_canned_answer(kube, state_dir, monkeypatch, failure,
                                                                     malformed):
    if malformed:
        monkeypatch.setenv("JWKS_MALFORMED", malformed)
    out = _istio(kube, failure)

    rule = _rule(kube)
    canned = answer(failure, malformed=malformed or "not-json")
    assert rule["directResponse"] == {"status": 200, "body": {"string": canned.text}}
    assert rule["headers"] == {"response": {"set": {"content-type": "application/json"}}}
    assert "route" not in rule and "fault" not in rule
    assert rule["match"] == [{"port": 8440, "sourceLabels": {"app": "policy"}}]
    assert out["verification"]["blocked"] is True and out["jwks_failure"] == failure
    restore_jwks_egress(via="istio", target="tenancy/app=policy", kube_api_url=kube.url)
    assert kube.objects[VS] == {}


def test_istio_slow_is_a_delay_of_jwks_slow_seconds_and_http_error_an_abort_with_its_status(kube, state_dir,
                                                                                            monkeypatch):
    monkeypatch.setenv("JWKS_SLOW_SECONDS", "40")
    _istio(kube, "slow")
    assert _rule(kube)["fault"] == {"delay": {"fixedDelay": "40s", "percentage": {"value": 100.0}}}
    restore_jwks_egress(via="istio", target="tenancy/app=policy", kube_api_url=kube.url)
    kube.requests.clear()
    monkeypatch.setenv("JWKS_ERROR_STATUS", "502")
    _istio(kube, "http-error")
    rule = _rule(kube)
    assert rule["fault"] == {"abort": {"httpStatus": 502, "percentage": {"value": 100.0}}} and rule["route"]


class PreDirectResponseIstio(KubeStub):
    """An API server whose VirtualService schema predates Istio 1.15: as for any structural schema, an unknown field
    (``directResponse``) is pruned from what it stores and returns."""

    def _handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if method == "POST" and path == VS:
            for rule in body["spec"]["http"]:
                rule.pop("directResponse", None)
        return super()._handle(method, path, query, body)


def test_an_istio_without_direct_response_prunes_it_and_the_fault_is_undone_saying_why(state_dir):
    with PreDirectResponseIstio() as old, pytest.raises(FaultError, match=r"came with Istio 1\.15"):
        _istio(old, "empty-keys")
    assert old.objects[VS] == {}  # removed again


@pytest.mark.parametrize("failure", ANSWER_MODES)
def test_a_networkpolicy_can_only_make_the_jwks_unreachable(kube, state_dir, failure):
    with pytest.raises(FaultError) as err:
        block_jwks_egress(URL.replace("authority.auth.svc.cluster.local", "10.96.40.7"), via="k8s-networkpolicy",
                          target="tenancy/app=policy", deadline_seconds=60, use_watchdog=False,
                          kube_api_url=kube.url, jwks_failure=failure)
    assert "k8s-networkpolicy can make: unreachable, rotation-during-outage, cold-start-during-outage" in str(err.value)
    assert kube.requests == [] and not list(state_dir.glob("*.json"))  # nothing was asked, nothing created


def test_istio_refuses_tls_untrusted_before_any_request(kube, state_dir):
    with pytest.raises(FaultError, match="istio can make: unreachable, slow, http-error"):
        _istio(kube, "tls-untrusted")
    assert kube.requests == []
