"""The JWKS_FAILURE checks over what a run recorded (chaosext.outage.modes), without a lab: each judges every service
on every tick and names the ones that failed, so the scorecard's cells come from them (chaosext.outage.services)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaosext.outage import modes
from chaosext.outage.judging import judging_of
from chaosext.outage.notebook import Notebook, Observation, ServiceObservation, save_notebook
from chaosext.outage.scenario import SCENARIO_FILE
from chaosext.outage.services import per_service
from chaosext.run.context import run_context
from chaosext.run.record import edit_run
from chaosext.run.store import write_json
from tests.runutil import run_dir, start_run
from tests.targetutil import description, write_target

SERVICES = ("policy", "vuln", "notify")


def _run(tmp: Path, ticks: list[dict[str, ServiceObservation]], scenario: dict[str, Any] | None = None,
         **settings: Any) -> Any:
    doc = description()
    doc["services"] = {name: {**next(iter(doc["services"].values())), "url": f"http://127.0.0.1:9/{name}",
                              "ready": f"http://127.0.0.1:9/{name}/ready"} for name in SERVICES}
    conf = start_run(tmp, target_file=write_target(tmp / "t", doc), prometheus_url="http://127.0.0.1:9",
                     recovery_seconds="1", **settings)
    with edit_run(run_dir(conf)) as run:  # an outage long over: nothing left to poll after the restore
        run.begin_outage(1000.0, "ab12cd34", None)
        run.end_outage(1000.0 + 2 * len(ticks), "", None)
    notebook = Notebook()
    for i, services in enumerate(ticks):
        notebook.add_tick(Observation(t=1000.0 + 2 * i, elapsed=2.0 * i, services=services))
    save_notebook(run_dir(conf), notebook)
    if scenario is not None:
        write_json(run_dir(conf), SCENARIO_FILE, scenario)
    judging = judging_of(run_context(conf))
    assert judging is not None
    return judging


def obs(state: str = "stale", valid: int = 200, ms: float = 5.0, new: int | None = None, new_ms: float = 5.0,
        ready: int | None = None) -> ServiceObservation:
    return ServiceObservation(state=state, valid={"t01": valid, "t02": valid}, latency_ms=ms,
                              new_kid={"t01": new} if new is not None else {}, new_kid_ms=new_ms if new else None,
                              ready=ready)


def test_rotation_fails_closed_names_an_acceptance_and_a_fetch_per_unknown_kid(tmp_path: Path) -> None:
    tick = {"policy": obs(new=401), "vuln": obs(new=401, new_ms=2000.0), "notify": obs(new=200)}
    judging = _run(tmp_path, [tick] * 4, {"rotation": {"new_kids": ["k2"], "old_kids": ["k1"]}},
                   jwks_failure="rotation-during-outage", rotate_url="http://127.0.0.1:9/rotate")

    res = modes.rotation_fails_closed(judging)

    assert res["ok"] is False and res["services_failed"] == ["notify", "vuln"]
    assert res["per_service"]["policy"] == {"ok": True, "tried": 4, "refused": 4, "accepted": 0, "other": {},
                                            "refused_share": 1.0, "median_seconds": 0.005}
    assert "ACCEPTED" in res["per_service"]["notify"]["why"]
    assert "fetch on the request path" in res["per_service"]["vuln"]["why"]
    assert (res["new_kids"], res["old_kids"]) == (["k2"], ["k1"])


def test_without_the_rotation_the_check_says_so_and_fails(tmp_path: Path) -> None:
    judging = _run(tmp_path, [{"policy": obs()}], jwks_failure="rotation-during-outage",
                   rotate_url="http://127.0.0.1:9/rotate")
    assert modes.rotation_fails_closed(judging)["ok"] is False
    assert "did not happen" in modes.rotation_accepted_after_restore(judging)["error"]


def test_cold_start_checks_judge_only_the_ticks_without_keys(tmp_path: Path) -> None:
    before = {"policy": obs("fresh"), "vuln": obs("fresh"), "notify": obs("fresh")}
    cold = {"policy": obs("empty", valid=401, ready=503),  # refuses and says not ready: right
            "vuln": obs("empty", valid=503, ready=200),    # refuses but claims to be ready
            "notify": obs("empty", valid=200, ready=503)}  # accepts what it cannot verify
    back = {"policy": obs("fresh"), "vuln": obs("fresh"), "notify": obs("fresh", ready=200)}
    judging = _run(tmp_path, [before, cold, cold, back], {"cold_start": {s: {"at": 1001.0} for s in SERVICES}},
                   jwks_failure="cold-start-during-outage", cold_start_url="{service_url}/cold",
                   cold_start_service="policy,vuln,notify")

    closed, ready = modes.cold_start_fails_closed(judging), modes.cold_start_not_ready(judging)

    assert closed["services_failed"] == ["notify"] and "fail-open" in closed["per_service"]["notify"]["why"]
    assert closed["per_service"]["policy"]["answers"] == {"401": 4} and closed["per_service"]["policy"]["ok"]
    assert closed["per_service"]["policy"]["no_keys_seconds"] == 5.0  # cold at 1001, keys back on the 1006 tick
    assert closed["per_service"]["vuln"]["ok"]  # 503 is a refusal too
    assert ready["services_failed"] == ["vuln"] and "READY" in ready["per_service"]["vuln"]["why"]
    assert ready["per_service"]["policy"]["reported_not_ready"] is True


def test_latency_is_judged_on_the_servers_histogram_else_on_the_watchs_own_calls(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    monkeypatch.setattr(modes.prom, "wait_for_samples", lambda *a, **k: True)
    monkeypatch.setattr(modes.prom, "latency_p95_by_service",
                        lambda *a: ({"policy": 0.01, "vuln": float("inf")}, "all"))
    judging = _run(tmp_path, [{"policy": obs(), "vuln": obs(), "notify": obs(ms=900.0)}] * 3,
                   latency_slo_seconds="0.5")

    res = modes.latency_within_slo(judging)

    assert res["services_failed"] == ["notify", "vuln"]
    assert res["per_service"]["policy"] == {"source": "prometheus", "requests": "all", "client_p95_seconds": 0.005,
                                            "ok": True, "p95_seconds": 0.01}
    assert res["per_service"]["notify"]["source"] == "client" and res["per_service"]["notify"]["p95_seconds"] == 0.9
    assert res["per_service"]["vuln"]["why"] == "p95 above the histogram's top bucket"


def test_each_failed_check_goes_to_the_services_it_names_or_to_the_run() -> None:
    results = {
        "latency-within-slo": {"ok": False, "services_failed": ["vuln"]},
        "cached-key-fallback": {"ok": False, "failures": [{"service": "policy", "status": 401}]},
        "client-error-rate-below-max": {"ok": False, "error_rate": 0.3},
        "auth-degraded-audited": {"ok": False, "missing": ["notify"]},
        "alerts-fire-iff-cache-expired": {"ok": True, "not_judged": True, "gap": "none named"},
        "no-fail-open": {"ok": True},
    }
    view = per_service(results, SERVICES)
    assert view["services"] == {"policy": ["cached-key-fallback"], "vuln": ["latency-within-slo"],
                                "notify": ["auth-degraded-audited"]}
    assert view["run"] == ["client-error-rate-below-max"]
    assert view["not_judged"] == ["alerts-fire-iff-cache-expired"]


@pytest.mark.parametrize("mode,names", [
    ("rotation-during-outage", ["rotation-fails-closed", "rotation-accepted-after-restore"]),
    ("cold-start-during-outage", ["cold-start-fails-closed", "cold-start-not-ready"]),
    ("slow", []), ("unreachable", [])])
def test_each_scenario_adds_its_own_checks(mode: str, names: list[str]) -> None:
    assert [n for n, _ in modes.mode_checks(mode)] == names
    assert [n for n, _ in modes.mode_checks(mode, latency=True)] == ["latency-within-slo", *names]


@pytest.mark.parametrize("mode,declared,judged", [
    ("slow", "", True), ("unreachable", "", False), ("empty-keys", "", False), ("rotation-during-outage", "", False),
    ("unreachable", "0.5", True), ("empty-keys", "2", True)])
def test_latency_is_judged_in_slow_and_wherever_an_slo_is_declared(tmp_path, mode: str, declared: str,
                                                                  judged: bool) -> None:
    """A JWKS library that fetches on the request path (jose, jwks-rsa past their max age) waits for its fetch timeout
    in an unreachable outage too; chaosext judges that against an SLO the team declares, not against a guess."""
    from chaosext.core.config import load_config
    from tests.targetutil import target_config

    cfg = load_config(target_config(tmp_path, jwks_failure=mode, **({"latency_slo_seconds": declared}
                                                                    if declared else {})))
    assert cfg.latency_judged is judged
    assert cfg.latency_slo == (float(declared) if declared else 0.3)
