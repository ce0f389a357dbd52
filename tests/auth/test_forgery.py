"""The forgery catalogue: every class's tokens are refused by a correctly configured PyJWT verifier for exactly the
intended reason, and accepted by a verifier with that class's ONE hole (so each class proves it can catch something).

The test is the identity provider: it owns the RSA key, publishes the JWKS and mints tokens (also the bad-claim
tokens the lab authority mints in the experiment).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from chaosext.auth import forgery
from chaosext.auth.forgery import CLASSES, Material, build_catalogue, key_documents, parse_skip, split_token

ISS, AUD = "http://idp.test", "api.test"
IDP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ATTACKER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KID = "idp-key-1"
JWK = {**json.loads(RSAAlgorithm.to_jwk(IDP_KEY.public_key())), "kid": KID, "use": "sig", "alg": "RS256"}
JWKS = {"keys": [JWK]}
KEYS = {KID: IDP_KEY.public_key()}
KEY_URL = "http://probe.test:1234"


def mint(name: str = "", overrides: dict[str, Any] | None = None, omit: tuple[str, ...] = (),
         tenant: str = "t01") -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "sub": "alice", "tenant": tenant, "iat": now, "exp": now + 600}
    claims.update(overrides or {})
    for k in omit:
        claims.pop(k, None)
    return jwt.encode(claims, IDP_KEY, algorithm="RS256", headers={"kid": KID})


VALID = mint()
OTHER = mint(tenant="t02")  # another tenant's valid token (the foreign-signature class borrows its signature)
MATERIAL = Material(jwks=JWKS, token=VALID, tenant="t01", other_tenant="t02", other_token=OTHER, key_url=KEY_URL,
                    mint=mint, attacker_key=ATTACKER)
CATALOGUE, SKIPPED = build_catalogue(MATERIAL)
SERVED = {KEY_URL + path: body for path, (_, body) in key_documents(MATERIAL).items()}


class Refused(Exception):
    """A verifier refused; ``args[0]`` is the reason (the Forgery.refusal vocabulary)."""


_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not yet valid"),
    (jwt.InvalidIssuerError, "bad issuer"),
    (jwt.InvalidAudienceError, "bad audience"),
]


def _reason(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"{exc.claim} required"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return f"other: {type(exc).__name__}: {exc}"


def verifier(key_for: Callable[[dict], Any] | None = None, algorithms: tuple[str, ...] = ("RS256",),
             options: dict | None = None, check_tenant: bool = True,
             pre: Callable[[str, dict], dict | None] | None = None) -> Callable[[str, str], dict]:
    """A PyJWT verifier; the defaults are the correct configuration, each argument can open one hole."""
    opts = {"require": ["exp", "iss", "aud", "sub"], **(options or {})}

    def verify(token: str, tenant_header: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Refused("malformed") from exc
        claims = pre(token, header) if pre else None
        if claims is None:
            key = key_for(header) if key_for else KEYS.get(header.get("kid"))
            if key is None:
                if header.get("alg") not in algorithms:
                    key = IDP_KEY.public_key()  # let PyJWT refuse the algorithm itself
                else:
                    raise Refused("no such key")
            try:
                claims = jwt.decode(token, key, algorithms=list(algorithms), audience=AUD, issuer=ISS, options=opts)
            except jwt.PyJWTError as exc:
                raise Refused(_reason(exc)) from exc
        if check_tenant and claims.get("tenant") != tenant_header:
            raise Refused("tenant mismatch")
        return claims

    return verify


CORRECT = verifier()


def _claims_checked(token: str) -> dict:
    """The claims, signature NOT verified, every other check as the correct verifier does."""
    try:
        return jwt.decode(token, options={"verify_signature": False, "require": ["exp", "iss", "aud", "sub"]},
                          audience=AUD, issuer=ISS, algorithms=["RS256", "HS256", "HS384", "HS512", "none"])
    except jwt.PyJWTError as exc:
        raise Refused(_reason(exc)) from exc


def _hmac_ok(token: str, secret: bytes, alg: str) -> bool:
    signing_input, _, sig = token.rpartition(".")
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return hmac.compare_digest(forgery.b64url(hmac.new(secret, signing_input.encode(), digest).digest()), sig)


def _none_hole(token: str, header: dict) -> dict | None:
    return _claims_checked(token) if str(header.get("alg")).lower() == "none" else None


def _confused_hole(token: str, header: dict) -> dict | None:
    """HS* keyed with the kid's public key material (PEM or JWK JSON): the classic library confusion."""
    alg = header.get("alg", "")
    if not alg.startswith("HS"):
        return None
    jwk = next(k for k in JWKS["keys"] if k["kid"] == header.get("kid"))
    if any(_hmac_ok(token, secret, alg) for secret in forgery.public_key_secrets(jwk).values()):
        return _claims_checked(token)
    raise Refused("bad signature")


