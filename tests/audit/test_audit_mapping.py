"""Audit events in the target's own shape (docs/target.md ``audit``): its field names (dotted paths into one JSON
event), its action names for what chaosext looks for (degraded, recovered, expired, rejected) and its LogQL
(AUDIT_LOGQL); and a role the target does not name is a gap every check that needs it reports (``not_judged``), never
a silent pass.

Loki is a contract stub (no Loki binary is installable here) answering the documented ``GET /loki/api/v1/query_range``
shape (``{"status": "success", "data": {"resultType": "streams", "result": [{"stream": {...}, "values": [[ns,
line]]}]}}``, grafana.com/docs/loki/latest/reference/loki-http-api/).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaosext.audit import measure as audit_measure
from chaosext.audit.checks import check_audit_mapping
from chaosext.audit.measure import services_recorded
from chaosext.audit.sources import read_events, role_mapped
from chaosext.core.config import load_config
from chaosext.core.errors import ConfigError
from chaosext.outage import checks
from chaosext.outage.drill import expiry_audited
from chaosext.outage.hypothesis import audit_pipeline_healthy
from chaosext.outage.judging import Judging, judging_of
from chaosext.outage.notebook import Notebook, save_notebook
from chaosext.run.context import RunContext, run_context
from chaosext.run.record import edit_run
from tests.jsonstub import Handler, JsonStub
from tests.runutil import run_dir, start_run
from tests.targetutil import description, target_config, write_target

pytestmark = [pytest.mark.contract]

Stub = Callable[[Handler], JsonStub]
#: a target whose audit events look nothing like chaosext's own (ECS-like nesting, its own action names)
FIELDS = {"time": "ts", "service": "svc.name", "action": "event.type", "tenant": "org"}
ACTIONS = {"degraded": "jwks.stale", "recovered": "jwks.recovered", "expired": "jwks.expired",
           "rejected": "token.rejected"}
LOGQL = '{app=~"{services}", env="prod"} | json | event_type="{action}"'


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _event(service: str, action: str, ts: float, tenant: str = "") -> dict[str, Any]:
    """One event in the target's shape."""
    return {"ts": _iso(ts), "svc": {"name": service, "version": "2.4.1"}, "event": {"type": action, "outcome": "x"},
            "org": tenant, "message": f"{service}: {action}"}


def _audit(source: str, **audit: Any) -> dict[str, Any]:
    return description(audit={"source": source, "fields": FIELDS, "actions": ACTIONS, "logql": LOGQL, **audit})


def test_a_jsonl_file_in_the_targets_own_shape(tmp_path: Path) -> None:
    now = time.time()
    log = tmp_path / "audit.jsonl"
    lines = [json.dumps(_event("orders", "jwks.stale", now - 10, "acme")),
             json.dumps({**_event("billing", "jwks.stale", now - 9), "ts": now - 9}),  # unix seconds
             json.dumps(_event("orders", "token.rejected", now - 8, "globex")),
             json.dumps({"ts": _iso(now - 7), "svc.name": "shipping", "event.type": "jwks.stale"}),  # flat dotted keys
             json.dumps({"timestamp": _iso(now - 6), "service": "orders", "action": "jwks.stale"}),  # chaosext's names
             json.dumps(_event("orders", "jwks.stale", now - 1000)),  # before the window
             "not json", "[1, 2]", json.dumps({**_event("orders", "jwks.stale", now), "ts": "yesterday"})]
    log.write_text("\n".join(lines) + "\n")
    ctx = RunContext(load_config(target_config(tmp_path, _audit(f"file:{log}"))))
    degraded = read_events(ctx, "degraded", now - 60, now + 1)
    assert [(e["service"], e["action"], e["tenant"]) for e in degraded] == [
        ("orders", "jwks.stale", "acme"), ("billing", "jwks.stale", ""), ("shipping", "jwks.stale", None)]
    assert degraded[0]["ts"] == pytest.approx(now - 10, abs=0.01) and degraded[1]["ts"] == pytest.approx(now - 9)
    rejected = read_events(ctx, "rejected", now - 60, now + 1)
    assert [(e["service"], e["tenant"]) for e in rejected] == [("orders", "globex")]
    assert read_events(ctx, "recovered", now - 60, now + 1) == []
    anything = read_events(ctx, "", now - 60, now + 1)  # '' = any action: the baseline's "is the pipeline alive"
    assert sorted(e["action"] for e in anything) == ["jwks.stale"] * 3 + ["token.rejected"]
    assert services_recorded(ctx, ("degraded", "rejected"), now - 60, now + 1, {"orders", "billing"}) == (
        {"orders", "billing", "shipping"}, 3)  # stops reading once every wanted service was found


