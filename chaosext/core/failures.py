"""The ways a JWKS fails (``JWKS_FAILURE``), what each fault driver can make of them, and the answers they serve.

One place lists each driver's modes (:data:`DRIVER_FAILURES`): the settings check (``chaosext.core.config.validate``,
so ``chaosext doctor`` and the safety control refuse the same), ``block_jwks_egress`` and ``chaosext scorecard`` all ask
:func:`failure_problem`, and every refusal names what the driver can do instead. docs/failure-modes.md describes each
mode per driver.

- ``unreachable``: the JWKS cannot be reached (``FAULT_MODE`` drop | reject), today's fault;
- ``slow``: every JWKS answer is delayed by ``JWKS_SLOW_SECONDS`` (default beyond common fetch timeouts);
- ``http-error``: the JWKS answers ``JWKS_ERROR_STATUS`` (default 503);
- ``empty-keys``: 200 with ``{"keys": []}``;
- ``malformed``: 200 with a body that is no JWKS (``JWKS_MALFORMED``: ``not-json`` | ``truncated``);
- ``rotated``: 200 with a key set holding only a key no current token uses;
- ``tls-untrusted``: an https JWKS presents a certificate the services do not trust (what any impersonation of an
  https JWKS looks like to a service that verifies TLS);
- ``rotation-during-outage`` / ``cold-start-during-outage``: scenarios on top of ``unreachable`` (the IdP signs with a
  new key / one service instance starts cold while the JWKS is unreachable).

The answers (:func:`answer`) are data shared by the impostor (iptables targets), Envoy's direct-response routes (the
lab writes them into its bootstrap) and Istio's ``directResponse``: one definition, the same bytes everywhere.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from chaosext.core.faulttarget import split_items

__all__ = ["UNREACHABLE", "JWKS_FAILURES", "SCENARIOS", "ANSWER_MODES", "BODY_MODES", "IMPOSTOR_MODES",
           "MALFORMED_KINDS", "DRIVER_FAILURES", "DEFAULT_SLOW_SECONDS", "DEFAULT_ERROR_STATUS", "ROTATED_KID",
           "ROTATED_JWKS", "Answer", "answer", "body_variants", "driver_failures", "failure_problem",
           "is_scenario", "needs_impostor", "base_failure"]

UNREACHABLE = "unreachable"
#: every mode, in the order the scorecard shows them
JWKS_FAILURES = ("unreachable", "slow", "http-error", "empty-keys", "malformed", "rotated", "tls-untrusted",
                 "rotation-during-outage", "cold-start-during-outage")
#: scenarios made on top of ``unreachable`` (its FAULT_MODE drop | reject)
SCENARIOS = ("rotation-during-outage", "cold-start-during-outage")
#: modes where the JWKS answers, badly, instead of being unreachable
ANSWER_MODES = ("slow", "http-error", "empty-keys", "malformed", "rotated", "tls-untrusted")
#: answers with a body of their own (a canned 200 that is not a usable key set)
BODY_MODES = ("empty-keys", "malformed", "rotated")
#: what an iptables target needs the impostor for (everything that answers)
IMPOSTOR_MODES = ANSWER_MODES
MALFORMED_KINDS = ("not-json", "truncated")
#: beyond the fetch timeouts of common JWKS clients (jose 5 s, Envoy jwt_authn http_uri typically 1-5 s, PyJWKClient
#: 30 s): a client with a timeout gives up, a client without one waits this long on every fetch
DEFAULT_SLOW_SECONDS = 35
DEFAULT_ERROR_STATUS = 503

#: what each fault driver can make (the one list: settings check, block_jwks_egress, doctor, scorecard)
DRIVER_FAILURES: dict[str, tuple[str, ...]] = {
    "iptables": JWKS_FAILURES,
    "envoy": tuple(f for f in JWKS_FAILURES if f != "tls-untrusted"),
    "istio": tuple(f for f in JWKS_FAILURES if f != "tls-untrusted"),
    "k8s-networkpolicy": (UNREACHABLE, *SCENARIOS),
}
#: why a driver cannot make a mode (shown with the refusal)
_WHY_NOT = {
    "envoy": "the services speak plain HTTP to Envoy's JWKS listener, so there is no TLS of theirs to break "
             "(an https JWKS behind Envoy is Envoy's own upstream TLS)",
    "istio": "Istio's HTTP faults and directResponse act on plain-HTTP egress; an https JWKS is TLS passthrough for "
             "the sidecar",
    "k8s-networkpolicy": "a NetworkPolicy only allows or denies packets: it can make the JWKS unreachable, never "
                         "slow it down or answer in its place",
}

#: the key the ``rotated`` answer holds: an RSA public key whose private key was thrown away when it was made, so no
#: token anywhere is signed with it (a JWKS that holds only keys no current token uses)
ROTATED_KID = "chaosext-rotated-1"
ROTATED_JWKS = {"keys": [{
    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": ROTATED_KID, "e": "AQAB",
    "n": "0k2ShmECOyV5fqGHpT5Ydcgzr9RFHi7fEONpAa-kriJBkqeHpZjkDzEDNnsI1GcbWunqG94Tl6j0-T0A_IypLMVgZi-1hbkar4qssmxZdmw"
         "2IQdfphkeODBKqWG2JWcv9zj6wBTsTOq0NaeNrNxL-w3ZtPISC8QtJLrRrEuT8BLdqDFgrzBza6grReOKGBQjFeYJK3XGKcPQQ8Apb4Ov4ch"
         "V8lUSakdmm7f8xzP3S3n3DiWroIcLzWDqkGIbra4io0gVM2MhLN7yl3encf_vFHPFJDAbb9HqOVCORyanTsuZfCXui6t4juKavrYJAtykzRM"
         "NorwMn6d9oueJUp8MMw"}]}

_NOT_JSON = b"<!doctype html><html><head><title>Service temporarily unavailable</title></head><body>" \
            b"<h1>We'll be right back</h1></body></html>\n"
_TRUNCATED = b'{"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "chaosext-truncated", "e": "AQAB", ' \
             b'"n": "0k2ShmECOyV5fqGHpT5Ydcgzr9RFHi7fEONpAa-kriJBkqeHpZjkDzEDNnsI1GcbWunqG94T'


@dataclass(frozen=True)
class Answer:
    """What the JWKS answers in a mode: status, content type, body, and a delay before it (``slow``)."""

    status: int = 200
    content_type: str = "application/json"
    body: bytes = b""
    delay_seconds: float = 0.0

    @property
    def text(self) -> str:
        """The body as text (every canned body is UTF-8)."""
        return self.body.decode()


def answer(failure: str, error_status: int = DEFAULT_ERROR_STATUS, malformed: str = "not-json",
           slow_seconds: float = DEFAULT_SLOW_SECONDS, real_jwks: bytes = b"") -> Answer:
    """The answer of ``failure`` (``slow``: ``real_jwks`` after the delay; ``unreachable`` and the scenarios have
    none: ValueError)."""
    if failure == "slow":
        return Answer(200, "application/json", real_jwks or b'{"keys": []}', float(slow_seconds))
    if failure == "http-error":
        return Answer(int(error_status), "text/plain",
                      f"{int(error_status)} upstream unavailable (chaosext JWKS_FAILURE=http-error)\n".encode())
    if failure == "empty-keys":
        return Answer(200, "application/json", b'{"keys": []}')
    if failure == "malformed":
        if malformed not in MALFORMED_KINDS:
            raise ValueError(f"JWKS_MALFORMED={malformed!r}: use one of {', '.join(MALFORMED_KINDS)}")
        return Answer(200, "application/json", _NOT_JSON if malformed == "not-json" else _TRUNCATED)
    if failure == "rotated":
        return Answer(200, "application/json", json.dumps(ROTATED_JWKS, separators=(",", ":")).encode())
    if failure == "tls-untrusted":  # behind the untrusted certificate: keys not the IdP's (a man in the middle)
        return Answer(200, "application/json", json.dumps(ROTATED_JWKS, separators=(",", ":")).encode())
    raise ValueError(f"JWKS_FAILURE={failure!r} has no answer of its own")


def body_variants() -> dict[str, Answer]:
    """Every canned 200 body a proxy route can switch to, by the name of its runtime switch (Envoy's
    ``<prefix>.body.<name>_percent``): empty_keys, not_json, truncated, rotated."""
    return {"empty_keys": answer("empty-keys"), "not_json": answer("malformed", malformed="not-json"),
            "truncated": answer("malformed", malformed="truncated"), "rotated": answer("rotated")}


def is_scenario(failure: str) -> bool:
    """True for the scenarios made on top of ``unreachable``."""
    return failure in SCENARIOS


def base_failure(failure: str) -> str:
    """The fault a mode is made with: ``unreachable`` for the scenarios, else the mode itself."""
    return UNREACHABLE if failure in SCENARIOS else failure


def needs_impostor(failure: str) -> bool:
    """True when an iptables target needs chaosext's impostor server for ``failure`` (the JWKS must answer)."""
    return failure in IMPOSTOR_MODES


