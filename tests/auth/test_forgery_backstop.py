"""The no-fail-open metric backstop and the forgery settings, against a stub of Prometheus's documented
``/api/v1/query`` response shape (the real Prometheus path is covered end to end in tests/experiment)."""
from __future__ import annotations

from chaosext.auth.measure import unverified_accepts
from chaosext.core.config import load_config, validate
from chaosext.run.context import RunContext
from chaosext.safety.preflight import refusals, static_findings
from tests.jsonstub import JsonStub

SEL = 'jwt_validations_total{result="valid",key_source="none"}'


def _prom(values: dict[str, list]) -> JsonStub:
    def handler(method, path, query, body):
        q = query.get("query", "")
        if path == "/api/v1/query" and "timestamp(" in q:
            return 200, {"status": "success", "data": {"resultType": "vector",
                                                        "result": [{"metric": {}, "value": [0, "9e12"]}]}}
        at = float(query.get("time", 0))
        key = "count" if q.startswith("count(") else ("start" if at < 150 else "end")
        return 200, {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "value": [at, str(v)]} for v in values.get(key, [])]}}

    return JsonStub(handler)


def _ctx(url: str, **extra: str) -> RunContext:
    return RunContext(load_config({"prometheus_url": url, "chaosext_lab_dir": "/nonexistent-lab", **extra}))


def test_requests_accepted_without_a_key_fail_the_backstop() -> None:
    with _prom({"count": [3], "start": [2, 0], "end": [7, 1]}) as prom:
        r = unverified_accepts(_ctx(prom.url), 100.0, 200.0)
    assert r == {"ok": False, "exported": True, "selector": SEL, "unverified_accepts": 6.0}
    assert any(SEL in req.query.get("query", "") for req in prom.requests)


def test_none_accepted_passes_and_a_service_without_the_series_is_no_failure() -> None:
    with _prom({"count": [3], "start": [2], "end": [2]}) as prom:
        assert unverified_accepts(_ctx(prom.url), 100.0, 200.0)["ok"] is True
    with _prom({}) as prom:
        r = unverified_accepts(_ctx(prom.url), 100.0, 200.0)
    assert r["ok"] is True and r["exported"] is False and "docs/experiment.md" in r["note"]
    assert unverified_accepts(_ctx("http://127.0.0.1:9", metric_unverified_accepts="off"), 1, 2)["exported"] is False


def test_forgery_settings_parse_and_bad_values_say_what_to_do() -> None:
    cfg = load_config({"chaosext_lab_dir": "/nonexistent-lab", "refused_statuses": "401,403,404",
                       "forgery_skip": "x5u,jku", "forgery_routes": "policy=GET /a|POST /b"})
    assert cfg.refused_statuses == (401, 403, 404) and cfg.forgery_skip == ("x5u", "jku")
    assert cfg.forgery_routes == {"policy": (("GET", "/a"), ("POST", "/b"))} and not validate(cfg)
    bad = load_config({"chaosext_lab_dir": "/nonexistent-lab", "refused_statuses": "401,200",
                       "forgery_routes": "nosuch=GET /", "forgery_concurrency": "0"})
    problems = " ".join(validate(bad))
    assert "REFUSED_STATUSES=401,200" in problems and "'nosuch'" in problems and "FORGERY_CONCURRENCY" in problems
    # the safety control refuses an unknown forgery class before anything starts
    ctx = RunContext(load_config({"chaosext_lab_dir": "/nonexistent-lab", "forgery_skip": "alg-nope"}))
    refused = [f.sentence() for f in refusals(static_findings(ctx))]
    assert any("unknown classes ['alg-nope']" in p for p in refused), refused
