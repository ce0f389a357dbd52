"""Target descriptions for unit tests (docs/target.md): a small target that is not the lab, written where a test wants
it, and a stand-in for a running lab that names its own description the way ``chaosext lab up`` does.

    conf = target_config(tmp_path, outage_seconds="30")          # TARGET_FILE in tmp_path, no lab: a valid run's
    cfg = load_config(conf)                                      #   settings (validate(cfg) == [])
    doc = description(tenant_header="none")                      # the description with a top-level key replaced
    path = write_target(tmp_path, doc)                           # ... written as JSON (name="x.yaml": as YAML)
    lab_dir = write_lab(tmp_path / "lab", doc)                   # state.json + target.json of a "running lab"

Every URL is on loopback at port 9 (discard: nothing answers), so a test that reaches out by mistake fails at once;
tests that need answers replace the URLs with their stubs'.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from chaosext.core import procs

__all__ = ["NOWHERE", "SERVICES", "TENANTS", "description", "write_target", "target_config", "write_lab"]

#: a loopback URL nothing answers
NOWHERE = "http://127.0.0.1:9"
#: the described services and their routes (any names: this is not the lab)
SERVICES: dict[str, Any] = {
    "orders": {"url": f"{NOWHERE}/orders",
               "routes": [{"method": "GET", "path": "/v2/orders", "weight": 9},
                          {"method": "POST", "path": "/v2/orders", "body": {"sku": "x-1"}, "weight": 1}],
               "cache": {"prometheus": {"fresh": 'keys_cached{app="orders"} > 0',
                                        "expired": 'keys_cached{app="orders"} == bool 0'}}},
    "billing": {"url": f"{NOWHERE}/billing",
                "routes": ["GET /invoices/{id}", "GET /invoices", "PUT /invoices/{id}"],
                "cache": {"http": {"url": f"{NOWHERE}/billing/health", "field": "jwks.state",
                                   "states": {"fresh": ["ok"], "stale": ["degraded"], "expired": ["failed"]}}}},
}
TENANTS = ["acme", "globex", "initech"]
_BASE: dict[str, Any] = {
    "version": 1,
    "identity_provider": {"authority_url": NOWHERE, "jwks_url": f"{NOWHERE}/jwks", "audience": "https://orders.example",
                          "token": {"tenant_param": "", "audience_param": "resource"},
                          "jwks_cache": {"ttl_seconds": 60, "max_stale_seconds": 600}},
    "tenants": TENANTS,
    "tenant_header": "X-Tenant-ID",
    "services": SERVICES,
    "prometheus": {"url": NOWHERE},
    "alertmanager": {"url": NOWHERE},
    "audit": {"source": "file:/nonexistent/audit.jsonl"},
}


def description(**top: Any) -> dict[str, Any]:
    """A valid version-1 description (a copy: change it freely), with the given top-level keys replaced (a value of
    None removes the key)."""
    doc = copy.deepcopy(_BASE)
    for key, value in top.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = copy.deepcopy(value)
    return doc


def write_target(where: Path, doc: dict[str, Any] | None = None, name: str = "target.json") -> str:
    """Write ``doc`` (default :func:`description`) into the directory ``where`` as JSON, or YAML when ``name`` ends in
    .yaml; its path."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / name
    doc = description() if doc is None else doc
    path.write_text(yaml.safe_dump(doc, sort_keys=False) if name.endswith((".yaml", ".yml")) else json.dumps(doc))
    return str(path)


def target_config(tmp: Path, doc: dict[str, Any] | None = None, **settings: Any) -> dict[str, Any]:
    """A configuration naming a description written in ``tmp`` (``doc``, default :func:`description`) with no lab
    (a lab directory that does not exist), plus ``settings``."""
    return {"chaosext_lab_dir": str(tmp / "no-lab"), "target_file": write_target(tmp, doc), **settings}


def write_lab(lab_dir: Path, doc: dict[str, Any] | None = None, **state: Any) -> Path:
    """The state a running lab leaves in ``lab_dir``: ``target.json`` (``doc``) and ``state.json`` naming it; returns
    ``lab_dir``. The stand-in "runs" the way chaosext.core.labid recognises a lab: its authority is this test process
    (alive, its real start time), its network namespace this process's, its URLs the description's; ``state``
    replaces fields."""
    lab_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    doc = description() if doc is None else doc
    target = write_target(lab_dir, doc)
    idp, me = doc.get("identity_provider") or {}, os.getpid()
    stat = procs.proc_stat(me)
    jwks = urlsplit(idp.get("jwks_url") or "")
    record: dict[str, Any] = {
        "version": 1, "state_dir": str(lab_dir), "target_file": target, "netns": procs.netns_id(),
        "components": {"authority": {"pid": me, "start_ticks": stat.start_ticks if stat else None,
                                     "url": idp.get("authority_url")}},
        "jwks_url": idp.get("jwks_url"), "authority_url": idp.get("authority_url"),
        "service_urls": {name: s["url"] for name, s in (doc.get("services") or {}).items()},
        "prometheus_url": (doc.get("prometheus") or {}).get("url"),
        "alertmanager_url": (doc.get("alertmanager") or {}).get("url"),
        "fault": {"via": "iptables", "target": "local", "host": jwks.hostname, "port": jwks.port},
        **state}
    (lab_dir / "state.json").write_text(json.dumps(record))
    (lab_dir / "state.json").chmod(0o600)
    return lab_dir