def driver_failures(via: str) -> tuple[str, ...]:
    """The modes ``via`` can make (empty for an unknown driver)."""
    return DRIVER_FAILURES.get(via, ())


def _can(via: str) -> str:
    return f"{via} can make: {', '.join(driver_failures(via))}"


def failure_problem(failure: str, via: str, target: str = "", jwks_url: str = "") -> str:
    """'' when ``via`` can make ``failure`` against ``target`` for ``jwks_url``; else why not, and what it can make.
    No network, no change: asked before anything is changed."""
    if failure not in JWKS_FAILURES:
        return f"JWKS_FAILURE={failure!r} is unknown; use one of {', '.join(JWKS_FAILURES)}"
    if via not in DRIVER_FAILURES:
        return ""  # the driver itself is refused by its own check (FAULT_VIA)
    if failure not in DRIVER_FAILURES[via]:
        return f"FAULT_VIA={via} cannot make JWKS_FAILURE={failure}: {_WHY_NOT.get(via, '')}; {_can(via)}"
    scheme = urlsplit(jwks_url).scheme if jwks_url else ""
    if failure == "tls-untrusted" and scheme == "http":
        return (f"JWKS_FAILURE=tls-untrusted needs an https JWKS_URL ({jwks_url} is plain http: there is no TLS to "
                f"fail)")
    if via == "iptables" and needs_impostor(failure):
        try:
            pods = [i for i in split_items(target or "local") if i.partition(":")[0] == "k8s-pod"]
        except ValueError:
            pods = []
        if pods:
            return (f"FAULT_TARGET={target}: JWKS_FAILURE={failure} needs chaosext's impostor listening inside the "
                    f"target's network namespace, which chaosext cannot enter for a pod reached through the "
                    f"Kubernetes API (run on the node with a pid target, or use FAULT_VIA=istio); for pods iptables "
                    f"can make: {UNREACHABLE}, {', '.join(SCENARIOS)}")
        if scheme == "https" and failure in ("http-error", *BODY_MODES):
            return (f"JWKS_FAILURE={failure}: the JWKS is https and cannot be impersonated without the services "
                    f"trusting the impostor's certificate; a service that verifies TLS sees that as a TLS failure, "
                    f"which is JWKS_FAILURE=tls-untrusted (or use FAULT_VIA=envoy / istio, where the proxy answers "
                    f"plain HTTP); for an https JWKS iptables can make: {UNREACHABLE}, slow, tls-untrusted, "
                    f"{', '.join(SCENARIOS)}")
    return ""
