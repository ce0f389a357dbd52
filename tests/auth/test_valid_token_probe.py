"""The valid-token probe (chaosext.auth.measure.call): a tenant's token on the route the target description names
for it (``services.<name>.probe``, else the first read route without a placeholder), with the tenant header the
target uses (or none) — never a route the description does not give (issue 23: it used to send ``GET /`` to any
service that was not a lab name)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaosext.auth.measure import call
from chaosext.core.config import load_config
from chaosext.core.target import Service
from tests.jsonstub import Handler, JsonStub
from tests.targetutil import description, target_config

Stub = Callable[[Handler], JsonStub]


def _ok(method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
    return (200, {"items": []}) if path.startswith("/base/v2/") else (404, {"error": "no route"})


def test_the_probe_calls_the_described_route_with_the_tenant_header(stub: Stub, tmp_path: Path) -> None:
    s = stub(_ok)
    doc = description(services={
        "orders": {"url": f"{s.url}/base", "routes": ["GET /v2/orders/{id}", "POST /v2/orders", "GET /v2/orders"]},
        "search": {"url": f"{s.url}/base", "routes": ["GET /v2/search"],
                   "probe": {"method": "POST", "path": "/v2/search", "body": {"q": "*"}}}})
    cfg = load_config(target_config(tmp_path, doc))
    assert [call(cfg, svc, "tok-1", "acme") for svc in cfg.services.values()] == [200, 200]
    first, second = s.requests
    assert (first.method, first.path, first.body) == ("GET", "/base/v2/orders", b"")  # no placeholder route
    assert (second.method, second.path, second.body) == ("POST", "/base/v2/search", b'{"q":"*"}')
    assert second.headers["Content-Type"] == "application/json"
    for seen in (first, second):
        assert seen.headers["Authorization"] == "Bearer tok-1" and seen.headers["X-Tenant-ID"] == "acme"


def test_without_a_tenant_header_only_the_token_says_the_tenant(stub: Stub, tmp_path: Path) -> None:
    s = stub(_ok)
    doc = description(tenant_header="none", services={"orders": {"url": f"{s.url}/base", "routes": ["GET /v2/a"]}})
    cfg = load_config(target_config(tmp_path, doc))
    assert cfg.tenant_header == "" and call(cfg, cfg.services["orders"], "tok", "acme") == 200
    (seen,) = s.requests
    assert "acme" not in seen.headers.values() and seen.headers["Authorization"] == "Bearer tok"


def test_a_service_without_a_read_route_is_not_called_and_a_dead_one_answers_nothing(
        stub: Stub, tmp_path: Path, unused_port: int) -> None:
    s = stub(_ok)
    cfg = load_config(target_config(tmp_path))
    assert call(cfg, Service("writes-only", f"{s.url}/base"), "tok", "acme") == 0
    assert s.requests == []  # no guessed route: nothing was sent
    dead = cfg.services["orders"]
    assert call(cfg, Service("dead", f"http://127.0.0.1:{unused_port}", dead.routes), "tok", "acme", 1.0) == 0
