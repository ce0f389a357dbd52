"""IdP-signed tokens with one bad claim, had from a real IdP: the catalogue's claim classes beyond the lab.

The lab authority signs any claim on request (``test_claims``, :mod:`chaosext.auth.measure`); a standard IdP signs only
what it would issue. The claim classes (``chaosext.auth.forgery.MINTED``) can still be tried where the IdP's own
behaviour gives such a token:

- ``wrong-aud``: a real token of the test client for another API the IdP serves: TOKEN_OTHER_AUDIENCE, asked for
  the way the run asks for its audience (TOKEN_AUDIENCE_PARAM: Auth0 ``audience``, RFC 8707 ``resource``);
- ``aud-missing``: the IdP's token when no audience is asked for, if it carries no ``aud`` (tried when TOKEN_AUDIENCE
  is set, i.e. the run's own tokens are asked for one);
- any claim class from FORGERY_TOKENS_FILE, JSON ``{tenant: {class: token}}`` (mode 0600): e.g. a token of the test
  client kept until ten minutes past its ``exp`` (``expired``), or one of a second issuer that signs with the same
  keys (``wrong-iss``: Azure AD's v1 and v2 issuers, an Auth0 custom domain and its canonical one).

Every such token is checked before the run: it must be signed by a key of the JWKS the services trust (else it would
test the signature, not the claim) and show exactly its class's flaw and no other (else a refusal would not say which
check works). A class none of these gives is skipped with what would let it be tried on this IdP (:data:`WHY_NOT`).
Tokens are secrets: they stay in the run's memory; messages name classes, tenants and claims, never a token.
"""
from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from chaosext.auth.forgery import MINTED, split_token
from chaosext.core.errors import ConfigError

__all__ = ["MARGIN_SECONDS", "WHY_NOT", "IdpTokens", "flaws", "signed_by", "read_tokens_file", "collect"]

#: seconds past ``exp`` (and before ``nbf``) a claim must be to count as wrong: beyond any verifier's leeway (.NET's
#: default clock skew is 5 min, jose's and PyJWT's are set by the service, usually seconds)
MARGIN_SECONDS = 600
#: signature algorithms an IdP signs access tokens with (an HMAC "IdP signature" would be a forgery of its own)
IDP_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")

_FILE_HINT = "name one in FORGERY_TOKENS_FILE (docs/experiment.md, 'The claim classes on a real IdP')"
#: class -> what would let it be tried on a real IdP (the verdict's skip reason when nothing gave such a token)
WHY_NOT: dict[str, str] = {
    "expired": f"a standard IdP signs only unexpired tokens: keep one of the test client's tokens until "
               f"{MARGIN_SECONDS // 60} min past its exp and {_FILE_HINT}",
    "nbf-future": f"a standard IdP does not sign a token that is not yet valid: if yours can (a future nbf), "
                  f"{_FILE_HINT}; the lab judges this class",
    "exp-missing": f"a standard IdP always sets exp: if yours can issue a token without one, {_FILE_HINT}; the lab "
                   f"judges this class",
    "iss-missing": f"a standard IdP always sets iss: if yours can issue a token without one, {_FILE_HINT}; the lab "
                   f"judges this class",
    "aud-missing": f"the IdP gave no token without aud (set TOKEN_AUDIENCE so the run asks for its audience and "
                   f"chaosext asks once without it), or {_FILE_HINT}",
    "wrong-iss": f"needs a token signed with the IdP's keys under another issuer (Azure AD's v1 and v2 issuers, an "
                 f"Auth0 custom domain and its canonical one): {_FILE_HINT}",
    "wrong-aud": f"set TOKEN_OTHER_AUDIENCE to another API the IdP issues the test client tokens for (asked for as "
                 f"TOKEN_AUDIENCE_PARAM), or {_FILE_HINT}",
}


