"""The lab as a target description (docs/target.md): written by ``chaosext lab up`` as ``<state dir>/target.json``
and named in ``state.json`` (``target_file``). The extension reads the lab through this file exactly as it reads any
other target's; this module (and the lab itself) is the only place that knows the lab's service names and routes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chaosext.core import safefs
from chaosext.lab.plan import LabConfig

__all__ = ["TARGET_FILE", "ITEMS", "LAB_TENANTS", "describe", "write"]

TARGET_FILE = "target.json"
#: the collection each lab service serves (its routes are /api/v1/<items>)
ITEMS = {"policy": "policies", "vuln": "findings", "notify": "notifications"}
#: the tenants the lab's clients act as when the Authority has no list of its own
LAB_TENANTS = tuple(f"t{i:02d}" for i in range(1, 13))
WRITE_BODY = {"name": "k6", "severity": "low", "note": "chaosext load"}


def _routes(name: str) -> list[dict[str, Any]]:
    base = f"/api/v1/{ITEMS[name]}"
    return [{"method": "GET", "path": base, "weight": 1}, {"method": "GET", "path": base + "/{id}", "weight": 1},
            {"method": "POST", "path": base, "body": WRITE_BODY, "weight": 1},
            {"method": "PUT", "path": base + "/{id}", "body": WRITE_BODY, "weight": 1}]


def describe(cfg: LabConfig, comps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The lab's target description (version 1)."""
    services = {name: {"url": comps[name]["url"], "routes": _routes(name),
                       "cache": {"http": {"url": comps[name]["health"], "field": "jwks.state",
                                          "age_field": "jwks.age_seconds",
                                          "states": {s: [s] for s in ("fresh", "stale", "expired", "empty")}}},
                       "ready": comps[name]["health"].rsplit("/", 1)[0] + "/ready"}
                for name in cfg.services}
    tenants = [t for t in cfg.tenants.split(",") if t] if cfg.tenants else list(LAB_TENANTS)
    doc: dict[str, Any] = {
        "version": 1,
        "identity_provider": {"authority_url": cfg.issuer, "jwks_url": cfg.jwks_url, "audience": cfg.audience,
                              "token": {"tenant_param": "tenant", "audience_param": "audience"},
                              "jwks_cache": {"ttl_seconds": cfg.jwks_ttl, "max_stale_seconds": cfg.jwks_max_stale}},
        "tenants": tenants,
        "tenant_header": cfg.tenant_header,
        "services": services,
        "audit": {"source": f"file:{cfg.state_path / 'audit.jsonl'}"},
    }
    if "prometheus" in comps:
        doc["prometheus"] = {"url": comps["prometheus"]["url"]}
    if "alertmanager" in comps:
        doc["alertmanager"] = {"url": comps["alertmanager"]["url"]}
    return doc


def write(cfg: LabConfig, comps: dict[str, dict[str, Any]]) -> Path:
    """Write the description into the state directory (0600, replaced atomically); its path."""
    # root-safe: a random temp name in the checked state directory, then a rename (chaosext.core.safefs)
    return safefs.write_file(cfg.state_path / TARGET_FILE, json.dumps(describe(cfg, comps), indent=2) + "\n")
