"""start_k6 / stop_k6 / k6_summary / k6_live_metrics with real k6 processes against the stand-in service."""
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from chaosext.core import procs
from chaosext.core.errors import ConfigError
from chaosext.load import k6 as k6mod
from chaosext.load.actions import start_k6, stop_k6
from chaosext.load.probes import k6_live_metrics, k6_summary
from tests.load.targets import write_target

pytestmark = pytest.mark.e2e


def _cmdlines_of_session(sid: int) -> list[bytes]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.getsid(int(proc.name)) == sid:
                    out.append((proc / "cmdline").read_bytes())
            except (OSError, ProcessLookupError):
                pass
    return out


def test_start_returns_while_k6_runs_and_stop_yields_a_summary_understood_as_stopped(
        k6_env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    # the client credentials come from the experiment's secrets block here, not from the environment
    monkeypatch.delenv("TOKEN_CLIENT_ID")
    monkeypatch.delenv("TOKEN_CLIENT_SECRET")
    started = start_k6(rate=20, duration="60s", owner_run_id="e0000001",
                       secrets={"token_client_id": "fake-client", "token_client_secret": "fake-secret"})
    assert started["owner_run_id"] == "e0000001"
    try:
        cmdlines = _cmdlines_of_session(started["pid"])
        assert cmdlines and not [c for c in cmdlines if b"fake-secret" in c], "a secret in argv"
        assert b"fake-secret" not in (Path(started["run_dir"]) / "run.json").read_bytes()
        plan_path = Path(started["run_dir"]) / "k6-load-plan.json"
        assert plan_path.stat().st_mode & 0o777 == 0o600, "the load plan is the run's own file"
        assert b"fake-secret" not in plan_path.read_bytes() and b"tok-" not in plan_path.read_bytes()
        plan = json.loads(plan_path.read_text())
        assert [s["name"] for s in plan["services"]] == ["orders", "billing"]
        assert plan["tenant_header"] == "X-Tenant" and len(plan["tenants"]) == 12
        run = k6mod.read_run(Path(started["run_dir"]))
        assert f"TARGET_JSON={plan_path}" in run["cmd"], "the script is given the plan"
        assert run["alive"], "start_k6 must return while k6 keeps running in the background"
        assert os.getsid(started["pid"]) == started["pid"], "k6 runs in its own session"
        assert started["address"].startswith("127.0.0.1:")
        assert k6_summary(wait_seconds=0)["found"] is False
        live = None
        for _ in range(50):  # the REST API comes up a moment after the process
            live = k6_live_metrics()
            if live["reachable"] and live["http_reqs"]:
                break
            time.sleep(0.2)
        assert live["reachable"] and live["http_req_failed_rate"] == 0 and live["http_reqs"] > 0
        nothing = stop_k6()  # no run named: another run's k6 is never stopped
        assert nothing["stopped"] == 0 and nothing["running_elsewhere"] == [started["run_id"]]
        assert stop_k6(owner_run_id="0f4e0001")["stopped"] == 0
        assert k6mod.read_run(Path(started["run_dir"]))["alive"]
    finally:
        stopped = stop_k6(owner_run_id="e0000001", timeout=20)
    assert stopped["stopped"] == 1
    assert stopped["exit_code"] == 105 and stopped["exit_meaning"] == "stopped by signal"
    assert not procs.process_alive(started["pid"])
    summary = k6_summary()
    assert summary["found"] and summary["stopped_early"] is True
    assert summary["exit_code"] == 105 and summary["exit_meaning"] != "thresholds failed"
    assert summary["thresholds_ok"] is True and summary["http_req_failed_rate"] == 0
    assert summary["requests"]["total"] > 0 and summary["p95_read_ms"] is not None
    again = stop_k6(configuration={"chaosext_run_id": "e0000001"})
    assert again["stopped"] == 0 and again["exit_code"] == 105, "stop_k6 is idempotent (rollbacks)"


def test_a_run_that_ends_by_itself_reports_its_own_exit_code(k6_env: dict, tmp_path: Path) -> None:
    started = start_k6(rate=10, duration="1s", summary_file=str(tmp_path / "s.json"))
    summary = k6_summary(summary_file=str(tmp_path / "s.json"), wait_seconds=30)
    assert summary["found"] and summary["run_id"] == started["run_id"]
    for _ in range(50):  # the wrapper records the exit code a moment after k6 wrote its summary
        if k6_summary(run_id=started["run_id"], wait_seconds=0)["exit_code"] is not None:
            break
        time.sleep(0.1)
    summary = k6_summary(run_id=started["run_id"], wait_seconds=0)
    assert summary["exit_code"] == 0 and summary["exit_meaning"] == "passed" and not summary["stopped_early"]
    assert summary["summary_file"] == str(tmp_path / "s.json")
    assert stop_k6(run_id=started["run_id"])["stopped"] == 0


def test_live_metrics_of_a_k6_that_is_gone_do_not_raise(k6_env: dict) -> None:
    out = k6_live_metrics(address=f"127.0.0.1:{procs.free_port()}")
    assert out["reachable"] is False and "unreachable" in out["error"]


def test_missing_k6_fails_before_anything_starts_with_the_fix(k6_env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K6_BIN", "/nonexistent/k6")
    with pytest.raises(k6mod.K6NotFoundError, match="K6_BIN=/nonexistent/k6 is not an executable"):
        start_k6(rate=10, duration="5s")
    monkeypatch.delenv("K6_BIN")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(k6mod.K6NotFoundError, match=r"requirements-tools\.txt"):
        start_k6(rate=10, duration="5s")
    assert not k6_env["runs"].exists() or not list(k6_env["runs"].iterdir())


def test_k6_bin_is_honoured_and_its_version_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = shutil.which("k6")
    link = tmp_path / "my-k6"
    link.symlink_to(real)
    monkeypatch.setenv("K6_BIN", str(link))
    assert k6mod.find_k6() == str(link)
    assert k6mod.k6_version().startswith("v1.")


@pytest.mark.parametrize("kwargs, error, message", [
    ({"duration": "5 minutes"}, ConfigError, "k6 duration"),
    ({"rate": -1}, ConfigError, "requests per second"),
    ({"script": "/nonexistent.js"}, ConfigError, "does not exist"),
    ({"env": {"TARGET_JSON": "/nonexistent/plan.json"}}, k6mod.K6RunError, "k6 rejects"),
    ({"env": {"K6_RATE": "fast"}}, ConfigError, "K6_RATE='fast' is not a whole number"),
])
def test_bad_input_fails_before_k6_starts(k6_env: dict, kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        start_k6(**kwargs)
    assert not k6_env["runs"].exists() or not list(k6_env["runs"].iterdir()), "a refused start leaves nothing"


def test_a_target_with_no_route_to_drive_is_refused_before_k6_starts(k6_env: dict, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = write_target(tmp_path / "idle.yaml", {"orders": k6_env["url"]},
                          {"orders": [{"method": "GET", "path": "/v2/orders", "weight": 0}]})
    monkeypatch.setenv("TARGET_FILE", str(target))
    with pytest.raises(ConfigError, match=r"nothing to drive.*services\.<name>\.routes"):
        start_k6(rate=10, duration="5s")
    assert not k6_env["runs"].exists()


def test_a_script_exception_is_explained_not_mistaken_for_a_threshold_failure(k6_env: dict) -> None:
    """k6 exits 107 when setup() cannot get tokens; the probe says so and quotes k6's error."""
    started = start_k6(rate=10, duration="5s", env={"AUTHORITY_URL": f"http://127.0.0.1:{procs.free_port()}"})
    summary = k6_summary(run_id=started["run_id"], wait_seconds=30)
    for _ in range(50):
        if summary["exit_code"] is not None:
            break
        time.sleep(0.1)
        summary = k6_summary(run_id=started["run_id"], wait_seconds=0)
    assert summary["exit_code"] == 107 and summary["exit_meaning"] == "script exception"
    assert "is the Authority up" in summary["error"]
    assert summary["http_req_failed_rate"] is None and summary["requests"]["total"] == 0