def _audiences(claims: Mapping[str, Any]) -> set[str]:
    aud = claims.get("aud")
    return {str(a) for a in aud} if isinstance(aud, list) else ({str(aud)} if aud not in (None, "") else set())


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def flaws(claims: Mapping[str, Any], valid: Mapping[str, Any], now: float | None = None) -> set[str]:
    """The claim classes ``claims`` shows next to a valid token's ``valid`` claims: ``expired`` (``exp`` more than
    :data:`MARGIN_SECONDS` ago), ``nbf-future``, ``exp-missing``, ``iss-missing``, ``aud-missing``, ``wrong-iss`` (an
    issuer other than the valid token's) and ``wrong-aud`` (no audience in common with the valid token's)."""
    now = time.time() if now is None else now
    out: set[str] = set()
    exp = _number(claims.get("exp"))
    if "exp" not in claims:
        out.add("exp-missing")
    elif exp is not None and exp < now - MARGIN_SECONDS:
        out.add("expired")
    nbf = _number(claims.get("nbf"))
    if nbf is not None and nbf > now + MARGIN_SECONDS:
        out.add("nbf-future")
    if "iss" not in claims:
        out.add("iss-missing")
    elif valid.get("iss") and claims.get("iss") != valid.get("iss"):
        out.add("wrong-iss")
    if not _audiences(claims):
        out.add("aud-missing")
    elif _audiences(valid) and not _audiences(claims) & _audiences(valid):
        out.add("wrong-aud")
    return out


