"""Target descriptions (docs/target.md) for the load tests: services of their own naming, not the lab's."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: two services with names, routes and weights of their own; {id} segments are filled by the script
SHOP_ROUTES: dict[str, list[dict[str, Any]]] = {
    "orders": [{"method": "GET", "path": "/v2/orders", "weight": 3},
               {"method": "GET", "path": "/v2/orders/{id}", "weight": 1},
               {"method": "POST", "path": "/v2/orders", "body": {"sku": "x-1"}, "weight": 1}],
    "billing": [{"method": "GET", "path": "/billing/invoices/{id}", "weight": 1},
                {"method": "PUT", "path": "/billing/invoices/{id}", "body": {"paid": True}, "weight": 1},
                {"method": "DELETE", "path": "/billing/drafts/{id}", "weight": 3}],
}


def write_target(path: Path, urls: dict[str, str], routes: dict[str, list[dict[str, Any]]] | None = None,
                 tenants: list[str] | None = None, tenant_header: str = "X-Tenant", **extra: Any) -> Path:
    """Write a target description with ``urls`` (name -> base URL) and their ``routes`` (default: SHOP_ROUTES of the
    same name, else one GET /); returns its path."""
    routes = routes if routes is not None else SHOP_ROUTES
    doc: dict[str, Any] = {
        "version": 1,
        "tenants": tenants or [f"c{i:02d}" for i in range(1, 13)],
        "tenant_header": tenant_header,
        "services": {name: {"url": url, "routes": routes.get(name, [{"method": "GET", "path": "/"}])}
                     for name, url in urls.items()},
        **extra,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path
