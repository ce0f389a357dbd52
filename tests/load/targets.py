"""Target descriptions (docs/target.md) for the load tests: services of their own naming, not the lab's, at the
stand-in service's URLs (tests/targetutil.py's description with these services and no identity provider: the tests
give the stand-in's Authority by AUTHORITY_URL)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tests import targetutil

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
    services = {name: {"url": url, "routes": routes.get(name, [{"method": "GET", "path": "/"}])}
                for name, url in urls.items()}
    doc = targetutil.description(identity_provider=None, services=services, tenant_header=tenant_header,
                                 tenants=tenants or [f"c{i:02d}" for i in range(1, 13)], **extra)
    return Path(targetutil.write_target(path.parent, doc, path.name))