def _fail_open_hole(token: str, header: dict) -> dict | None:
    """Cannot find the key (a JWKS outage looks the same) -> accept without verification."""
    return _claims_checked(token) if header.get("kid") not in KEYS else None


def _skip_signature_hole(token: str, header: dict) -> dict | None:
    """Checks the kid and alg, never the signature."""
    return _claims_checked(token) if header.get("kid") in KEYS and header.get("alg") == "RS256" else None


def _key_from_url(url: str, kind: str) -> Any:
    body = SERVED[url]
    if kind == "jwks":
        return RSAAlgorithm.from_jwk(json.loads(body)["keys"][0])
    return x509.load_pem_x509_certificate(body).public_key()


def _kid_lookup(header: dict) -> Any:
    """Key by kid from a key directory (path traversal) or a SQL table (naive string building)."""
    kid = header.get("kid", "")
    if "UNION SELECT" in kid:
        return kid.split("UNION SELECT '", 1)[1].split("'", 1)[0].encode()
    with open(os.path.normpath(os.path.join("/nonexistent/keys", kid)), "rb") as fh:
        return fh.read()


def _kid_injection_hole(token: str, header: dict) -> dict | None:
    if header.get("kid") in KEYS:
        return None
    if not _hmac_ok(token, _kid_lookup(header), header.get("alg", "")):
        raise Refused("bad signature")
    return _claims_checked(token)


#: tokens the service verified before (its clients' real traffic) and may keep in a verified-token cache
VERIFIED = (VALID, OTHER)


def _empty_signature_hole(token: str, header: dict) -> dict | None:
    """An empty signature taken as "unsigned, nothing to verify" (ServiceStack CVE-2020-28042)."""
    return _claims_checked(token) if token.endswith(".") and header.get("alg") == "RS256" else None


def _signing_input_cache_hole(token: str, header: dict) -> dict | None:
    """A verified-token cache keyed by the signing input (header.payload), the signature left out of the key."""
    signing_input = token.rsplit(".", 1)[0]
    return _claims_checked(token) if any(v.rsplit(".", 1)[0] == signing_input for v in VERIFIED) else None


def _signature_cache_hole(token: str, header: dict) -> dict | None:
    """A verified-token cache keyed by the signature alone: "this signature verified before" for any claims."""
    signature = token.rsplit(".", 1)[1]
    return _claims_checked(token) if signature and any(v.rsplit(".", 1)[1] == signature for v in VERIFIED) else None


#: class -> a verifier with that class's one hole
HOLES: dict[str, Callable[[str, str], dict]] = {
    "alg-none": verifier(pre=_none_hole),
    "alg-confusion": verifier(pre=_confused_hole),
    "unknown-kid": verifier(pre=_fail_open_hole),
    "bad-signature": verifier(pre=_skip_signature_hole),
    "empty-signature": verifier(pre=_empty_signature_hole),
    "truncated-signature": verifier(pre=_signing_input_cache_hole),
    "foreign-signature": verifier(pre=_signature_cache_hole),
    "embedded-jwk": verifier(key_for=lambda h: RSAAlgorithm.from_jwk(h["jwk"]) if "jwk" in h else KEYS.get(h["kid"])),
    "jku": verifier(key_for=lambda h: _key_from_url(h["jku"], "jwks") if "jku" in h else KEYS.get(h["kid"])),
    "x5u": verifier(key_for=lambda h: _key_from_url(h["x5u"], "pem") if "x5u" in h else KEYS.get(h["kid"])),
    "x5c": verifier(key_for=lambda h: x509.load_der_x509_certificate(base64.b64decode(h["x5c"][0])).public_key()
                    if "x5c" in h else KEYS.get(h["kid"])),
    "kid-injection": verifier(pre=_kid_injection_hole),
    "expired": verifier(options={"verify_exp": False}),
    "nbf-future": verifier(options={"verify_nbf": False}),
    "exp-missing": verifier(options={"require": ["iss", "aud", "sub"]}),
    "wrong-iss": verifier(options={"verify_iss": False}),
    "wrong-aud": verifier(options={"verify_aud": False}),
    "iss-missing": verifier(options={"require": ["exp", "aud", "sub"], "verify_iss": False}),
    "aud-missing": verifier(options={"require": ["exp", "iss", "sub"], "verify_aud": False}),
    "cross-tenant": verifier(check_tenant=False),
}


def test_every_class_is_built_and_has_a_hole_verifier() -> None:
    assert not SKIPPED
    assert {f.name for f in CATALOGUE} == set(CLASSES) == set(HOLES)
    assert {f.variant for f in CATALOGUE if f.name == "alg-none"} == {
        a + s for a in ("none", "None", "NONE", "nOnE") for s in ("", "+sig")}
    assert len([f for f in CATALOGUE if f.name == "alg-confusion"]) == 6  # HS256/384/512 x PEM/JWK, one key
    assert {f.variant for f in CATALOGUE if f.name in ("empty-signature", "truncated-signature",
                                                        "foreign-signature")} == {
        "RS256-no-signature", "half", "one-byte-short", "other-tenant-token", "edited-claims"}
    assert all(f.tenant in ("t01", "t02") for f in CATALOGUE), "forged requests carry real tenants"