def test_loki_is_asked_with_the_targets_logql_and_read_through_its_fields(stub: Stub, tmp_path: Path) -> None:
    now = time.time()
    ns = [str(int((now - k) * 1e9)) for k in (5, 4, 3)]

    def loki(method: str, path: str, q: dict[str, str], body: Any) -> tuple[int, Any]:
        assert (method, path) == ("GET", "/loki/api/v1/query_range")
        return 200, {"status": "success", "data": {"resultType": "streams", "stats": {}, "result": [
            {"stream": {"app": "orders", "env": "prod"},
             "values": [[ns[0], json.dumps(_event("orders", "jwks.stale", now - 50, "acme"))],
                        [ns[1], json.dumps(_event("orders", "jwks.recovered", now - 4))]]},  # the query selects more
            {"stream": {"app": "billing.v2", "env": "prod"},
             "values": [[ns[2], json.dumps(_event("billing.v2", "jwks.stale", now - 3))]]}]}}

    s = stub(loki)
    ctx = RunContext(load_config(target_config(tmp_path, _audit(f"loki:{s.url}"))))
    assert ctx.cfg.audit_logql == LOGQL  # from the description
    events = read_events(ctx, "degraded", now - 60, now, services=("orders", "billing.v2"))
    query = s.requests[0].query
    assert query["query"] == '{app=~"orders|billing\\.v2", env="prod"} | json | event_type="jwks.stale"'
    assert (query["start"], query["direction"]) == (str(int((now - 60) * 1e9)), "forward")
    assert [(e["service"], e["action"], e["tenant"]) for e in events] == [
        ("orders", "jwks.stale", "acme"), ("billing.v2", "jwks.stale", "")]
    assert events[0]["ts"] == pytest.approx(now - 5, abs=0.01)  # Loki's timestamp, not the line's
    read_events(ctx, "", now - 60, now)  # any action, every service
    assert s.requests[1].query["query"] == '{app=~".+", env="prod"} | json | event_type=""'


@pytest.fixture
def prometheus_down(stub: Stub) -> str:
    """A Prometheus that answers 503: the watch's observations alone say which services were stale."""
    return stub(lambda m, p, q, b: (503, {})).url


def _outage(tmp_path: Path, prometheus: str, doc: dict[str, Any], states: dict[str, str],
            audit_log: Path) -> dict[str, str]:
    """A run over ``doc`` whose recorded outage (ended a second ago) saw ``states`` on one watch tick."""
    now = time.time()
    conf = start_run(tmp_path, target_file=write_target(tmp_path, doc), prometheus_url=prometheus,
                     audit_source=f"file:{audit_log}")
    with edit_run(run_dir(conf)) as run:
        run.begin_outage(now - 20, "ab12cd34", None)
        run.end_outage(now - 1, "", None)
    save_notebook(run_dir(conf), Notebook.from_json({"observations": [
        {"t": now - 10, "elapsed": 10, "services": {n: {"state": s} for n, s in states.items()}}]}))
    return conf


def _judging(conf: dict[str, str]) -> Judging:
    judging = judging_of(run_context(conf))
    assert judging is not None
    return judging


