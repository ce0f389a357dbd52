"""ops/devops/tenant/k6-tenant-load.js: its options as k6 itself reads them, and what it sends (real k6 runs)."""
import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import requests

from chaosext.load.k6 import find_k6
from chaosext.load.plan import plan_json
from tests.redirector import SECRET, Server

from .conftest import SCRIPT, start_fake, stop
from .targets import SHOP_ROUTES, write_target

pytestmark = pytest.mark.e2e


def plan_file(tmp_path: Path, services: dict[str, str] | None = None, routes: dict | None = None,
              tenants: list[str] | None = None, tenant_header: str = "X-Tenant") -> Path:
    """A load plan as chaosext writes it (chaosext.load.plan) for services of their own naming."""
    from chaosext.core.config import load_config

    target = write_target(tmp_path / "target.yaml", services or {"orders": "http://127.0.0.1:9",
                                                                 "billing": "http://127.0.0.1:9"},
                          routes, tenants, tenant_header)
    cfg = load_config({"target_file": str(target), "chaosext_lab_dir": str(tmp_path / "no-lab")})
    path = tmp_path / "plan.json"
    path.write_text(plan_json(cfg))
    return path


def inspect(*env: str, plan: Path | None = None, ok: bool = True) -> dict:
    """`k6 inspect` of the script with -e variables (TARGET_JSON=plan when given); returns the options k6 derived."""
    args = [a for kv in ((f"TARGET_JSON={plan}",) if plan else ()) + env for a in ("-e", kv)]
    out = subprocess.run([find_k6(), "inspect", *args, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    if not ok:
        assert out.returncode != 0, out.stdout
        return {"stderr": out.stderr}
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_without_target_json_or_k6_rate_the_script_refuses_and_says_chaosext_passes_them(tmp_path: Path) -> None:
    """No service, route or rate is built into the script: both come from chaosext (one K6_RATE default, the
    experiment's)."""
    plan = plan_file(tmp_path)
    for env, missing in ((("K6_RATE=50", "AUTHORITY_URL=http://x"), "TARGET_JSON"),
                         ((f"TARGET_JSON={plan}", "AUTHORITY_URL=http://x"), "K6_RATE")):
        err = inspect(*env, ok=False)["stderr"]
        assert f"{missing} is not set: chaosext passes it" in err, err
        assert "chaosext render load-plan" in err


def test_the_rate_is_split_by_load_read_share_with_arrival_rate_executors_and_thresholds(tmp_path: Path) -> None:
    opts = inspect("K6_RATE=5000", "AUTHORITY_URL=http://x", plan=plan_file(tmp_path))
    sc = opts["scenarios"]
    assert {s["executor"] for s in sc.values()} == {"constant-arrival-rate"}
    assert (sc["reads"]["rate"], sc["writes"]["rate"]) == (4500, 500)
    assert sc["reads"]["tags"] == {"kind": "read"} and sc["writes"]["tags"] == {"kind": "write"}
    assert all(s["timeUnit"] == "1s" for s in sc.values())
    assert opts["thresholds"] == {
        "http_req_duration{kind:read}": ["p(95)<300"],
        "http_req_duration{kind:write}": ["p(95)<600"],
        "http_req_failed": ["rate<0.005"],
        "http_req_failed{kind:read}": ["rate<0.005"],
        "http_req_failed{kind:write}": ["rate<0.005"],
        "dropped_iterations": ["count<=0"],
    }
    assert opts["discardResponseBodies"] is True
    sc = inspect("K6_RATE=100", "LOAD_READ_SHARE=0.75", "AUTHORITY_URL=http://x", plan=plan_file(tmp_path))["scenarios"]
    assert (sc["reads"]["rate"], sc["writes"]["rate"]) == (75, 25)


def test_a_target_without_write_routes_gets_reads_only_at_the_whole_rate(tmp_path: Path) -> None:
    plan = plan_file(tmp_path, {"catalog": "http://127.0.0.1:9"},
                     {"catalog": [{"method": "GET", "path": "/items"}, {"method": "HEAD", "path": "/items/{id}"}]})
    opts = inspect("K6_RATE=40", "AUTHORITY_URL=http://x", plan=plan)
    assert list(opts["scenarios"]) == ["reads"] and opts["scenarios"]["reads"]["rate"] == 40
    assert not [t for t in opts["thresholds"] if "write" in t]


def test_rate_duration_and_vus_come_from_the_environment(tmp_path: Path) -> None:
    sc = inspect("K6_RATE=50", "LOAD_DURATION=7s", "LOAD_VUS=10", "LOAD_MAX_VUS=40", "AUTHORITY_URL=http://x",
                 plan=plan_file(tmp_path))["scenarios"]
    assert (sc["reads"]["rate"], sc["writes"]["rate"]) == (45, 5)
    assert sc["reads"]["duration"] == sc["writes"]["duration"] == "7s"
    assert sc["reads"]["preAllocatedVUs"] + sc["writes"]["preAllocatedVUs"] == 10
    assert sc["reads"]["maxVUs"] + sc["writes"]["maxVUs"] == 40


@pytest.mark.parametrize("plan, env, message", [
    ({"tenants": ["a"], "services": [{"name": "orders", "url": "ftp://x", "routes": []}]}, "", "http(s) url"),
    ({"tenants": ["a"], "services": [{"name": "orders", "url": "http://x",
                                      "routes": [{"method": "FETCH", "path": "/x"}]}]}, "", "is not a route"),
    ({"tenants": ["a"], "services": [{"name": "orders", "url": "http://x",
                                      "routes": [{"method": "GET", "path": "/x", "weight": -1}]}]}, "", "weight"),
    ({"tenants": ["a"], "services": [{"name": "orders", "url": "http://x",
                                      "routes": [{"method": "GET", "path": "/x", "weight": 0}]}]}, "",
     "weight above 0"),
    ({"tenants": [], "services": []}, "", "no tenant"),
    ("not json", "", "not a readable JSON load plan"),
    (None, "LOAD_DURATION=5 minutes", "LOAD_DURATION"),
    (None, "K6_RATE=fast", "K6_RATE"),
])
def test_bad_plans_and_settings_are_refused_with_a_message_that_names_them(tmp_path: Path, plan: object, env: str,
                                                                           message: str) -> None:
    path = plan_file(tmp_path)
    if plan is not None:
        path.write_text(plan if isinstance(plan, str) else json.dumps(plan))
    err = inspect("AUTHORITY_URL=http://x", *(("K6_RATE=10",) if "K6_RATE" not in env else ()), *filter(None, [env]),
                  plan=path, ok=False)["stderr"]
    assert message in err


#: the stand-in Authority's client, given the way chaosext gives it: in k6's environment, never with -e
CLIENT_ENV = {"TOKEN_CLIENT_ID": "fake-client", "TOKEN_CLIENT_SECRET": "fake-secret"}


def run_script(tmp_path: Path, *env: str, plan: Path, secret_env: dict | None = None,
               k6_args: tuple[str, ...] = ()) -> tuple[int, dict]:
    """A real short k6 run of the script with the load plan ``plan``; returns (exit code, summary JSON)."""
    summary = tmp_path / "summary.json"
    args = [a for kv in (*env, f"TARGET_JSON={plan}", f"SUMMARY_FILE={summary}") for a in ("-e", kv)]
    out = subprocess.run([find_k6(), "run", "--quiet", "--no-color", "--address", "127.0.0.1:0", *k6_args, *args,
                          str(SCRIPT)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, **(CLIENT_ENV if secret_env is None else secret_env)})
    if not summary.exists():
        return out.returncode, {"stderr": out.stderr}
    return out.returncode, {**json.loads(summary.read_text()), "stderr": out.stderr}


def _template(path: str, templates: list[str]) -> str:
    """The described route template a request path was sent for ({id} filled with a number)."""
    for template in templates:
        if re.fullmatch(re.sub(r"\\\{[^}]*\\\}", r"\\d+", re.escape(template)), path):
            return template
    return path


def expected_shares(routes: dict[str, list[dict]], read_share: float) -> dict[tuple[str, str, str], float]:
    """(service, METHOD, template) -> the share of all requests it should get: LOAD_READ_SHARE to reads, and within
    a kind each route its weight over the kind's total across the services."""
    out = {}
    for kind, kind_share in (("read", read_share), ("write", 1 - read_share)):
        of_kind = [(svc, r) for svc, rs in routes.items() for r in rs
                   if (r["method"] in ("GET", "HEAD")) == (kind == "read")]
        total = sum(r.get("weight", 1) for _, r in of_kind)
        for svc, r in of_kind:
            out[(svc, r["method"], r["path"])] = kind_share * r.get("weight", 1) / total
    return out


def test_two_services_of_their_own_get_every_described_route_at_its_weighted_share(tmp_path: Path) -> None:
    """Two stand-in services named orders and billing (not the lab's), each with routes and weights of its own:
    every described route is driven at its weighted share, the read/write split holds, every request carries its
    tenant's token and header, JSON bodies go with their content type, and k6 tags each request with kind, service
    and the route template, never the tenant."""
    orders, orders_port = start_fake("--header", "X-Shop-Tenant")
    billing, billing_port = start_fake("--header", "X-Shop-Tenant")
    urls = {"orders": f"http://127.0.0.1:{orders_port}", "billing": f"http://127.0.0.1:{billing_port}"}
    tenants = [f"shop{i}" for i in range(1, 11)]
    points = tmp_path / "points.json"
    try:
        # shares are judged, not timing: iterations k6 could not start on time on a busy machine are allowed
        code, summary = run_script(tmp_path, "K6_RATE=400", "LOAD_DURATION=5s", "LOAD_READ_SHARE=0.8",
                                   "LOAD_VUS=40", "LOAD_DROPPED_MAX=100000", f"AUTHORITY_URL={urls['orders']}",
                                   plan=plan_file(tmp_path, urls, SHOP_ROUTES, tenants, "X-Shop-Tenant"),
                                   k6_args=("--out", f"json={points}"))
        seen = {name: requests.get(f"{url}/stats", timeout=5).json() for name, url in urls.items()}
    finally:
        stop(orders)
        stop(billing)
    assert code == 0 and summary["thresholds_ok"] is True, summary
    counts: Counter = Counter()
    for svc, stats in seen.items():
        templates = [r["path"] for r in SHOP_ROUTES[svc]]
        for key, n in stats["requests"].items():
            method, path, verdict = key.split("|")
            assert verdict == "ok", f"{svc} rejected {n} × {method} {path}: no token or tenant header"
            counts[(svc, method, _template(path, templates))] += n
    total = sum(counts.values())
    assert total == summary["requests"]["total"] > 1000
    expected = expected_shares(SHOP_ROUTES, 0.8)
    assert set(counts) == set(expected), "every described route is driven, and nothing else"
    for route, share in expected.items():
        # binomial spread: 4.5 standard deviations, so a right script fails this about once in 100 000 runs
        assert abs(counts[route] - share * total) <= 4.5 * (total * share * (1 - share)) ** 0.5 + 1, \
            f"{route}: {counts[route]} of {total} requests, expected {share:.4f} of them"
    assert summary["requests"]["read"] / total == pytest.approx(0.8, abs=0.01)
    assert set().union(*(s["tenants"] for s in seen.values())) == set(tenants)
    bodies = {k: n for s in seen.values() for k, n in s["bodies"].items()}
    assert set(bodies) == {'POST|/v2/orders|{"sku":"x-1"}|application/json',
                           'PUT|/billing/invoices/|{"paid":true}|application/json'}
    tags = set()
    for line in points.read_text().splitlines():
        point = json.loads(line)
        if point.get("type") == "Point" and point["metric"] == "http_reqs" and "kind" in point["data"]["tags"]:
            t = point["data"]["tags"]
            tags.add((t["service"], t["method"], t["name"], t["kind"]))
            assert not set(t.values()) & set(tenants), f"a tenant in the tags: {t}"
    assert tags == {(s, r["method"], r["path"], "read" if r["method"] == "GET" else "write")
                    for s, rs in SHOP_ROUTES.items() for r in rs}


def test_without_a_tenant_header_the_token_alone_names_the_tenant(tmp_path: Path) -> None:
    """tenant_header "" in the description: no tenant header is sent (the stand-in rejects none: it reads the tenant
    from the token), and a target with only reads is driven with reads only, which the summary says."""
    proc, port = start_fake("--header", "")
    try:
        url = f"http://127.0.0.1:{port}"
        plan = plan_file(tmp_path, {"catalog": url}, {"catalog": [{"method": "GET", "path": "/items/{id}"}]},
                         ["a1", "a2"], tenant_header="")
        assert json.loads(plan.read_text())["tenant_header"] == ""
        code, summary = run_script(tmp_path, "K6_RATE=20", "LOAD_DURATION=2s", f"AUTHORITY_URL={url}", plan=plan)
        seen = requests.get(f"{url}/stats", timeout=5).json()
    finally:
        stop(proc)
    assert code == 0, summary
    assert set(seen["tenants"]) == {"a1", "a2"}
    assert not [k for k in seen["requests"] if k.endswith("|rejected")]
    assert summary["requests"]["write"] == 0 and summary["requests"]["read"] > 0
    assert summary["config"]["only"] == "reads only: the target describes no write route"


def test_tokens_file_replaces_the_authority(tmp_path: Path, fake_service: int) -> None:
    url = f"http://127.0.0.1:{fake_service}"
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"a1": "tok-a1", "a2": "tok-a2"}))
    code, _summary = run_script(tmp_path, "K6_RATE=20", "LOAD_DURATION=2s", f"TOKENS_FILE={tokens}",
                                "AUTHORITY_URL=http://127.0.0.1:9",
                                plan=plan_file(tmp_path, {"orders": url}, tenants=["a1", "a2"]))
    seen = requests.get(f"{url}/stats", timeout=5).json()
    assert code == 0
    assert set(seen["tenants"]) == {"a1", "a2"}
    assert not [k for k in seen["requests"] if k.endswith("|rejected")]


