"""The claim classes on a real IdP (chaosext.auth.idptokens): tokens an IdP gives in its normal course, or a team kept,
become forgeries only when they are signed by the IdP's published key and show exactly their class's flaw.

Tokens here are real RS256/ES256 JWTs (PyJWT) over a JWKS of the "IdP's" public keys, as a real IdP publishes them;
the verifier that judges them is PyJWT's own (a correctly configured one refuses, a one-hole one accepts).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chaosext.auth.forgery import MINTED
from chaosext.auth.idptokens import MARGIN_SECONDS, WHY_NOT, collect, flaws, read_tokens_file, signed_by
from chaosext.core.errors import ConfigError

IDP = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_IDP = ec.generate_private_key(ec.SECP256R1())
ISS, AUD, OTHER_AUD = "https://idp.example", "https://api.example", "https://reports.example"
NOW = time.time()


def jwk_of(key: Any, kid: str, alg: str) -> dict[str, Any]:
    doc = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())) if alg.startswith("RS") else \
        json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**doc, "kid": kid, "alg": alg, "use": "sig"}


JWKS = {"keys": [jwk_of(IDP, "k1", "RS256"), jwk_of(EC_IDP, "k2", "ES256")]}


def token(claims: dict[str, Any] | None = None, omit: tuple[str, ...] = (), key: Any = IDP, kid: str = "k1",
          alg: str = "RS256") -> str:
    base = {"iss": ISS, "aud": AUD, "exp": int(NOW) + 3600, "iat": int(NOW), "tenant": "acme", "sub": "client-acme"}
    body = {k: v for k, v in {**base, **(claims or {})}.items() if k not in omit}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


VALID = token()
VALID_CLAIMS = jwt.decode(VALID, options={"verify_signature": False})


def strict(tok: str) -> dict[str, Any]:
    """A correctly configured verifier (PyJWT): RS256 only, issuer, audience, exp required."""
    return jwt.decode(tok, IDP.public_key(), algorithms=["RS256"], audience=AUD, issuer=ISS,
                      options={"require": ["exp", "iss", "aud"]})


def test_each_claim_class_is_told_from_a_valid_token() -> None:
    cases = {
        "expired": token({"exp": int(NOW) - MARGIN_SECONDS - 60}),
        "nbf-future": token({"nbf": int(NOW) + MARGIN_SECONDS + 60}),
        "exp-missing": token(omit=("exp",)),
        "iss-missing": token(omit=("iss",)),
        "aud-missing": token(omit=("aud",)),
        "wrong-iss": token({"iss": "https://sts.example/v1"}),
        "wrong-aud": token({"aud": [OTHER_AUD, "https://more.example"]}),
    }
    assert set(cases) == set(MINTED)
    for cls, tok in cases.items():
        assert flaws(jwt.decode(tok, options={"verify_signature": False}), VALID_CLAIMS, NOW) == {cls}, cls
        with pytest.raises(jwt.PyJWTError):  # each is a token a correct verifier refuses
            strict(tok)
    assert flaws(VALID_CLAIMS, VALID_CLAIMS, NOW) == set()
    # an audience list that still holds the API's audience is not wrong; a token expired within the leeway is not
    assert flaws({**VALID_CLAIMS, "aud": [OTHER_AUD, AUD]}, VALID_CLAIMS, NOW) == set()
    assert flaws({**VALID_CLAIMS, "exp": NOW - 30}, VALID_CLAIMS, NOW) == set()


def test_only_a_signature_of_a_published_key_counts() -> None:
    assert signed_by(VALID, JWKS) == ""
    assert signed_by(token(key=EC_IDP, kid="k2", alg="ES256"), JWKS) == ""
    assert "not in the JWKS" in signed_by(token(kid="k9"), JWKS)
    assert "does not verify" in signed_by(token(key=OTHER), JWKS)  # the IdP's kid, another key's signature
    assert "not an IdP signature algorithm" in signed_by(jwt.encode({"a": 1}, "s" * 32, "HS256"), JWKS)
    assert "not a JWT" in signed_by("opaque-access-token", JWKS)


def idp_fetch(audiences: dict[str, str | None]) -> Any:
    """A client-credentials grant of the IdP: a token for the audience asked (None in ``audiences``: the IdP
    refuses it; '' asked: the IdP's default, here as given)."""
    asked: list[tuple[str, str]] = []

    def fetch(tenant: str, audience: str) -> str:
        asked.append((tenant, audience))
        aud = audiences.get(audience, "refuse")
        if aud == "refuse":
            raise RuntimeError("400 invalid_target")
        return token({"aud": aud} if aud else {}, omit=() if aud else ("aud",))

    fetch.asked = asked  # type: ignore[attr-defined]
    return fetch


def test_a_token_for_another_api_is_the_wrong_aud_forgery_and_a_correct_verifier_refuses_it() -> None:
    fetch = idp_fetch({OTHER_AUD: OTHER_AUD})
    got = collect({"acme": VALID, "globex": VALID}, JWKS, fetch, AUD, OTHER_AUD, {}, MINTED, NOW)
    assert not got.problems
    wrong = got.tokens["acme"]["wrong-aud"]
    assert jwt.decode(wrong, options={"verify_signature": False})["aud"] == OTHER_AUD
    assert set(got.tokens["globex"]) == {"wrong-aud"}
    assert got.sources == {"wrong-aud": f"TOKEN_OTHER_AUDIENCE={OTHER_AUD}"}
    with pytest.raises(jwt.InvalidAudienceError):
        strict(wrong)
    # the broken system the class exists for: a verifier that never checks the audience takes it
    assert jwt.decode(wrong, IDP.public_key(), algorithms=["RS256"], options={"verify_aud": False})["tenant"] == "acme"
    # the IdP's token without an audience still had one (its default): aud-missing is not had, and says why
    assert ("acme", "") in fetch.asked and "aud-missing" in got.reasons
    assert got.reasons["expired"] == WHY_NOT["expired"]
    assert set(got.reasons) == set(MINTED) - {"wrong-aud"}


def test_an_idp_that_gives_a_token_without_aud_when_none_is_asked_gives_aud_missing() -> None:
    got = collect({"acme": VALID}, JWKS, idp_fetch({"": ""}), AUD, "", {}, MINTED, NOW)
    assert set(got.tokens["acme"]) == {"aud-missing"} and got.sources["aud-missing"] == "no audience asked"
    assert "TOKEN_OTHER_AUDIENCE" in got.reasons["wrong-aud"]  # how to get the one it could not try


@pytest.mark.parametrize("answer, says", [
    ("refuse", "the IdP gave no token for TOKEN_OTHER_AUDIENCE"),
    (AUD, "no wrong-aud forgery"),  # the IdP ignored the audience parameter: its token is a valid one
])
def test_an_other_audience_the_idp_will_not_give_stops_the_run(answer: str, says: str) -> None:
    got = collect({"acme": VALID}, JWKS, idp_fetch({OTHER_AUD: answer}), AUD, OTHER_AUD, {}, MINTED, NOW)
    assert any(says in p for p in got.problems), got.problems
    assert "wrong-aud" not in got.tokens.get("acme", {})


def test_kept_tokens_are_used_only_when_they_are_what_they_claim() -> None:
    expired = token({"exp": int(NOW) - 2 * MARGIN_SECONDS})
    files = {"acme": {
        "expired": expired,
        "wrong-iss": token({"iss": "https://sts.example/v1"}, key=OTHER),  # another issuer's key: a signature test
        "exp-missing": token(omit=("exp", "aud")),  # two flaws: a refusal would not say which check works
        "nbf-future": token({"exp": int(NOW) - 60}),  # expired a minute ago: within a verifier's leeway
    }}
    got = collect({"acme": VALID}, JWKS, None, AUD, "", files, MINTED, NOW)
    assert got.tokens == {"acme": {"expired": expired}} and got.sources == {"expired": "FORGERY_TOKENS_FILE"}
    problems = "\n".join(got.problems)
    assert "acme.wrong-iss: its signature does not verify" in problems
    assert "acme.exp-missing: it also shows aud-missing" in problems
    assert "acme.nbf-future: it does not show the nbf-future flaw" in problems
    assert "eyJ" not in problems  # never a token in a message
    near = collect({"acme": VALID}, JWKS, None, AUD, "", {"acme": {"expired": token({"exp": int(NOW) - 60})}},
                   MINTED, NOW)
    assert "it can be used from" in near.problems[0]
    # classes the user switched off are neither judged nor fetched
    off = collect({"acme": VALID}, JWKS, idp_fetch({}), AUD, OTHER_AUD, files, ("expired",), NOW)
    assert off.tokens == {"acme": {"expired": expired}} and not off.problems


def write(path: Path, doc: Any, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(doc))
    path.chmod(mode)
    return path


def test_the_tokens_file_is_private_regular_and_names_known_tenants_and_classes(tmp_path: Path) -> None:
    good = write(tmp_path / "f.json", {"acme": {"expired": VALID}})
    assert read_tokens_file(str(good), ["acme"]) == {"acme": {"expired": VALID}}
    with pytest.raises(ConfigError, match="readable by other users"):
        read_tokens_file(str(write(tmp_path / "open.json", {"acme": {}}, 0o644)), ["acme"])
    link = tmp_path / "link.json"
    link.symlink_to(good)
    with pytest.raises(ConfigError, match="symbolic link"):
        read_tokens_file(str(link), ["acme"])
    with pytest.raises(ConfigError, match=r"tenant 'initech' is not in TENANTS.*'alg-none' is not a claim class"):
        read_tokens_file(str(write(tmp_path / "bad.json", {"initech": {}, "acme": {"alg-none": VALID}})), ["acme"])
    with pytest.raises(ConfigError, match="must be"):
        read_tokens_file(str(write(tmp_path / "flat.json", {"expired": VALID})), ["acme"])
    if os.geteuid() == 0:
        os.chown(good, 4242, 4242)
        with pytest.raises(ConfigError, match="belongs to uid 4242"):
            read_tokens_file(str(good), ["acme"])
