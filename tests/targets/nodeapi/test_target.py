"""The shop target on its own (no chaos run): a real OpenID provider's tokens, two services whose JWT libraries
refuse every forgery of chaosext's catalogue, metrics that follow chaosext's error rule, a cache-state signal and
audit lines in the target's own names, and planted variants that really behave as planted.

Every test here talks to the target from inside its namespace (shoputil.InNetns); the outage tests drop the IdP's
public port with an iptables rule of their own in the target's namespace and always remove it.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from chaosext.auth.forgery import Material, build_catalogue
from tests.experiment.experiment_util import wait_for
from tests.targets.nodeapi.shoputil import InNetns, audit_events, jwks_blocked
from tests.targets.nodeapi.target import JWKS, OTHER_AUDIENCE, SERVICES, TENANT_HEADER, TENANTS, Target

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


def token(shop: Target, ns: InNetns, tenant: str, resource: str = "") -> str:
    """A tenant's access token from the IdP (client credentials, its own client)."""
    client = shop.token_clients()[tenant]
    idp = json.loads(shop.description_file.read_text())["identity_provider"]
    form = {"grant_type": "client_credentials", **({"resource": resource} if resource else {})}
    resp = ns.request("POST", f"{idp['authority_url']}/token", data=form,
                      auth=(client["client_id"], client["client_secret"]))
    assert resp.status_code == 200, resp.text
    value: str = resp.json()["access_token"]
    return value


def described(shop: Target) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(shop.description_file.read_text())
    return doc


def call(ns: InNetns, shop: Target, service: str, tok: str, tenant: str, route: int = 0) -> int:
    """Status of one request on a service's route (0: the read route, 1: the write route)."""
    svc = described(shop)["services"][service]
    r = svc["routes"][route]
    return ns.request(r["method"], svc["url"] + r["path"], json=r.get("body"),
                      headers={"Authorization": f"Bearer {tok}", TENANT_HEADER: tenant}).status_code