def test_a_failing_service_fails_the_error_threshold_and_exits_99(tmp_path: Path) -> None:
    proc, port = start_fake("--status", "500")
    try:
        url = f"http://127.0.0.1:{port}"
        code, summary = run_script(tmp_path, "K6_RATE=20", "LOAD_DURATION=2s", f"AUTHORITY_URL={url}",
                                   plan=plan_file(tmp_path, {"orders": url}))
    finally:
        stop(proc)
    assert code == 99
    assert summary["thresholds_ok"] is False
    assert summary["thresholds"]["http_req_failed: rate<0.005"] is False
    assert summary["thresholds"]["http_req_duration{kind:read}: p(95)<300"] is True
    assert summary["http_req_failed_rate"] == 1


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_tokens_come_from_the_client_credentials_grant_with_either_client_auth(tmp_path: Path, fake_service: int,
                                                                               method: str) -> None:
    url = f"http://127.0.0.1:{fake_service}"
    code, summary = run_script(tmp_path, "K6_RATE=20", "LOAD_DURATION=2s", f"AUTHORITY_URL={url}",
                               f"TOKEN_AUTH_METHOD={method}", plan=plan_file(tmp_path, {"orders": url},
                                                                             tenants=["a1", "a2"]))
    seen = requests.get(f"{url}/stats", timeout=5).json()
    assert code == 0, summary
    assert set(seen["tenants"]) == {"a1", "a2"}
    assert not [k for k in seen["requests"] if k.endswith("|rejected")]


