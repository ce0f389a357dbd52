"""The no-fail-open metric backstop and the forgery settings, against a stub of Prometheus's documented
``/api/v1/query`` response shape (the real Prometheus path is covered end to end in tests/experiment)."""
from __future__ import annotations

from pathlib import Path

import pytest

from chaosext.auth.measure import unverified_accepts
from chaosext.core.config import load_config, validate
from chaosext.core.errors import ConfigError
from chaosext.core.target import Route
from chaosext.run.context import RunContext
from chaosext.safety.preflight import refusals, static_findings
from tests.jsonstub import JsonStub
from tests.targetutil import target_config

SEL = 'jwt_validations_total{result="valid",key_source="none"}'


SERVICES = ("policy", "vuln", "notify")


def _prom(series: dict[str, list[tuple[float, float]]]) -> JsonStub:
    """A Prometheus holding the backstop counter per service ({service: [(time, value), ...]}), every service
    scraped past the outage (far-future sample times for the wait), answering the range-vector instant query with
    the raw samples (``matrix``)."""
    def handler(method, path, query, body):
        q = query.get("query", "")
        if path == "/api/v1/query" and "timestamp(" in q:
            return 200, {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"service": svc}, "value": [0, "9e12"]} for svc in SERVICES]}}
        assert q.startswith(SEL + "["), q
        return 200, {"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"service": svc, "result": "valid", "key_source": "none"},
             "values": [[t, str(v)] for t, v in samples]} for svc, samples in series.items()]}}

    return JsonStub(handler)


def _ctx(url: str, **extra: str) -> RunContext:
    return RunContext(load_config({"prometheus_url": url, "chaosext_lab_dir": "/nonexistent-lab", **extra}))


def test_requests_accepted_without_a_key_fail_the_backstop() -> None:
    """Counted from the last sample before the outage through each service's first scrape after it: notify's 3
    accepts of the last tick were scraped 1.5 s after the end (the old `end + 1 s` query missed them); vuln's
    second scrape after the end is after the outage and does not count."""
    with _prom({"policy": [(95.0, 2), (150.0, 5), (199.0, 7)],
                "vuln": [(95.0, 0), (199.0, 1), (200.8, 1), (210.0, 50)],
                "notify": [(95.0, 0), (199.0, 0), (201.5, 3)]}) as prom:
        r = unverified_accepts(_ctx(prom.url), 100.0, 200.0)
    assert r == {"ok": False, "exported": True, "selector": SEL, "unverified_accepts": 5.0 + 1.0 + 3.0}
    assert any(SEL in req.query.get("query", "") for req in prom.requests)


def test_none_accepted_passes_and_a_service_without_the_series_is_no_failure() -> None:
    with _prom({"policy": [(95.0, 2), (199.0, 2), (201.0, 2)]}) as prom:
        assert unverified_accepts(_ctx(prom.url), 100.0, 200.0)["ok"] is True
    with _prom({}) as prom:
        r = unverified_accepts(_ctx(prom.url), 100.0, 200.0)
    assert r["ok"] is True and r["exported"] is False and "docs/experiment.md" in r["note"]
    assert unverified_accepts(_ctx("http://127.0.0.1:9", metric_unverified_accepts="off"), 1, 2)["exported"] is False


def test_forgery_settings_parse_and_bad_values_say_what_to_do(tmp_path: Path) -> None:
    target = target_config(tmp_path)
    cfg = load_config({**target, "refused_statuses": "401,403,404", "forgery_skip": "x5u,jku",
                       "forgery_routes": "orders=GET /a|POST /b"})
    assert cfg.refused_statuses == (401, 403, 404) and cfg.forgery_skip == ("x5u", "jku")
    assert cfg.services["orders"].forgery_routes == (Route("GET", "/a"), Route("POST", "/b")) and not validate(cfg)
    bad = load_config({**target, "refused_statuses": "401,200", "forgery_concurrency": "0"})
    problems = " ".join(validate(bad))
    assert "REFUSED_STATUSES=401,200" in problems and "FORGERY_CONCURRENCY" in problems
    with pytest.raises(ConfigError, match="FORGERY_ROUTES names service 'nosuch'"):
        load_config({**target, "forgery_routes": "nosuch=GET /"})
    # the safety control refuses an unknown forgery class before anything starts
    ctx = RunContext(load_config({"chaosext_lab_dir": "/nonexistent-lab", "forgery_skip": "alg-nope"}))
    refused = [f.sentence() for f in refusals(static_findings(ctx))]
    assert any("unknown classes ['alg-nope']" in p for p in refused), refused
