"""Which service failed which check: the per-service view of a run's judgements (the scorecard's cells).

A check says which services failed it in ``services_failed`` (the outage checks and the mode checks do); where it does
not, the services named in its findings (``failures``, ``accepted``, ``inconclusive``: each with a ``service``) or
listed as ``missing`` / ``not_recovered`` / ``not_fresh`` are the failing ones. A failed check that names no service
(the client-side error rate, the alerts, the outage holding) is the run's, not a service's.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["failing_services", "per_service"]

_LISTS = ("missing", "not_recovered", "not_fresh")
_FINDINGS = ("failures", "accepted", "inconclusive")


def failing_services(result: Mapping[str, Any], services: Iterable[str]) -> set[str] | None:
    """The services ``result`` (a failed check) fails; None when it names none (the run's failure). A passed or
    not-judged check fails no service."""
    if result.get("ok") or result.get("not_judged"):
        return set()
    known = set(services)
    if isinstance(result.get("services_failed"), list) and result["services_failed"]:
        return set(map(str, result["services_failed"])) & known or None
    found = {str(f.get("service")) for key in _FINDINGS for f in result.get(key) or [] if isinstance(f, Mapping)}
    found |= {str(s) for key in _LISTS for s in result.get(key) or [] if isinstance(s, str)}
    return (found & known) or None


def per_service(results: Mapping[str, Any], services: Iterable[str]) -> dict[str, Any]:
    """``{"services": {service: [failed check, ...]}, "run": [failed checks no service is named in],
    "not_judged": [check, ...]}`` over ``results`` (check name -> result)."""
    names = list(services)
    out: dict[str, Any] = {"services": {s: [] for s in names}, "run": [], "not_judged": []}
    for check, result in results.items():
        if not isinstance(result, Mapping):
            continue
        if result.get("not_judged"):
            out["not_judged"].append(check)
        failing = failing_services(result, names)
        if failing is None:
            out["run"].append(check)
            continue
        for service in sorted(failing):
            out["services"][service].append(check)
    return out