def signed_by(token: str, jwks: Mapping[str, Any]) -> str:
    """'' when ``token`` is signed by a key of ``jwks`` with an IdP signature algorithm; else why not (no secret)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return "it is not a JWT"
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in IDP_ALGORITHMS:
        return f"its alg {alg!r} is not an IdP signature algorithm ({', '.join(IDP_ALGORITHMS[:3])}, ...)"
    keys = [k for k in jwks.get("keys") or [] if isinstance(k, dict) and (kid is None or k.get("kid") == kid)]
    if not keys:
        return f"its kid {kid!r} is not in the JWKS the services trust"
    for jwk in keys:
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
            jwt.PyJWS().decode(token, key.key, algorithms=[alg])
            return ""
        except jwt.PyJWTError:
            continue
    return "its signature does not verify with the JWKS the services trust"


def read_tokens_file(path: str, tenants: Iterable[str]) -> dict[str, dict[str, str]]:
    """FORGERY_TOKENS_FILE: JSON ``{tenant: {class: token}}``, a regular file (not a symlink) no other user can read.
    ConfigError naming what is wrong (never a token)."""
    name = f"FORGERY_TOKENS_FILE={path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        why = "is a symbolic link" if exc.errno == 40 else f"cannot be opened ({exc.strerror})"
        raise ConfigError(f"{name} {why}; give a regular JSON file {{tenant: {{class: token}}}}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{name} is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(f"{name} is readable by other users (mode {st.st_mode & 0o777:o}): its tokens are "
                              f"credentials; chmod 600 {path}")
        if st.st_uid not in (0, os.geteuid()):
            raise ConfigError(f"{name} belongs to uid {st.st_uid}, not to root or this user: another user could "
                              f"choose the tokens; chown it")
        try:
            doc = json.loads(f.read(1 << 20))
        except ValueError:
            raise ConfigError(f"{name} is not JSON; give {{tenant: {{class: token}}}}") from None
    known = list(tenants)
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise ConfigError(f"{name} must be {{tenant: {{class: token}}}}, e.g. {{\"{known[0] if known else 't01'}\": "
                          f"{{\"expired\": \"<jwt>\"}}}}")
    problems = [f"tenant {t!r} is not in TENANTS" for t in doc if t not in known]
    problems += [f"{t}: {c!r} is not a claim class ({', '.join(MINTED)})" for t, v in doc.items() for c in v
                 if c not in MINTED]
    problems += [f"{t}.{c}: not a token string" for t, v in doc.items() for c, tok in v.items()
                 if not isinstance(tok, str) or tok.count(".") != 2]
    if problems:
        raise ConfigError(f"{name}: " + "; ".join(problems))
    return {str(t): {str(c): str(tok) for c, tok in v.items()} for t, v in doc.items()}


@dataclass
class IdpTokens:
    """What :func:`collect` found: tokens by tenant and class, the problems that must stop the run (a token the user
    named that is not what it claims), and why each class nobody gave is skipped."""

    tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    #: where each class's token came from (for the verdict: "other audience", "no audience", "FORGERY_TOKENS_FILE")
    sources: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)


#: ``fetch(tenant, audience)`` -> a token of the IdP for ``tenant`` asked for ``audience`` ('' = none asked);
#: raises an exception whose text says what the IdP answered
Fetch = Callable[[str, str], str]


def _judge(token: str, cls: str, valid: Mapping[str, Any], jwks: Mapping[str, Any], now: float) -> str:
    """'' when ``token`` is a clean ``cls`` forgery; else why not."""
    if why := signed_by(token, jwks):
        return why
    try:
        claims = split_token(token)[1]
    except (ValueError, IndexError):
        return "its claims cannot be read"
    found = flaws(claims, valid, now)
    if cls == "expired" and "expired" not in found and _number(claims.get("exp")) is not None:
        usable = float(claims["exp"]) + MARGIN_SECONDS
        if usable > now:
            return (f"it expired less than {MARGIN_SECONDS // 60} min ago (or not yet): a verifier's clock-skew "
                    f"leeway may still accept it; it can be used from "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(usable))}")
    if cls not in found:
        return f"it does not show the {cls} flaw (its flaws: {', '.join(sorted(found)) or 'none'})"
    if found != {cls}:
        return (f"it also shows {', '.join(sorted(found - {cls}))}: a refusal would not say which check works; give "
                f"a token with only the {cls} flaw")
    return ""


def collect(valid_tokens: Mapping[str, str], jwks: Mapping[str, Any], fetch: Fetch | None, audience: str,
            other_audience: str, file_tokens: Mapping[str, Mapping[str, str]], wanted: Iterable[str],
            now: float | None = None) -> IdpTokens:
    """The claim-class tokens of every tenant of ``valid_tokens`` ({tenant: valid token}) this IdP gives, for the
    classes in ``wanted``: FORGERY_TOKENS_FILE's (``file_tokens``), a token for ``other_audience`` (wrong-aud), and
    one asked for no audience when the run asks for ``audience`` (aud-missing, if it has none). ``fetch`` None: the
    IdP is not asked (TOKENS_FILE without client credentials)."""
    now = time.time() if now is None else now
    out = IdpTokens()
    classes = [c for c in MINTED if c in set(wanted)]
    for tenant, valid in valid_tokens.items():
        try:
            valid_claims = split_token(valid)[1]
        except (ValueError, IndexError):
            out.problems.append(f"{tenant}: its valid token is not a JWT, so no claim class can be judged against it")
            continue
        got: dict[str, str] = {}
        for cls, token in (file_tokens.get(tenant) or {}).items():
            if cls not in classes:
                continue
            if why := _judge(token, cls, valid_claims, jwks, now):
                out.problems.append(f"FORGERY_TOKENS_FILE {tenant}.{cls}: {why}")
            else:
                got[cls] = token
                out.sources[cls] = "FORGERY_TOKENS_FILE"
        asks = []
        if other_audience and "wrong-aud" in classes and "wrong-aud" not in got:
            asks.append(("wrong-aud", other_audience, f"TOKEN_OTHER_AUDIENCE={other_audience}"))
        if audience and "aud-missing" in classes and "aud-missing" not in got:
            asks.append(("aud-missing", "", "no audience asked"))
        for cls, aud, source in asks:
            if fetch is None:
                continue
            try:
                token = fetch(tenant, aud)
            except Exception as exc:
                if cls == "wrong-aud":  # asked for by name: a refusal must stop the run, not skip quietly
                    out.problems.append(f"{tenant}: the IdP gave no token for {source}: {exc}")
                else:
                    out.reasons.setdefault(cls, f"the IdP gave no token without an audience ({exc})")
                continue
            why = _judge(token, cls, valid_claims, jwks, now)
            if not why:
                got[cls] = token
                out.sources[cls] = source
            elif cls == "wrong-aud":
                out.problems.append(f"{tenant}: the IdP's token for {source} is no wrong-aud forgery: {why} (does "
                                    f"the IdP take the audience as TOKEN_AUDIENCE_PARAM?)")
            else:
                out.reasons.setdefault(cls, f"the IdP's token without an audience is no aud-missing forgery ({why})")
        if got:
            out.tokens[tenant] = got
    for cls in classes:
        if not any(cls in t for t in out.tokens.values()):
            out.reasons.setdefault(cls, WHY_NOT[cls])
        else:
            out.reasons.pop(cls, None)
    return out
