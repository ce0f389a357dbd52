"""The lab's names -> a target's: the :class:`~chaosext.render.promql.Names` the renderer rewrites with.

The shipped rules and dashboard (``ops/devops/tenant/``) are written in the names of the default metric contract
(``MetricContract()``, what the lab's services export). A target's metric contract (``prometheus.metrics`` of its
description, the ``METRIC_*`` settings) says what each of those is called there:

- the request counter (``METRIC_REQUESTS``) with ``METRIC_REQUESTS_MATCHERS`` added to every selector of it, its
  status label and the error statuses (``METRIC_STATUS_LABEL``, ``METRIC_ERROR_STATUS``), the service and tenant
  labels (``METRIC_SERVICE_LABEL``, ``METRIC_TENANT_LABEL``; ``none``: per-tenant rules aggregate by service);
- the latency histogram (``METRIC_LATENCY_HISTOGRAM``; ``off``: the latency rules are left out). A target's own
  histogram has no ``kind`` label as the lab's has: its latency series without one are held to the read SLO;
- each JWKS cache state (``METRIC_CACHE_FRESH`` ... any PromQL, >= 1 while in the state), or a service's own
  ``cache.prometheus`` expressions, each labelled with the service's name;
- the key lookups (``METRIC_CACHE_LOOKUPS``, label ``result`` with the lab's words).

Every other series the shipped files read (rate-limit hits, data volume, queue depth, label overflow, a tenant's own
auth failures, JWKS fetches and cache age, validations by reason) is the lab's own convention: rendered for a target
whose metric contract is the lab's, left out for any other, and the rendering says which rules it left out.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from chaosext.core.rulefiles import EXPECTED_SERVICES_RECORD
from chaosext.core.target import CACHE_STATES, MetricContract, Service
from chaosext.metrics.cache import own_queries, state_expr
from chaosext.render.promql import Matcher, Names, parse_selector

__all__ = ["LAB", "BUILTIN", "Mapping", "mapping_for"]

#: the names the shipped files are written in
LAB = MetricContract()
#: series of Prometheus itself (and the services list) every target has
BUILTIN = {"up", "ALERTS", "ALERTS_FOR_STATE", EXPECTED_SERVICES_RECORD}
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def _quote(text: str) -> str:
    return json.dumps(text)


def _selector_text(name: str, matchers: Iterable[Matcher]) -> str:
    body = ",".join(m.text for m in matchers)
    return f"{name}{{{body}}}" if body else name


@dataclass
class Mapping:
    """How to rewrite the shipped files for one target (``names``), what the rendering notes, and which recording
    rules are left out (``dropped``, filled in while rendering)."""

    contract: MetricContract
    services: dict[str, Service]
    records: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    @property
    def is_lab(self) -> bool:
        """True when the target's metric names are the lab's (the shipped files apply unchanged)."""
        return self.contract == LAB and not self._own_cache_queries()

    @property
    def names(self) -> Names:
        """The renames as the PromQL rewriter takes them."""
        c = self.contract
        labels: dict[str, str | None] = {LAB.service_label: c.service_label, LAB.status_label: c.status_label,
                                         LAB.tenant_label: c.tenant_label or None}
        return Names(labels=labels, selector=self._selector)

    def _own_cache_queries(self) -> dict[str, str]:
        return {n: q for state in CACHE_STATES for n, q in own_queries(self.services, state).items()}

    # ---------------------------------------------------------------------------------------------- selectors
    def _selector(self, name: str, matchers: tuple[Matcher, ...]) -> str | None:
        c = self.contract
        if name in self.dropped:
            return None
        if name in self.records or name in BUILTIN:
            return self._recorded(name, matchers)
        if name == LAB.requests:
            return self._requests(matchers)
        for suffix in _HISTOGRAM_SUFFIXES:
            if name == LAB.latency_histogram + suffix:
                if not c.latency_histogram:
                    return None
                return "" if c.latency_histogram == LAB.latency_histogram else \
                    _selector_text(c.latency_histogram + suffix, matchers)
        cache_name = parse_selector(LAB.cache_fresh)[0]
        if name == cache_name:
            return self._cache(matchers)
        lookups_name, lookups_matchers = parse_selector(LAB.cache_lookups)
        if name == lookups_name:
            target_name, target_matchers = parse_selector(c.cache_lookups)
            if (target_name, target_matchers) == (lookups_name, lookups_matchers):
                return ""
            return _selector_text(target_name, (*target_matchers, *matchers))
        if name.startswith(("tenant_service_kind:", "tenant_service:", "service:")) and name not in self.records:
            return None  # a recorded series of a rule this rendering does not have
        return "" if self.is_lab else None

    def _recorded(self, name: str, matchers: tuple[Matcher, ...]) -> str:
        """A recorded series: as it is, but on a target's own histogram (no ``kind`` label) a latency series without
        a kind counts as a read (the stricter SLO)."""
        if self.contract.latency_histogram in ("", LAB.latency_histogram) or not any(
                m.label == "kind" and m.op == "=" and m.unquoted == "read" for m in matchers):
            return ""
        return _selector_text(name, tuple(Matcher("kind", "=~", '"read|"')
                                          if m.label == "kind" and m.unquoted == "read" else m for m in matchers))

    def _requests(self, matchers: tuple[Matcher, ...]) -> str:
        c = self.contract
        out = []
        for m in matchers:
            if m.label == c.status_label and m.op == "=~" and m.unquoted == LAB.error_status:
                m = Matcher(m.label, m.op, _quote(c.error_status))
            out.append(m)
        extra = parse_selector("{" + c.requests_matchers + "}")[1] if c.requests_matchers else ()
        if c.requests == LAB.requests and not extra and tuple(out) == matchers:
            return ""
        return _selector_text(c.requests, (*out, *extra))

    def _cache(self, matchers: tuple[Matcher, ...]) -> str | None:
        """A selector of the lab's cache-state gauge: its state's expression on the target (``clamp_max``-ed to 1
        and labelled with the state, so the lab's ``== 1`` and ``or`` between states hold), or, without a state
        matcher (a series that names a target's service), the request counter."""
        state = next((m.unquoted for m in matchers if m.label == "state" and m.op == "="), "")
        rest = tuple(m for m in matchers if m.label != "state")
        if state not in CACHE_STATES:
            return "" if self.is_lab else self._requests(rest) or _selector_text(self.contract.requests, rest)
        contract_expr = getattr(self.contract, f"cache_{state}")
        if contract_expr == getattr(LAB, f"cache_{state}") and not self._own_cache_queries():
            return ""
        expr = contract_expr
        try:  # a plain selector takes the other matchers (a dashboard's service filter)
            name, given = parse_selector(contract_expr)
            expr = _selector_text(name, (*given, *rest))
        except ValueError:
            if rest:
                self.note(f"the cache-state expression of METRIC_CACHE_{state.upper()} is not a plain selector: "
                          f"{', '.join(m.text for m in rest)} is not applied to it")
        return state_expr(state, expr, own_queries(self.services, state), self.contract.service_label)

    def note(self, text: str) -> None:
        """Remember something the rendering's reader must know (once)."""
        if text not in self.notes:
            self.notes.append(text)


def mapping_for(contract: MetricContract, services: dict[str, Service], records: Iterable[str]) -> Mapping:
    """The mapping for a target (its metric contract and services), ``records``: the recording rules of the
    shipped files."""
    m = Mapping(contract, dict(services), set(records))
    for name, svc in services.items():
        if svc.cache.kind == "http":
            m.note(f"{name}'s cache state is read over HTTP ({svc.cache.url}): the rules see it only through "
                   f"METRIC_CACHE_* by {contract.service_label}={name!r}")
    return m
