"""Chaos Toolkit probes: is the JWKS endpoint reachable from the target, and is a chaosext block active there.

Empty arguments come from the run's settings (``JWKS_URL``, ``FAULT_VIA``, ``FAULT_TARGET``).
"""
from chaosext.core.errors import ActivityResult
from chaosext.core.settings import Configuration, Secrets
from chaosext.egress import build_driver
from chaosext.egress.actions import fault_settings
from chaosext.egress.base import load_records, parse_jwks_url, resolve_addresses
from chaosext.egress.iptables import HostRunner, Runner, runner_for
from chaosext.run.context import run_context

__all__ = ["jwks_reachable", "egress_block_active"]


def jwks_reachable(
    jwks_url: str = "",
    target: str = "",
    timeout_seconds: float = 2.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> ActivityResult:
    """A fresh TCP connect and one HTTP GET of the JWKS URL from inside the target, to every A/AAAA address.

    target: ``local``, ``netns:<name>``, ``pid:<pid>`` or ``k8s-pod:<ns>/<pod|selector>`` (other target kinds,
    e.g. an Envoy admin URL or a namespace, are probed from this host). Returns ``{"reachable": bool,
    "error": "" | "timeout" | "refused" | "reset" | ..., "elapsed_ms": float, "status": int, "addresses": [...]}``;
    reachable only if every address answered with an HTTP status line.
    """
    s = fault_settings(run_context(configuration, secrets), jwks_url, "", target)
    host, port = parse_jwks_url(s.jwks_url)
    addresses = resolve_addresses(host, port)
    kind = s.target.partition(":")[0]
    runners: list[Runner] = runner_for(s.target, s.options, secrets=secrets) \
        if kind in ("local", "netns", "pid", "k8s-pod") else [HostRunner("local")]
    results = [dict(r.probe(a, port, float(timeout_seconds), s.jwks_url), target=r.label)
               for r in runners for a in addresses]
    failed = [r for r in results if not r["reachable"]]
    return {
        "reachable": not failed,
        "error": failed[0]["error"] if failed else "",
        "elapsed_ms": max(r["elapsed_ms"] for r in results),
        "status": results[0].get("status", 0),
        "url": s.jwks_url,
        "target": s.target,
        "addresses": results,
    }


def egress_block_active(
    jwks_url: str = "",
    via: str = "",
    target: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> ActivityResult:
    """Whether any chaosext egress fault is present on the target, found by its tags (not by chaosext's records).

    Returns ``{"active": bool, "faults": [{"run_id": ..., ...}], "recorded": [run_id, ...]}``.
    """
    s = fault_settings(run_context(configuration, secrets), jwks_url, via, target)
    faults = build_driver(s.via, s.options, secrets).find_orphans(s.target)
    recorded = [r["spec"]["run_id"] for r in load_records()
                if r["spec"]["via"] == s.via and r["spec"]["target"] == s.target]
    return {"active": bool(faults), "faults": faults, "recorded": recorded, "via": s.via, "target": s.target}
