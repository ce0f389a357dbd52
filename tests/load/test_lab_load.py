"""The tenant load script against a real running lab (real Authority tokens, real services, their /metrics)."""
import json
from collections import Counter
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from chaosext.load.actions import start_k6, stop_k6
from chaosext.load.probes import k6_summary

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

TENANTS = {f"t{i:02d}" for i in range(1, 13)}


def scrape(services: dict[str, str]) -> tuple[Counter, Counter, Counter]:
    """(requests by (service, tenant, status), requests by kind, requests by (service, route template)) summed over
    the services' /metrics."""
    by_tenant: Counter = Counter()
    by_kind: Counter = Counter()
    by_route: Counter = Counter()
    for url in services.values():
        text = requests.get(f"{url}/metrics", timeout=5).text
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "tenant_requests_total":
                    by_tenant[(s.labels["service"], s.labels["tenant"], s.labels["status"])] += s.value
                    by_route[(s.labels["service"], s.labels["route"])] += s.value
                elif s.name == "tenant_request_duration_seconds_count":
                    by_kind[s.labels["kind"]] += s.value
    return by_tenant, by_kind, by_route


def test_low_rate_run_from_the_labs_own_description_reaches_every_route_as_10_plus_tenants_90_10(
        lab: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing but the lab directory is given: the services, routes, tenants and tenant header come from the lab's
    target description (written by `lab up`), as they would from any target's."""
    monkeypatch.setenv("CHAOSEXT_K6_DIR", str(tmp_path / "k6"))
    services = lab["service_urls"]
    described = json.loads(Path(lab["target_file"]).read_text())["services"]
    config = {"chaosext_lab_dir": str(lab["state_dir"])}  # k6 gets its tokens with the lab test client
    before_t, before_k, before_r = scrape(services)
    started = start_k6(rate=50, duration="5s", configuration=config)
    try:
        summary = k6_summary(run_id=started["run_id"], wait_seconds=40, configuration=config)
    finally:
        stop_k6(run_id=started["run_id"], timeout=10)
    after_t, after_k, after_r = scrape(services)
    sent = after_t - before_t
    kinds = after_k - before_k
    routes = after_r - before_r

    assert summary["found"], summary["error"]
    assert summary["http_req_failed_rate"] == 0, "the lab rejects requests without the tenant header or token"
    assert summary["thresholds_ok"] is True
    total = summary["requests"]["total"]
    assert sum(sent.values()) == total, "every request k6 sent reached a service"
    assert {status for _, _, status in sent} <= {"200", "201"}
    tenants = {tenant for _, tenant, _ in sent}
    assert tenants <= TENANTS and len(tenants) >= 10
    assert {svc for svc, _, _ in sent} == set(services)
    assert sum(kinds.values()) == total
    assert abs(kinds["read"] / total - 0.9) <= 0.04, kinds
    assert set(routes) == {(svc, r["path"]) for svc, d in described.items()
                                                          for r in d["routes"]}, "every described route is driven"