def test_the_valid_token_passes_every_verifier() -> None:
    """Otherwise a hole verifier 'accepting' would prove nothing."""
    assert CORRECT(VALID, "t01")["tenant"] == "t01"
    for name, verify in HOLES.items():
        assert verify(VALID, "t01")["tenant"] == "t01", name


@pytest.mark.parametrize("forged", CATALOGUE, ids=lambda f: f"{f.name}:{f.variant}")
def test_correct_verifier_refuses_for_the_intended_reason(forged: forgery.Forgery) -> None:
    with pytest.raises(Refused) as err:
        CORRECT(forged.token, forged.tenant)
    assert err.value.args[0] == forged.refusal


@pytest.mark.parametrize("forged", CATALOGUE, ids=lambda f: f"{f.name}:{f.variant}")
def test_the_one_hole_lets_it_in(forged: forgery.Forgery) -> None:
    claims = HOLES[forged.name](forged.token, forged.tenant)
    assert claims["tenant"] == "t01"


@pytest.mark.parametrize("forged", CATALOGUE, ids=lambda f: f"{f.name}:{f.variant}")
def test_only_the_attacked_property_differs(forged: forgery.Forgery) -> None:
    """The claims stay the valid token's (tenant, subject, issuer, audience) except what the class attacks."""
    _, claims, _ = split_token(forged.token)
    _, valid, _ = split_token(VALID)
    changed = {k for k in set(claims) | set(valid) if claims.get(k) != valid.get(k)} - {"iat", "exp", "jti"}
    allowed = {"wrong-iss": {"iss"}, "iss-missing": {"iss"}, "wrong-aud": {"aud"}, "aud-missing": {"aud"},
               "nbf-future": {"nbf"}}.get(forged.name, set())
    assert changed <= allowed, changed
    assert claims["tenant"] == "t01" and claims["sub"] == "alice"


@pytest.mark.parametrize("forged", [f for f in CATALOGUE if f.name in ("empty-signature", "truncated-signature",
                                                                       "foreign-signature")],
                         ids=lambda f: f"{f.name}:{f.variant}")
def test_signature_stripping_keeps_a_real_algorithm_and_the_idps_key(forged: forgery.Forgery) -> None:
    """Only the signature is wrong: RS256 and the IdP's published kid, so no algorithm or key check can refuse it;
    a verifier must check the whole signature against this very header and payload."""
    header = split_token(forged.token)[0]
    assert header == split_token(VALID)[0] and header["alg"] == "RS256" and header["kid"] == KID
    assert forged.token != VALID


def test_every_tenant_gets_its_own_catalogue() -> None:
    """tenant_materials + build_catalogues: each tenant's forgeries carry that tenant (claim and header), the
    cross-tenant and foreign-signature classes use the next tenant in a ring, one attacker key and certificate."""
    tokens = {t: mint(tenant=t) for t in ("t01", "t02", "t03")}
    materials = forgery.tenant_materials(JWKS, tokens, KEY_URL, mint_for=lambda t: lambda n, o, om: mint(n, o, om, t),
                                         attacker_key=ATTACKER)
    forged, skipped = forgery.build_catalogues(materials)
    assert not skipped and {m.attacker_jwk["n"] for m in materials} == {materials[0].attacker_jwk["n"]}
    assert {m.cert.serial_number for m in materials} == {materials[0].cert.serial_number}
    for tenant in tokens:
        mine = [f for f in forged if f.tenant == tenant]
        assert {f.name for f in mine} == set(CLASSES), tenant
        for f in mine:
            if f.name != "cross-tenant":  # a valid token of the previous tenant, sent with this tenant's header
                assert split_token(f.token)[1]["tenant"] == tenant, (f.name, f.variant)
    cross = {f.tenant: split_token(f.token)[1]["tenant"] for f in forged if f.name == "cross-tenant"}
    assert cross == {"t02": "t01", "t03": "t02", "t01": "t03"}


def test_skipped_classes_are_named_with_a_reason() -> None:
    m = Material(jwks=JWKS, token=VALID, tenant="t01", attacker_key=ATTACKER)  # no mint, no URL, one tenant
    forged, skipped = build_catalogue(m, skip=parse_skip("x5c, alg-none"))
    assert skipped["alg-none"] == skipped["x5c"] == "switched off by FORGERY_SKIP"
    assert "TENANTS" in skipped["cross-tenant"] and "key URL" in skipped["jku"]
    assert "lab authority" in skipped["expired"]
    assert {f.name for f in forged} | set(skipped) == set(CLASSES)


def test_unknown_skip_names_are_an_error() -> None:
    with pytest.raises(ValueError, match="alg-nope"):
        parse_skip("alg-nope")