def test_a_wrong_client_secret_stops_setup_with_the_idps_error(tmp_path: Path, fake_service: int) -> None:
    url = f"http://127.0.0.1:{fake_service}"
    code, _out = run_script(tmp_path, "K6_RATE=20", "LOAD_DURATION=2s", f"AUTHORITY_URL={url}",
                            plan=plan_file(tmp_path, {"orders": url}),
                            secret_env={**CLIENT_ENV, "TOKEN_CLIENT_SECRET": "wrong"})
    assert code == 107
    seen = requests.get(f"{url}/stats", timeout=5).json()
    assert not seen["requests"], "no load may run without tokens"


@pytest.mark.parametrize("status, failed", [(429, 0), (403, 0), (401, 1), (503, 1)])
def test_http_req_failed_counts_401_and_5xx_but_not_403_or_429(tmp_path: Path, status: int, failed: int) -> None:
    """The script's response callback matches the one definition of "error" (D1): a service answering only 429 or
    403 (correct answers) leaves http_req_failed at 0 and the error threshold passing; 401 or 5xx fail every request."""
    proc, port = start_fake("--status", str(status))
    try:
        url = f"http://127.0.0.1:{port}"
        code, summary = run_script(tmp_path, "K6_RATE=20", "LOAD_DURATION=2s", f"AUTHORITY_URL={url}",
                                   plan=plan_file(tmp_path, {"orders": url}))
    finally:
        stop(proc)
    assert summary["requests"]["total"] > 0, summary
    assert summary["http_req_failed_rate"] == failed, summary
    assert summary["thresholds"]["http_req_failed: rate<0.005"] is (failed == 0), summary["thresholds"]
    assert code == (0 if failed == 0 else 99), summary