def attacker_token(claims: dict[str, Any]) -> str:
    """The valid claims signed by a key the IdP never published (kid unknown to the services)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "not-the-idps", "typ": "at+jwt"})


def prom_value(ns: InNetns, shop: Target, expr: str) -> float | None:
    result = ns.prom(described(shop)["prometheus"]["url"], expr)
    return float(result[0]["value"][1]) if result else None


# --------------------------------------------------------------------------------------------------- the IdP
def test_idp_issues_rs256_access_tokens_per_tenant_client(shop: Target, shop_ns: InNetns) -> None:
    idp = described(shop)["identity_provider"]
    discovery = shop_ns.request("GET", f"{idp['authority_url']}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == idp["authority_url"]
    assert discovery["jwks_uri"] == idp["jwks_url"]
    assert "client_credentials" in discovery["grant_types_supported"]
    jwks = shop_ns.request("GET", idp["jwks_url"]).json()
    keys = {k["kid"]: k for k in jwks["keys"]}
    for tenant in TENANTS:
        tok = token(shop, shop_ns, tenant)
        header = jwt.get_unverified_header(tok)
        assert (header["alg"], header["typ"]) == ("RS256", "at+jwt")
        key = jwt.PyJWK(keys[header["kid"]])
        claims = jwt.decode(tok, key, algorithms=["RS256"], audience=idp["audience"], issuer=idp["authority_url"])
        assert claims["tenant"] == tenant
        assert claims["exp"] > time.time() + 600
    # a wrong secret is refused the OAuth2 way (RFC 6749 §5.2); another API's token has that API's audience
    client = shop.token_clients()["acme"]
    wrong = shop_ns.request("POST", discovery["token_endpoint"], data={"grant_type": "client_credentials"},
                            auth=(client["client_id"], client["client_secret"] + "x"))
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    other = jwt.decode(token(shop, shop_ns, "acme", OTHER_AUDIENCE), options={"verify_signature": False})
    assert other["aud"] == OTHER_AUDIENCE


def test_key_rotation_publishes_a_new_key_and_keeps_the_old(shop: Target, shop_ns: InNetns) -> None:
    idp = described(shop)["identity_provider"]
    before = {k["kid"] for k in shop_ns.request("GET", idp["jwks_url"]).json()["keys"]}
    old_token = token(shop, shop_ns, "acme")
    kids = shop.rotate()["kids"]
    after = [k["kid"] for k in shop_ns.request("GET", idp["jwks_url"]).json()["keys"]]
    assert after == kids and after[1] in before and after[0] not in before
    new_token = token(shop, shop_ns, "acme")
    assert jwt.get_unverified_header(new_token)["kid"] == after[0]
    for service in SERVICES:  # the services find the new key (unknown kid -> refetch) and still take the old one
        assert wait_for(lambda s=service: call(shop_ns, shop, s, new_token, "acme") == 200, 20), service
        assert call(shop_ns, shop, service, old_token, "acme") == 200


# --------------------------------------------------------------------------------------------------- the libraries
def test_services_refuse_every_forgery_of_the_catalogue(shop: Target, shop_ns: InNetns) -> None:
    idp = described(shop)["identity_provider"]
    valid = token(shop, shop_ns, "acme")
    material = Material(jwks=shop_ns.request("GET", idp["jwks_url"]).json(), token=valid, tenant="acme",
                        other_tenant="globex")
    forgeries, skipped = build_catalogue(material)
    assert len({f.name for f in forgeries}) >= 8, skipped  # 17 less jku/x5u (no key URL) and 7 IdP-minted
    other_audience = token(shop, shop_ns, "acme", OTHER_AUDIENCE)  # what a standard IdP signs: wrong-aud
    accepted = []
    for service in SERVICES:
        for route in (0, 1):
            assert call(shop_ns, shop, service, valid, "acme", route) in (200, 201)
            for f in forgeries:
                status = call(shop_ns, shop, service, f.token, f.tenant, route)
                if status not in (401, 403):
                    accepted.append((service, route, f.name, f.variant, status))
            assert call(shop_ns, shop, service, other_audience, "acme", route) == 401
    assert not accepted


# --------------------------------------------------------------------------------------------------- signals
def test_metrics_count_only_the_services_own_failures(shop: Target, shop_ns: InNetns) -> None:
    doc = described(shop)
    m = doc["prometheus"]["metrics"]
    valid = token(shop, shop_ns, "globex")
    forged = attacker_token(jwt.decode(valid, options={"verify_signature": False}))
    for service in SERVICES:
        assert call(shop_ns, shop, service, valid, "globex") == 200
        assert call(shop_ns, shop, service, forged, "globex") == 401
        assert call(shop_ns, shop, service, valid, "initech") == 403  # another tenant's data: refused
    series = f'{m["requests"]}{{{m["requests_matchers"]}}}'

    def scraped() -> list[dict[str, Any]]:
        got = shop_ns.prom(doc["prometheus"]["url"], f'{series}')
        wanted = {(s, status, tenant) for s in SERVICES
                  for status, tenant in (("200", "globex"), ("403", "globex"), ("401", "__unauthenticated__"))}
        have = {(r["metric"].get("service"), r["metric"].get(m["status_label"]), r["metric"].get("tenant"))
                for r in got}
        return got if wanted <= have else []

    got = wait_for(scraped, 30)
    assert got, "Prometheus never scraped this test's requests"
    for r in got:
        labels = r["metric"]
        assert labels["service"] in SERVICES and labels["job"] == "shop-apis"
        assert labels[m["status_label"]].isdigit() and labels["method"] and labels["path"].startswith("/")
        if labels[m["status_label"]] == "401":  # no key could not be the reason: the cache is fresh
            assert labels["tenant"] == "__unauthenticated__", labels
    assert {r["metric"]["tenant"] for r in got} >= {"globex", "__unauthenticated__"}


def test_cache_signals_read_fresh_on_a_healthy_target(shop: Target, shop_ns: InNetns) -> None:
    doc = described(shop)
    orders = doc["services"]["orders"]["cache"]["prometheus"]
    assert wait_for(lambda: prom_value(shop_ns, shop, orders["fresh"]) == 1, 30)
    assert prom_value(shop_ns, shop, orders["stale"]) == 0
    assert prom_value(shop_ns, shop, orders["expired"]) == 0
    http = doc["services"]["billing"]["cache"]["http"]
    health = shop_ns.request("GET", http["url"]).json()
    assert health["jwks"]["status"] in http["states"]["fresh"]


def test_healthy_services_serve_stale_keys_through_an_outage_and_audit_it(shop: Target, shop_ns: InNetns) -> None:
    doc = described(shop)
    valid = token(shop, shop_ns, "acme")
    forged = attacker_token(jwt.decode(valid, options={"verify_signature": False}))
    statuses: dict[str, set[int]] = {s: set() for s in SERVICES}
    forged_statuses: set[int] = set()
    billing_health = set()
    with jwks_blocked(shop) as began:
        while time.time() < began + JWKS["ttl_seconds"] + 6:
            for service in SERVICES:
                statuses[service].add(call(shop_ns, shop, service, valid, "acme"))
                forged_statuses.add(call(shop_ns, shop, service, forged, "acme"))
            billing_health.add(shop_ns.request("GET", doc["services"]["billing"]["cache"]["http"]["url"])
                               .json()["jwks"]["status"])
            time.sleep(0.5)
        stale = prom_value(shop_ns, shop, doc["services"]["orders"]["cache"]["prometheus"]["stale"])
    assert statuses == {s: {200} for s in SERVICES}
    assert forged_statuses == {401}
    assert "degraded" in billing_health
    assert stale == 1

    def recovered() -> list[dict[str, Any]]:
        for service in SERVICES:  # both libraries fetch lazily: a request makes them try again
            call(shop_ns, shop, service, valid, "acme")
        events = audit_events(shop.audit_file, began * 1000)
        done = {e["svc"] for e in events if e["event"] == "jwks.recovered"}
        return events if done >= set(SERVICES) else []

    events = wait_for(recovered, 20, interval=1)
    assert events, "no jwks.recovered after the outage"
    by_event = {(e["svc"], e["event"]) for e in events}
    assert {(s, "jwks.stale") for s in SERVICES} | {(s, "jwks.recovered") for s in SERVICES} <= by_event
    assert not any(e["event"] == "jwks.expired" for e in events)


# --------------------------------------------------------------------------------------------------- the variants
def test_drop_keys_variant_fails_closed_within_max_stale(shop: Target, shop_ns: InNetns,
                                                         shop_variant: Callable[..., Target]) -> None:
    doc = described(shop)
    shop_variant(orders=["--drop-keys-on-failure"], billing=["--drop-keys-on-failure"])
    valid = token(shop, shop_ns, "initech")
    for service in SERVICES:
        assert call(shop_ns, shop, service, valid, "initech") == 200
    with jwks_blocked(shop) as began:
        refused = wait_for(lambda: all(call(shop_ns, shop, s, valid, "initech") == 401 for s in SERVICES), 20)
        assert refused, "the drop-keys variant kept accepting valid tokens"
        assert time.time() - began < JWKS["max_stale_seconds"]  # well within what the target promises
        expired = doc["services"]["orders"]["cache"]["prometheus"]["expired"]
        assert wait_for(lambda: prom_value(shop_ns, shop, expired) == 1, 20)
        firing = wait_for(lambda: {a["labels"]["service"] for a in shop_ns.request(
            "GET", f"{doc['prometheus']['url']}/api/v1/alerts").json()["data"]["alerts"]
            if a["labels"]["alertname"] == "JwksKeysExpired" and a["state"] == "firing"} >= set(SERVICES), 30)
        assert firing, "JwksKeysExpired did not fire for both services"
        in_am = wait_for(lambda: [a for a in shop_ns.request("GET", f"{doc['alertmanager']['url']}/api/v2/alerts")
                                  .json() if a["labels"]["alertname"] == "JwksKeysExpired"], 30)
        assert in_am
        # the services' own failure: counted against the tenant, not as client noise
        m = doc["prometheus"]["metrics"]
        counted = wait_for(lambda: prom_value(
            shop_ns, shop, f'sum({m["requests"]}{{{m["status_label"]}="401",tenant="initech"}})'), 20)
        assert counted
    events = audit_events(shop.audit_file, began * 1000)
    assert {(s, "jwks.expired") for s in SERVICES} <= {(e["svc"], e["event"]) for e in events}


def test_fail_open_variant_accepts_an_unknown_key_only_while_the_jwks_is_unreachable(
        shop: Target, shop_ns: InNetns, shop_variant: Callable[..., Target]) -> None:
    doc = described(shop)
    shop_variant(orders=["--fail-open"], billing=["--fail-open"])
    valid = token(shop, shop_ns, "acme")
    forged = attacker_token(jwt.decode(valid, options={"verify_signature": False}))
    for service in SERVICES:
        assert call(shop_ns, shop, service, forged, "acme") == 401  # the JWKS answers: the library refuses
    with jwks_blocked(shop):
        accepted = wait_for(lambda: all(call(shop_ns, shop, s, forged, "acme") == 200 for s in SERVICES), 30)
    assert accepted, "the planted fail-open did not open"
    backstop = doc["prometheus"]["metrics"]["unverified_accepts"]
    assert wait_for(lambda: (prom_value(shop_ns, shop, f"count({backstop} > 0)") or 0) == len(SERVICES), 20)