def test_a_role_the_target_does_not_name_is_a_gap_every_check_reports(tmp_path: Path, prometheus_down: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(audit_measure.PIPELINE_WAIT_SECONDS, "file", 0.0)
    log = tmp_path / "audit.jsonl"
    now = time.time()
    log.write_text("".join(json.dumps(_event(s, a, now - 5)) + "\n" for s, a in (
        ("orders", "jwks.recovered"), ("billing", "jwks.recovered"), ("orders", "jwks.expired"))))
    unnamed = _audit(f"file:{log}", actions={"degraded": "", "recovered": None, "expired": "", "rejected": ""})
    conf = _outage(tmp_path, prometheus_down, unnamed, {"orders": "stale", "billing": "expired"}, log)
    ctx = run_context(conf)
    assert not any(role_mapped(ctx, r) for r in ("degraded", "recovered", "expired", "rejected"))
    with pytest.raises(ConfigError, match=r"give audit\.actions\.degraded in TARGET_FILE"):
        read_events(ctx, "degraded", 0, now)
    warned = {f.name: f for f in check_audit_mapping(ctx)}
    assert set(warned) == {f"not judged: audit {r}" for r in ("degraded", "recovered", "expired", "rejected")}
    assert all(not f.ok and not f.required for f in warned.values())
    assert "audit.actions.degraded" in warned["not judged: audit degraded"].fix

    degraded = checks.audit_degraded_recorded(_judging(conf))
    assert degraded["ok"] is True and degraded["not_judged"] is True and degraded["affected"] == ["orders"]
    assert "audit.actions.degraded" in degraded["gap"]
    expired = expiry_audited(_judging(conf))
    assert expired["not_judged"] is True and expired["affected"] == ["billing"]
    assert "audit.actions.expired" in expired["gap"]
    recovery = audit_pipeline_healthy(configuration=conf)  # the run's phase: recovery
    assert recovery["ok"] is True and recovery["not_judged"] is True and "audit.actions.recovered" in recovery["gap"]


def test_named_roles_are_judged_from_the_targets_events(tmp_path: Path, prometheus_down: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same outage with every role named: the checks judge, and a missing event fails (no gap to hide in)."""
    monkeypatch.setitem(audit_measure.PIPELINE_WAIT_SECONDS, "file", 0.0)
    log = tmp_path / "audit.jsonl"
    now = time.time()
    log.write_text("".join(json.dumps(_event(s, a, now - 5)) + "\n" for s, a in (
        ("orders", "jwks.recovered"), ("billing", "jwks.recovered"), ("orders", "jwks.expired"))))
    conf = _outage(tmp_path, prometheus_down, _audit(f"file:{log}"), {"orders": "stale", "billing": "expired"}, log)
    degraded = checks.audit_degraded_recorded(_judging(conf))
    assert "not_judged" not in degraded and degraded["ok"] is False and degraded["missing"] == ["orders"]
    expired = expiry_audited(_judging(conf))
    assert "not_judged" not in expired and expired["ok"] is False and expired["missing"] == ["billing"]
    recovery = audit_pipeline_healthy(configuration=conf)
    assert "not_judged" not in recovery and recovery["ok"] is True and recovery["expected"] == ["billing", "orders"]


def test_a_baseline_without_events_is_a_gap_only_when_no_rejection_is_named(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the fault every service must have left an event (the forged tokens make a healthy one audit a
    refusal): with no event and no ``rejected`` action named, liveness cannot be proven — a gap; with it named, a
    failure."""
    monkeypatch.setitem(audit_measure.PIPELINE_WAIT_SECONDS, "file", 0.0)
    log = tmp_path / "audit.jsonl"
    log.write_text(json.dumps(_event("orders", "token.rejected", time.time() - 2)) + "\n")
    named = start_run(tmp_path / "named", target_file=write_target(tmp_path / "named", _audit(f"file:{log}")))
    res = audit_pipeline_healthy(configuration=named)
    assert res["ok"] is False and res["missing"] == ["billing"] and "not_judged" not in res
    unnamed = _audit(f"file:{log}", actions={"rejected": ""})
    conf = start_run(tmp_path / "unnamed", target_file=write_target(tmp_path / "unnamed", unnamed))
    res = audit_pipeline_healthy(configuration=conf)
    assert res["ok"] is True and res["not_judged"] is True and "billing" in res["gap"]
    assert "audit.actions.rejected" in res["gap"]
