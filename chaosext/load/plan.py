"""The load plan: what k6-tenant-load.js drives, taken from the target description and nothing else.

The script knows no service name and no route. :func:`load_plan` turns the run's settings (the services with their
routes, the tenants, the tenant header: ``TARGET_FILE`` and the settings over it) into one JSON document,
:func:`write_plan` writes it (mode 0600) into the k6 run's directory and ``start_k6`` passes its path as the script
variable ``TARGET_JSON``; the k6-operator path puts it into the ConfigMap next to the script. The plan holds no
secret (tokens and client credentials travel by k6's environment only)::

    {"tenant_header": "X-Tenant-ID", "tenants": ["acme", "globex"],
     "services": [{"name": "orders", "url": "http://10.0.0.3:4000",
                   "routes": [{"method": "GET", "path": "/v2/orders/{id}", "body": "", "weight": 9,
                               "kind": "read"}, ...]}]}

How the script uses it: reads and writes are two arrival-rate scenarios holding ``LOAD_READ_SHARE`` of ``K6_RATE``
(a target without write routes: reads only, at the whole rate); each iteration picks one route of its kind across
all the services by ``weight`` (a route's share of its kind is its weight over the kind's total); a ``{name}`` segment
of a path (``/v2/orders/{id}``) is filled with a number from 1 to 100 and the route template is the request's
``name`` tag.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chaosext.core import safefs
from chaosext.core.config import ExperimentConfig
from chaosext.core.errors import ConfigError

__all__ = ["PLAN_FILE", "load_plan", "plan_json", "write_plan"]

#: the plan's file name in a k6 run directory and in the k6-operator ConfigMap
PLAN_FILE = "k6-load-plan.json"


def load_plan(cfg: ExperimentConfig) -> dict[str, Any]:
    """The plan of the run's settings; ConfigError when it would drive nothing (no service with a route of weight
    above 0, or no tenant)."""
    if not any(r.weight > 0 for svc in cfg.services.values() for r in svc.routes):
        raise ConfigError("the load has nothing to drive: describe each service's routes (method, path, weight > 0) "
                          "in TARGET_FILE's services.<name>.routes (docs/target.md)")
    if not cfg.tenants:
        raise ConfigError("the load needs at least one tenant: set TENANTS or tenants in TARGET_FILE")
    services = [{"name": svc.name, "url": svc.url,
                 "routes": [{"method": r.method, "path": r.path, "body": r.body, "weight": r.weight, "kind": r.kind}
                            for r in svc.routes]}
                for svc in cfg.services.values()]
    return {"tenant_header": cfg.tenant_header, "tenants": list(cfg.tenants), "services": services}


def plan_json(cfg: ExperimentConfig) -> str:
    """The plan as the text the script reads."""
    return json.dumps(load_plan(cfg), indent=2) + "\n"


def write_plan(cfg: ExperimentConfig, directory: Path) -> Path:
    """Write the plan to ``<directory>/k6-load-plan.json`` (0600, replaced if there) and return its path."""
    # root-safe: relative to the checked directory, a random temp file renamed over the name (chaosext.core.safefs)
    return safefs.write_file(directory / PLAN_FILE, plan_json(cfg))
