"""Envoy driver: switch on a dedicated HTTP fault filter, scoped to the JWKS upstream cluster, through the admin API.

The filter (docs/egress.md has the config) reads its own runtime keys under ``<prefix>`` (default
``chaosext.jwks``), never the global ``fault.http.*``:

* unreachable, reject -> ``<prefix>.abort.abort_percent=100`` and ``<prefix>.abort.http_status=503`` (an immediate
  503); drop -> ``<prefix>.delay.fixed_delay_percent=100`` and ``<prefix>.delay.fixed_duration_ms=<duration>`` (a hang)
* slow -> the delay keys with ``JWKS_SLOW_SECONDS``; http-error -> the abort keys with ``JWKS_ERROR_STATUS``
* empty-keys, malformed (not-json | truncated), rotated -> ``<prefix>.body.<variant>_percent=100``: the JWKS route's
  ``runtime_fraction`` switch to a ``direct_response`` with the mode's canned 200 (``chaosext.core.failures``; the
  lab's bootstrap and docs/egress.md carry these routes, ``chaosext.lab.envoy.body_routes``)
* tls-untrusted: refused (the services speak plain HTTP to Envoy)

plus ``<prefix>.run_id`` / ``<prefix>.expires_at`` as tags. ``POST /runtime_modify`` needs an admin runtime layer
(503 "No admin layer specified" otherwise); an empty value deletes an override. Verified with ``GET /runtime`` and
the filter's ``aborts_injected`` / ``delays_injected`` counters (``GET /stats?format=json&filter=...``); with option
``envoy_verify_fetch`` also by one JWKS fetch through Envoy (the JWKS URL must be Envoy's listener), because keys set
on a filter scoped to the wrong cluster block nothing. Checked against a real Envoy 1.40.0 (tests/egress).
The target is the admin URL (``local`` = option ``envoy_admin_url`` or ``http://127.0.0.1:9901``), read with the one
URL parser that also sends (``chaosext.core.urls``: no user info, backslash or parser disagreement) and spoken to
without following a redirect to another origin. A fault is this driver's only when its ``<prefix>.run_id`` tag is
exactly a run id (``chaosext.core.ids``); keys under the prefix without one are somebody else's and stay.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import requests

from chaosext.core import ids, urls
from chaosext.core.failures import BODY_MODES, body_variants, failure_problem
from chaosext.core.names import ENVOY_RUNTIME_PREFIX, ENVOY_STAT_PREFIX, check_run_id
from chaosext.egress.base import FaultError, FaultSpec

__all__ = ["EnvoyDriver", "DEFAULT_ADMIN_URL", "DEFAULT_PREFIX", "body_variant"]

DEFAULT_ADMIN_URL = "http://127.0.0.1:9901"
DEFAULT_PREFIX = ENVOY_RUNTIME_PREFIX
DEFAULT_STAT_PREFIX = ENVOY_STAT_PREFIX
NO_ADMIN_LAYER = (
    "Envoy has no admin runtime layer, so /runtime_modify is refused (503). Add to the bootstrap: "
    "layered_runtime: {layers: [{name: static, static_layer: {}}, {name: admin, admin_layer: {}}]} (docs/egress.md)"
)


class EnvoyDriver:
    """Runtime-switched fault filter on the JWKS upstream cluster, through Envoy's admin API."""

    via = "envoy"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.prefix = str(self.options.get("envoy_runtime_prefix", DEFAULT_PREFIX))
        if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)*", self.prefix) or self.prefix.startswith("fault.http"):
            raise FaultError(f"envoy_runtime_prefix {self.prefix!r} must be a dedicated dotted key, not fault.http.*; "
                             f"use the prefix of the JWKS fault filter's runtime keys (default {DEFAULT_PREFIX})")
        self.timeout = float(self.options.get("http_timeout", 5.0))

    # -- helpers

    def admin_url(self, target: str) -> str:
        """The admin base URL for ``target`` (FaultError when chaosext.core.urls refuses it)."""
        if target.startswith(("http://", "https://")):
            url = target
        elif target.startswith("envoy:"):
            url = target[len("envoy:"):]
        else:
            url = str(self.options.get("envoy_admin_url") or DEFAULT_ADMIN_URL)
        try:
            urls.parse(url, "Envoy admin URL")
        except urls.UrlError as exc:
            raise FaultError(str(exc)) from None
        return url.rstrip("/")

    def keys(self, spec: FaultSpec) -> dict[str, str]:
        """The runtime overrides this fault sets (module docstring: one set per JWKS_FAILURE)."""
        p = self.prefix
        failure = str(spec.options.get("jwks_failure") or "unreachable")
        params = dict(spec.options.get("answer") or {})
        if problem := failure_problem(failure, self.via):
            raise FaultError(problem)
        if failure in BODY_MODES:
            fault = {f"{p}.body.{body_variant(failure, params)}_percent": "100"}
        elif failure == "http-error":
            fault = {f"{p}.abort.abort_percent": "100", f"{p}.abort.http_status": str(params.get("error_status"))}
        elif failure == "slow":
            ms = int(float(params.get("slow_seconds") or 0) * 1000)
            fault = {f"{p}.delay.fixed_delay_percent": "100", f"{p}.delay.fixed_duration_ms": str(ms)}
        elif spec.mode == "reject":
            fault = {f"{p}.abort.abort_percent": "100", f"{p}.abort.http_status": "503"}
        else:
            ms = int(self.options.get("envoy_delay_ms", spec.duration_seconds * 1000))
            fault = {f"{p}.delay.fixed_delay_percent": "100", f"{p}.delay.fixed_duration_ms": str(ms)}
        return {**fault, f"{p}.run_id": spec.run_id, f"{p}.expires_at": str(int(spec.expires_at))}

    def all_keys(self) -> list[str]:
        """Every key this driver may set (restore clears them all)."""
        p = self.prefix
        return [f"{p}.abort.abort_percent", f"{p}.abort.http_status", f"{p}.delay.fixed_delay_percent",
                f"{p}.delay.fixed_duration_ms", *(f"{p}.body.{name}_percent" for name in body_variants()),
                f"{p}.run_id", f"{p}.expires_at"]

    def _request(self, method: str, url: str) -> requests.Response:
        try:
            with urls.session() as s:  # a redirect never takes the fault to another origin
                return s.request(method, url, timeout=self.timeout)
        except urls.CrossOriginRedirect as exc:
            raise FaultError(str(exc)) from None
        except requests.RequestException as exc:
            raise FaultError(f"Envoy admin unreachable at {url.split('?')[0]}: {exc}; check the admin URL "
                             f"(FAULT_TARGET or ENVOY_ADMIN_URL) and that Envoy runs") from None

    def runtime(self, target: str) -> dict[str, str]:
        """``GET /runtime`` as ``{key: final_value}`` for this driver's keys."""
        resp = self._request("GET", f"{self.admin_url(target)}/runtime")
        if resp.status_code != 200:
            raise FaultError(f"GET /runtime answered {resp.status_code}: {resp.text[:200]}; is "
                             f"{self.admin_url(target)} Envoy's admin address?")
        entries: dict[str, dict[str, Any]] = resp.json().get("entries", {})
        return {k: v.get("final_value", "") for k, v in entries.items()
                if k.startswith(self.prefix + ".") and v.get("final_value", "") != ""}

    def active(self, have: dict[str, str]) -> dict[str, str]:
        """The keys of ``have`` that mean "a fault is on": a run tag, or a non-zero percentage."""
        p = self.prefix
        on = {k: v for k, v in have.items()
              if k == f"{p}.run_id" or (k.endswith("_percent") and v.strip() not in ("", "0"))}
        return on

    def _modify(self, target: str, values: dict[str, str]) -> None:
        resp = self._request("POST", f"{self.admin_url(target)}/runtime_modify?{urlencode(values)}")
        if resp.status_code == 503:
            raise FaultError(NO_ADMIN_LAYER)
        if resp.status_code != 200:
            raise FaultError(f"POST /runtime_modify answered {resp.status_code}: {resp.text[:200]}; is "
                             f"{self.admin_url(target)} Envoy's admin address?")

    def counters(self, target: str) -> dict[str, int]:
        """The fault filter's ``aborts_injected`` / ``delays_injected`` counters (summed over HCMs)."""
        prefix = self.options.get("envoy_stat_prefix", "")
        scope = rf"http\.{re.escape(prefix)}\.fault\." if prefix else r"http\..*\.fault\."
        url = f"{self.admin_url(target)}/stats?" + urlencode(
            {"format": "json", "filter": scope + r"(aborts|delays)_injected$"})
        resp = self._request("GET", url)
        out = {"aborts_injected": 0, "delays_injected": 0}
        if resp.status_code == 200:
            for stat in resp.json().get("stats", []):
                for name in out:
                    if isinstance(stat, dict) and str(stat.get("name", "")).endswith("." + name):
                        out[name] += int(stat.get("value", 0))
        return out

    # -- Driver

    def describe(self, spec: FaultSpec) -> list[str]:
        base = self.admin_url(spec.target)
        return [f"GET {base}/runtime", f"POST {base}/runtime_modify?{urlencode(self.keys(spec))}"]

    def describe_revert(self, spec: FaultSpec) -> list[str]:
        return [self.describe_revert_at(spec.target)]

    def describe_revert_at(self, target: str) -> str:
        """The one admin call that clears every key of this driver at ``target``."""
        return f"POST {self.admin_url(target)}/runtime_modify?{urlencode({k: '' for k in self.all_keys()})}"

    def apply(self, spec: FaultSpec) -> dict[str, Any]:
        current = self.runtime(spec.target)  # admin reachable, and not someone else's fault under our keys
        other = current.get(f"{self.prefix}.run_id")
        if other and other != spec.run_id:
            raise FaultError(f"Envoy fault {other} is already active at {self.admin_url(spec.target)}; restore it "
                             f"first")
        self._modify(spec.target, self.keys(spec))
        return {"admin_url": self.admin_url(spec.target), "runtime": self.keys(spec),
                "counters_before": self.counters(spec.target)}

    def fetch(self, spec: FaultSpec) -> dict[str, Any]:
        """One GET of the JWKS URL (which must go through this Envoy): ``{"status": int, "error": "" | "timeout" |
        ..., "blocked": bool}``; blocked = 503 at once (reject), no answer within ``verify_timeout`` (drop, slow),
        JWKS_ERROR_STATUS (http-error), or exactly the mode's canned body (empty-keys, malformed, rotated)."""
        timeout = float(self.options.get("verify_timeout", 1.0))
        resp: requests.Response | None = None
        try:
            resp = requests.get(spec.jwks_url, timeout=timeout, headers={"Connection": "close"})
            out: dict[str, Any] = {"status": resp.status_code, "error": ""}
        except requests.Timeout:
            out = {"status": 0, "error": "timeout"}
        except requests.RequestException as exc:
            out = {"status": 0, "error": type(exc).__name__}
        failure = str(spec.options.get("jwks_failure") or "unreachable")
        params = dict(spec.options.get("answer") or {})
        if failure in BODY_MODES:
            body = body_variants()[body_variant(failure, params)].body
            out["blocked"] = out["status"] == 200 and resp is not None and resp.content == body
        elif failure == "http-error":
            out["blocked"] = out["status"] == int(params.get("error_status") or 0)
        elif failure == "slow" or spec.mode != "reject":
            out["blocked"] = out["error"] == "timeout"
        else:
            out["blocked"] = out["status"] == 503
        return out

    def verify(self, spec: FaultSpec) -> dict[str, Any]:
        """The keys are set (``GET /runtime``); with option ``envoy_verify_fetch`` also a JWKS fetch through Envoy
        is refused (reject: 503) or hangs (drop), which moves the filter's counters."""
        want = self.keys(spec)
        have = self.runtime(spec.target)
        missing = {k: v for k, v in want.items() if have.get(k) != v}
        result: dict[str, Any] = {"blocked": not missing, "runtime": have, "missing": missing}
        if self.options.get("envoy_verify_fetch"):
            result["fetch"] = self.fetch(spec)
            result["blocked"] = result["blocked"] and result["fetch"]["blocked"]
        return {**result, **self.counters(spec.target)}

    def revert(self, spec: FaultSpec) -> dict[str, Any]:
        return {"removed": self.remove_orphan(spec.target, spec.run_id), "left": []}

    def find_orphans(self, target: str) -> list[dict[str, Any]]:
        have = self.runtime(target)
        run_id = have.get(f"{self.prefix}.run_id", "")
        if not self.active(have) or not ids.is_run_id(run_id):
            return []  # keys without a run id tag of chaosext's exact shape are not ours
        return [{"run_id": run_id, "via": self.via, "target": target,
                 "keys": sorted(self.active(have)), "expires_at": have.get(f"{self.prefix}.expires_at", "")}]

    def remove_orphan(self, target: str, run_id: str) -> list[str]:
        check_run_id(run_id)
        have = self.runtime(target)
        if not self.active(have) or have.get(f"{self.prefix}.run_id") != run_id:
            return []  # nothing of this run (another run's or somebody else's keys stay)
        self._modify(target, {k: "" for k in self.all_keys()})
        left = self.active(self.runtime(target))
        if left:
            raise FaultError(f"Envoy still holds chaosext runtime keys after clearing: {left}; clear them by hand: "
                             f"{self.describe_revert_at(target)}")
        return [f"cleared {k}" for k in sorted(have)]


def body_variant(failure: str, params: dict[str, Any]) -> str:
    """The direct-response route a body mode switches on: empty_keys, not_json, truncated or rotated."""
    if failure == "malformed":
        return "truncated" if params.get("malformed") == "truncated" else "not_json"
    return failure.replace("-", "_")