def test_k6_never_sends_the_client_secret_to_another_origin(tmp_path: Path) -> None:
    """Issue 27, item 6, in the script: a token endpoint answering 307 to another origin, and a discovery document
    naming a token endpoint on another origin, both get k6's setup to stop without sending the secret there."""
    home, elsewhere = Server(), Server()
    try:
        home.redirect_to = elsewhere.url  # POST /token -> 307 -> elsewhere
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        code, summary = run_script(tmp_path / "a", "K6_RATE=20", "LOAD_DURATION=2s", f"AUTHORITY_URL={home.url}",
                                   f"TOKEN_ENDPOINT={home.url}/token", "TOKEN_AUTH_METHOD=client_secret_post",
                                   plan=plan_file(tmp_path / "a", {"orders": home.url}),
                                   secret_env={"TOKEN_CLIENT_ID": "c", "TOKEN_CLIENT_SECRET": SECRET})
        assert code != 0 and not elsewhere.seen, "the 307 was followed with the client secret"
        home.redirect_to = ""
        home.answer = lambda path: {"token_endpoint": elsewhere.url + "/token"}
        code, summary = run_script(tmp_path / "b", "K6_RATE=20", "LOAD_DURATION=2s", f"AUTHORITY_URL={home.url}",
                                   "TOKEN_AUTH_METHOD=client_secret_post",
                                   plan=plan_file(tmp_path / "b", {"orders": home.url}),
                                   secret_env={"TOKEN_CLIENT_ID": "c", "TOKEN_CLIENT_SECRET": SECRET})
        assert code != 0 and "not on AUTHORITY_URL's origin" in summary.get("stderr", ""), summary
        assert not elsewhere.seen, "the discovered endpoint on another origin got the client secret"
    finally:
        home.close()
        elsewhere.close()
