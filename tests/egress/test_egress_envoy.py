"""Contract tests of the Envoy driver against a local HTTP server that answers like Envoy's admin API.

No Envoy binary is installable here, so the fake admin reproduces the documented shapes:
* ``GET /runtime`` -> ``{"layers": [...], "entries": {key: {"layer_values": [...], "final_value": "..."}}}``
  (Envoy docs, operations/admin "GET /runtime" example output);
* ``POST /runtime_modify?key=value`` -> 200 ``OK``; an empty value deletes the override (same page); without an admin
  layer -> 503 with body ``No admin layer specified`` (envoy source/common/runtime LoaderImpl::mergeValues and
  test/server/server_test.cc); a mutation sent as GET -> 400 (admin docs: "All mutations must be sent as HTTP POST");
* ``GET /stats?format=json&filter=<regex>`` -> ``{"stats": [{"name": ..., "value": n}]}`` with the fault filter's
  ``http.<stat_prefix>.fault.aborts_injected`` / ``delays_injected`` counters (fault filter docs, "Statistics").
"""
from __future__ import annotations

import re
from typing import Any, Iterator

import pytest

from chaosext.egress.actions import block_jwks_egress, restore_jwks_egress
from chaosext.egress.base import FaultError
from chaosext.egress.envoy import EnvoyDriver
from chaosext.egress.probes import egress_block_active
from jsonstub import JsonStub

pytestmark = [pytest.mark.contract]


class FakeEnvoyAdmin:
    def __init__(self, admin_layer: bool = True) -> None:
        self.admin_layer = admin_layer
        self.static = {"chaosext.jwks.abort.abort_percent": "0", "upstream.healthy_panic_threshold": "50"}
        self.admin: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self.aborts = 7

    def runtime(self) -> dict[str, Any]:
        layers = ["static_layer_0"] + (["admin"] if self.admin_layer else [])
        entries = {}
        for key in sorted(set(self.static) | set(self.admin)):
            values = [self.static.get(key, "")] + ([self.admin.get(key, "")] if self.admin_layer else [])
            final = next((v for v in reversed(values) if v != ""), "")
            entries[key] = {"layer_values": values, "final_value": final}
        return {"layers": layers, "entries": entries}


    def handle(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any]:
        if method == "GET":
            if path == "/runtime":
                return 200, self.runtime()
            if path == "/runtime_modify":
                return 400, "This endpoint requires POST"
            if path == "/stats":
                stats = [{"name": "http.jwks_egress.fault.aborts_injected", "value": self.aborts},
                         {"name": "http.jwks_egress.fault.delays_injected", "value": 0},
                         {"name": "http.ingress.downstream_rq_total", "value": 99}]
                pattern = re.compile(query.get("filter", ""))
                return 200, {"stats": [s for s in stats if pattern.search(s["name"])]}
            return 404, "invalid path"
        if method != "POST":
            return 501, "Unsupported method"
        if path != "/runtime_modify":
            return 404, "invalid path"
        if not self.admin_layer:
            return 503, "No admin layer specified"
        for k, v in query.items():
            if v == "":
                self.admin.pop(k, None)
            else:
                self.admin[k] = v
        return 200, "OK\n"


@pytest.fixture
def envoy() -> Iterator[tuple[FakeEnvoyAdmin, str]]:
    state = FakeEnvoyAdmin()
    with JsonStub(state.handle, record=lambda r: (r.method, r.target)) as stub:
        state.requests = stub.requests
        yield state, stub.url


OPTS = {"envoy_stat_prefix": "jwks_egress"}


def test_reject_sets_only_dedicated_abort_keys_and_verifies_with_runtime_and_stats(envoy, state_dir):
    state, admin = envoy
    out = block_jwks_egress("http://authority.example:8440/jwks", via="envoy", target=admin, mode="reject",
                            duration_seconds=60, use_watchdog=False, driver_options=OPTS)

    posts = [p for m, p in state.requests if m == "POST"]
    assert len(posts) == 1 and posts[0].startswith("/runtime_modify?")
    assert state.admin["chaosext.jwks.abort.abort_percent"] == "100"
    assert state.admin["chaosext.jwks.abort.http_status"] == "503"
    assert state.admin["chaosext.jwks.run_id"] == out["run_id"]
    assert not any(k.startswith("fault.http") for k in state.admin)
    assert out["verification"]["blocked"] is True
    assert out["verification"]["aborts_injected"] == 7
    assert egress_block_active(via="envoy", target=admin)["active"] is True

    restore_jwks_egress(via="envoy", target=admin, driver_options=OPTS)
    assert state.admin == {}
    assert state.static["chaosext.jwks.abort.abort_percent"] == "0"  # static layer untouched
    assert egress_block_active(via="envoy", target=admin)["active"] is False
    assert restore_jwks_egress(via="envoy", target=admin)["restored"] == []  # twice: fine


def test_drop_sets_a_delay_as_long_as_the_outage(envoy, state_dir):
    state, admin = envoy
    block_jwks_egress("http://authority.example:8440/jwks", via="envoy", target=admin, mode="drop",
                      duration_seconds=90, use_watchdog=False)
    assert state.admin["chaosext.jwks.delay.fixed_delay_percent"] == "100"
    assert state.admin["chaosext.jwks.delay.fixed_duration_ms"] == "90000"
    assert "chaosext.jwks.abort.abort_percent" not in state.admin


def test_no_admin_layer_is_refused_with_instructions(envoy, state_dir):
    state, admin = envoy
    state.admin_layer = False
    with pytest.raises(FaultError, match="no admin runtime layer.*admin_layer"):
        block_jwks_egress("http://authority.example:8440/jwks", via="envoy", target=admin, mode="reject",
                          duration_seconds=60, use_watchdog=False)
    assert state.admin == {}
    assert not state_dir.exists() or not list(state_dir.glob("*.json"))


def test_unreachable_admin_is_refused_before_anything(state_dir):
    with pytest.raises(FaultError, match="Envoy admin unreachable"):
        block_jwks_egress("http://authority.example:8440/jwks", via="envoy", target="http://127.0.0.1:9",
                          mode="reject", duration_seconds=60, use_watchdog=False)


def test_dry_run_lists_the_calls_and_makes_none(envoy, state_dir):
    state, admin = envoy
    out = block_jwks_egress("http://authority.example:8440/jwks", via="envoy", target=admin, mode="reject",
                            duration_seconds=60, dry_run=True)
    assert out["commands"][1].startswith(f"POST {admin}/runtime_modify?chaosext.jwks.abort.abort_percent=100")
    assert state.requests == []


def test_global_fault_keys_are_refused_as_prefix():
    with pytest.raises(FaultError, match="dedicated"):
        EnvoyDriver({"envoy_runtime_prefix": "fault.http"})


def test_panic_button_clears_keys_found_without_a_record(envoy, state_dir):
    state, admin = envoy
    out = block_jwks_egress("http://authority.example:8440/jwks", via="envoy", target=admin, mode="reject",
                            duration_seconds=60, use_watchdog=False)
    for f in state_dir.glob("*.json"):
        f.unlink()
    from click.testing import CliRunner

    from chaosext.egress.cli import restore

    result = CliRunner().invoke(restore, ["--all", "--via", "envoy", "--target", admin])
    assert result.exit_code == 0, result.output
    assert f"removed fault {out['run_id']}" in result.output
    assert state.admin == {}
