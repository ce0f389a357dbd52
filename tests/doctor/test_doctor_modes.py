"""What the doctor (and so the safety control) checks for a JWKS_FAILURE on Envoy: for empty-keys / malformed /
rotated the JWKS route's body switch must be in the Envoy's configuration, else the runtime key the driver sets
would change nothing. An admin API stand-in answering /server_info and /config_dump with the lab's own bootstrap (the
real Envoy 1.40's runs are tests/experiment/test_envoy_modes_e2e.py)."""
from __future__ import annotations

import copy
from typing import Any

from chaosext.egress.checks import check_envoy
from chaosext.lab.envoy import bootstrap

BOOT = bootstrap(("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.2", 3))


def admin(config: dict[str, Any]) -> Any:
    dump = {"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": config}]}

    def handler(method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return (200, {"version": "1.40.0"}) if path == "/server_info" else (200, dump)

    return handler


def test_a_body_mode_needs_the_route_its_runtime_key_switches(stub) -> None:
    with_routes = stub(admin(BOOT))
    found = {f.name: f for f in check_envoy(with_routes.url, "chaosext.jwks.body.rotated_percent")}
    assert found["envoy body route"].ok and found["envoy fault filter"].ok

    bare = copy.deepcopy(BOOT)
    hcm = bare["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = hcm["route_config"]["virtual_hosts"][0]["routes"][-1:]
    found = {f.name: f for f in check_envoy(stub(admin(bare)).url, "chaosext.jwks.body.rotated_percent")}
    assert not found["envoy body route"].ok and "chaosext_body_*" in found["envoy body route"].fix
    assert "envoy body route" not in {f.name for f in check_envoy(stub(admin(bare)).url)}  # unreachable needs none
