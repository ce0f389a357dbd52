"""Reading the services' JWKS cache state, through each one's signal as the target describes it.

A service's signal (``chaosext.core.target.CacheSignal``, ``services.<name>.cache`` in the target description) is
``http`` (a JSON endpoint's field, read now), ``prometheus`` (a PromQL expression per state, >= 1 while in it), or
none: then the metric contract's ``METRIC_CACHE_FRESH / _STALE / _EXPIRED / _EMPTY`` expressions, by the service
label. A service whose signal says nothing is ``unknown`` — never ``fresh``: a check that needs the state then says it
could not judge it.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from chaosext.core.target import CACHE_STATES, Service
from chaosext.metrics import prom
from chaosext.metrics.prom import Prom, prom_of
from chaosext.run.context import RunContext

__all__ = ["CacheReading", "PRIORITY", "read_caches", "services_in_state", "signal_of", "own_queries", "state_expr"]

#: when several states' expressions hold at once, the worse one wins
PRIORITY = ("expired", "empty", "stale", "fresh")
HTTP_TIMEOUT = 3.0


@dataclass(frozen=True)
class CacheReading:
    """One service's cache now: its state (``fresh``, ``stale``, ``expired``, ``empty`` or ``unknown``), the seconds
    since its last good fetch when the signal says, and where it was read (``http``, ``prometheus``, ``metrics`` =
    the metric contract, ``none``)."""

    state: str
    age: float | None = None
    source: str = "none"
    detail: str = ""


def signal_of(svc: Service) -> str:
    """The kind of signal a service is read through: ``http``, ``prometheus`` or ``metrics`` (the contract's)."""
    return svc.cache.kind if svc.cache.kind in ("http", "prometheus") else "metrics"


def own_queries(services: Mapping[str, Service], state: str) -> dict[str, str]:
    """service -> its own PromQL for ``state`` (the services whose description gives a ``cache.prometheus`` one)."""
    return {name: svc.cache.queries[state] for name, svc in services.items()
            if signal_of(svc) == "prometheus" and svc.cache.queries.get(state)}


def state_expr(state: str, contract_expr: str, own: Mapping[str, str], label: str) -> str:
    """One PromQL for ``state`` over every service: 1 while a service is in it (0 or no sample otherwise), labelled
    ``<label>=<service>`` and ``state=<state>``. ``contract_expr`` is the metric contract's expression for the state
    (its series carrying ``label``); ``own`` the services' own expressions, each labelled with its service's name.
    Values are capped at 1, so a count or a level that is >= 1 while in the state reads as 1; the ``state`` label
    keeps the states apart in an ``or`` (the report's plot, the rendered dashboard)."""
    parts = [f"label_replace(max(({query})), {json.dumps(label)}, {json.dumps(name)}, \"\", \"\")"
             for name, query in own.items()]
    combined = " or ".join([*parts, f"({contract_expr})"]) if parts else contract_expr
    return f"label_replace(clamp_max(({combined}), 1), \"state\", {json.dumps(state)}, \"\", \"\")"


def _field(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _read_http(svc: Service) -> CacheReading:
    signal = svc.cache
    try:
        doc = requests.get(signal.url, timeout=HTTP_TIMEOUT).json()
    except (requests.RequestException, ValueError) as exc:
        return CacheReading("unknown", None, "http", f"{signal.url}: {type(exc).__name__}")
    word = _field(doc, signal.state_field)
    age = _field(doc, signal.age_field) if signal.age_field else None
    state = signal.state_of(word) if word is not None else "unknown"
    return CacheReading(state, float(age) if isinstance(age, (int, float)) else None, "http",
                        "" if state != "unknown" else f"{signal.url} {signal.state_field}={word!r}")


def _holds(p: Prom, expr: str, at: float | None = None) -> bool:
    return any(float(s["value"][1]) >= 1 for s in prom.query(p, expr, at))


def _read_prometheus(p: Prom, svc: Service) -> CacheReading:
    try:
        held = [state for state in PRIORITY if svc.cache.queries.get(state) and _holds(p, svc.cache.queries[state])]
    except (requests.RequestException, RuntimeError, ValueError) as exc:
        return CacheReading("unknown", None, "prometheus", f"query failed: {type(exc).__name__}")
    return CacheReading(held[0], None, "prometheus") if held else \
        CacheReading("unknown", None, "prometheus", "no state expression holds")


def _read_contract(p: Prom, names: list[str]) -> dict[str, CacheReading]:
    c = p.contract
    exprs = {"fresh": c.cache_fresh, "stale": c.cache_stale, "expired": c.cache_expired, "empty": c.cache_empty}
    held: dict[str, list[str]] = {}
    try:
        for state in PRIORITY:
            for s in prom.query(p, c.by_service(exprs[state])):
                if float(s["value"][1]) >= 1:
                    held.setdefault(c.service_of(s), []).append(state)
    except (requests.RequestException, RuntimeError, ValueError) as exc:
        return {n: CacheReading("unknown", None, "metrics", f"query failed: {type(exc).__name__}") for n in names}
    return {n: CacheReading(held[n][0], None, "metrics") if n in held else
            CacheReading("unknown", None, "none", f"no cache series for {n} (METRIC_CACHE_* by "
                                                  f"{c.service_label}={n!r}) and no services.{n}.cache")
            for n in names}


def read_caches(ctx: RunContext) -> dict[str, CacheReading]:
    """Every service's cache now, each through its own signal (the HTTP ones in parallel)."""
    services = ctx.cfg.services
    p = prom_of(ctx)
    out: dict[str, CacheReading] = {}
    by_contract = [n for n, s in services.items() if signal_of(s) == "metrics"]
    if by_contract:
        out.update(_read_contract(p, by_contract))
    http = [s for s in services.values() if signal_of(s) == "http"]
    if http:
        with ThreadPoolExecutor(max_workers=min(16, len(http))) as pool:
            out.update(zip([s.name for s in http], pool.map(_read_http, http), strict=True))
    for s in services.values():
        if signal_of(s) == "prometheus":
            out[s.name] = _read_prometheus(p, s)
    return {n: out[n] for n in services}


def services_in_state(ctx: RunContext, state: str, start: float, end: float) -> set[str]:
    """Services whose Prometheus signal (their own, or the contract's) held ``state`` at any time in [start, end]
    (a subquery over the window); empty when Prometheus does not answer. An HTTP signal has no history: the watch
    step's ticks are its record."""
    assert state in CACHE_STATES
    p = prom_of(ctx)
    c = p.contract
    rng = f"[{max(1, math.ceil(end - start))}s:]"
    found: set[str] = set()
    try:
        contract_expr = {"fresh": c.cache_fresh, "stale": c.cache_stale, "expired": c.cache_expired,
                         "empty": c.cache_empty}[state]
        for name, svc in ctx.cfg.services.items():
            query = svc.cache.queries.get(state) if signal_of(svc) == "prometheus" else None
            if query and _holds(p, f"max_over_time(({query}){rng})", end):
                found.add(name)
        contract_names = {n for n, s in ctx.cfg.services.items() if signal_of(s) == "metrics"}
        if contract_names:
            res = prom.query(p, c.by_service(f"max_over_time(({contract_expr}){rng})"), end)
            found |= {c.service_of(s) for s in res if float(s["value"][1]) >= 1} & contract_names
    except (requests.RequestException, RuntimeError, ValueError):
        return found
    return found
