"""The lab services' metric contract that the alert rules build on (docs/architecture.md, "Metrics"):

- `tenant_auth_failures_total{tenant,service,reason}` counts a tenant's own rejected tokens: the signature verified
  (issued by the identity provider) but the claims were rejected (expired, wrong audience). Forged tokens that carry
  the same tenant claim (bad signature, unknown kid, alg none) and requests without a token never count.
- the latency histogram has bucket boundaries exactly at the SLO thresholds (0.3 s read, 0.6 s write).
"""

import time
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from tests.traffic import service_urls, token

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

TENANT = "t04"


def _samples(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    text = requests.get(url.split("/api/")[0] + "/metrics", timeout=10).text
    return [(s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name == name]


def _status(base: str, jwt_text: str | None, tenant: str = TENANT) -> int:
    headers = {"X-StellaOps-Tenant": tenant}
    if jwt_text is not None:
        headers["Authorization"] = f"Bearer {jwt_text}"
    return requests.get(base + "/api/v1/policies", headers=headers, timeout=10).status_code


def _forged(state: dict[str, Any], **header: str) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"tenant": TENANT, "sub": "x", "iss": state["authority_url"], "aud": state["config"]["audience"],
              "iat": now, "exp": now + 300}
    return jwt.encode(claims, key, algorithm="RS256", headers=header)


def test_tenant_auth_failures_count_only_verified_tokens_with_rejected_claims(lab: dict[str, Any]) -> None:
    base = service_urls(lab)["policy"]
    assert _status(base, token(lab, TENANT)) == 200  # the tenant is known (has a label)
    # forged or absent tokens claiming the tenant: client noise, not the tenant's own failures
    kid = jwt.get_unverified_header(token(lab, TENANT))["kid"]
    noise = [_forged(lab, kid=kid), _forged(lab, kid="kid-nobody-publishes"), "not-a-jwt", None,
             jwt.encode({"tenant": TENANT}, None, algorithm="none")]
    for bad in noise:
        assert _status(base, bad) == 401
    assert [s for s in _samples(base, "tenant_auth_failures_total") if s[0]["tenant"] == TENANT] == []
    # the tenant's own client: a genuine token for another audience, and one that expired
    assert _status(base, token_with(lab, aud="someone-else")) == 401
    short = token(lab, TENANT, ttl=1)
    time.sleep(2.2)
    assert _status(base, short) == 401
    # the session lab is shared: other tests' tenants may have failures too
    found = {(lbl["tenant"], lbl["service"], lbl["reason"]): v
             for lbl, v in _samples(base, "tenant_auth_failures_total") if lbl["tenant"] == TENANT}
    assert found == {(TENANT, "policy", "bad_audience"): 1.0, (TENANT, "policy", "expired"): 1.0}


def token_with(state: dict[str, Any], aud: str) -> str:
    return token(state, TENANT, audience=aud)


def test_latency_buckets_sit_exactly_on_the_slo_thresholds(lab: dict[str, Any]) -> None:
    base = service_urls(lab)["policy"]
    assert _status(base, token(lab, "t05"), tenant="t05") == 200
    bounds = sorted({float(lbl["le"]) for lbl, _ in _samples(base, "tenant_request_duration_seconds_bucket")
                     if lbl["tenant"] == "t05"})
    assert {0.3, 0.6} <= set(bounds), bounds
    below_read_slo = [b for b in bounds if b < 0.3]
    assert below_read_slo[0] <= 0.0005 and len(below_read_slo) >= 9, bounds  # sub-millisecond lab latencies resolve
