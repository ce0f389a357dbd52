"""ops/devops/tenant/k6-tenant-load.js: its options as k6 itself reads them, and what it sends (real k6 runs)."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from chaosext.load.k6 import find_k6
from tests.redirector import SECRET, Server

from .conftest import SCRIPT, start_fake, stop

pytestmark = pytest.mark.e2e


def inspect(*env: str) -> dict:
    """`k6 inspect` of the script with -e variables; returns the options k6 derived."""
    args = [a for kv in env for a in ("-e", kv)]
    out = subprocess.run([find_k6(), "inspect", *args, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_default_rates_are_5000_split_90_10_with_arrival_rate_executors_and_thresholds() -> None:
    opts = inspect()
    sc = opts["scenarios"]
    assert {s["executor"] for s in sc.values()} == {"constant-arrival-rate"}
    assert sc["reads"]["rate"] + sc["writes"]["rate"] == 5000
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


def test_rate_duration_and_vus_come_from_the_environment() -> None:
    sc = inspect("K6_RATE=50", "LOAD_DURATION=7s", "LOAD_VUS=10", "LOAD_MAX_VUS=40")["scenarios"]
    assert (sc["reads"]["rate"], sc["writes"]["rate"]) == (45, 5)
    assert sc["reads"]["duration"] == sc["writes"]["duration"] == "7s"
    assert sc["reads"]["preAllocatedVUs"] + sc["writes"]["preAllocatedVUs"] == 10
    assert sc["reads"]["maxVUs"] + sc["writes"]["maxVUs"] == 40


@pytest.mark.parametrize("env, message", [
    ("SERVICE_URLS=policy:http://x", "SERVICE_URLS item"),
    ("SERVICE_URLS=billing=http://127.0.0.1:1", "name one of policy, vuln, notify"),
    ("LOAD_DURATION=5 minutes", "LOAD_DURATION"),
    ("K6_RATE=fast", "K6_RATE"),
])
def test_bad_settings_are_refused_with_a_message_that_names_them(env: str, message: str) -> None:
    out = subprocess.run([find_k6(), "inspect", "-e", env, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert message in out.stderr


#: the stand-in Authority's client, given the way chaosext gives it: in k6's environment, never with -e
CLIENT_ENV = {"TOKEN_CLIENT_ID": "fake-client", "TOKEN_CLIENT_SECRET": "fake-secret"}


def run_script(tmp_path: Path, *env: str, secret_env: dict | None = None) -> tuple[int, dict]:
    """A real short k6 run of the script; returns (exit code, summary JSON)."""
    summary = tmp_path / "summary.json"
    args = [a for kv in (*env, f"SUMMARY_FILE={summary}") for a in ("-e", kv)]
    out = subprocess.run([find_k6(), "run", "--quiet", "--no-color", "--address", "127.0.0.1:0", *args, str(SCRIPT)],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, **(CLIENT_ENV if secret_env is None else secret_env)})
    if not summary.exists():
        return out.returncode, {"stderr": out.stderr}
    return out.returncode, {**json.loads(summary.read_text()), "stderr": out.stderr}


def test_every_request_carries_token_and_tenant_header_across_tenants_services_and_routes(tmp_path: Path) -> None:
    """Against the stand-in service, which counts requests without a matching token + tenant header as rejected."""
    proc, port = start_fake("--header", "X-Custom-Tenant")
    try:
        url = f"http://127.0.0.1:{port}"
        code, summary = run_script(tmp_path, "K6_RATE=100", "LOAD_DURATION=3s", "TENANT_HEADER=X-Custom-Tenant",
                                   f"SERVICE_URLS=policy={url},vuln={url},notify={url}", f"AUTHORITY_URL={url}")
        seen = requests.get(f"{url}/stats", timeout=5).json()
    finally:
        stop(proc)
    assert code == 0 and summary["thresholds_ok"] is True
    assert not [k for k in seen["requests"] if k.endswith("|rejected")]
    assert len(seen["tenants"]) >= 10
    routes = {k.rsplit("|", 1)[0] for k in seen["requests"]}
    for res in ("policies", "findings", "notifications"):
        assert {f"GET|/api/v1/{res}", f"POST|/api/v1/{res}", f"PUT|/api/v1/{res}"} <= routes
    assert summary["requests"]["total"] == sum(seen["requests"].values())
    assert 0.85 <= summary["requests"]["read"] / summary["requests"]["total"] <= 0.95


def test_tokens_file_replaces_the_authority(tmp_path: Path, fake_service: int) -> None:
    url = f"http://127.0.0.1:{fake_service}"
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"a1": "tok-a1", "a2": "tok-a2"}))
    code, _summary = run_script(tmp_path, "K6_RATE=20", "LOAD_DURATION=2s", "TENANTS=a1,a2", f"TOKENS_FILE={tokens}",
                               f"SERVICE_URLS=policy={url}", "AUTHORITY_URL=http://127.0.0.1:9")
    seen = requests.get(f"{url}/stats", timeout=5).json()
    assert code == 0
    assert set(seen["tenants"]) == {"a1", "a2"}
    assert not [k for k in seen["requests"] if k.endswith("|rejected")]


def test_a_failing_service_fails_the_error_threshold_and_exits_99(tmp_path: Path) -> None:
    proc, port = start_fake("--status", "500")
    try:
        url = f"http://127.0.0.1:{port}"
        code, summary = run_script(tmp_path, "K6_RATE=20", "LOAD_DURATION=2s", f"SERVICE_URLS=policy={url}",
                                   f"AUTHORITY_URL={url}")
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
    code, summary = run_script(tmp_path, "K6_RATE=20", "LOAD_DURATION=2s", "TENANTS=a1,a2",
                               f"SERVICE_URLS=policy={url}", f"AUTHORITY_URL={url}", f"TOKEN_AUTH_METHOD={method}")
    seen = requests.get(f"{url}/stats", timeout=5).json()
    assert code == 0, summary
    assert set(seen["tenants"]) == {"a1", "a2"}
    assert not [k for k in seen["requests"] if k.endswith("|rejected")]


def test_a_wrong_client_secret_stops_setup_with_the_idps_error(tmp_path: Path, fake_service: int) -> None:
    url = f"http://127.0.0.1:{fake_service}"
    code, _out = run_script(tmp_path, "K6_RATE=20", "LOAD_DURATION=2s", f"SERVICE_URLS=policy={url}",
                           f"AUTHORITY_URL={url}", secret_env={**CLIENT_ENV, "TOKEN_CLIENT_SECRET": "wrong"})
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
        code, summary = run_script(tmp_path, "K6_RATE=20", "LOAD_DURATION=2s", f"SERVICE_URLS=policy={url}",
                                   f"AUTHORITY_URL={url}")
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
        code, summary = run_script(tmp_path / "a", "K6_RATE=20", "LOAD_DURATION=2s",
                                   f"SERVICE_URLS=policy={home.url}", f"AUTHORITY_URL={home.url}",
                                   f"TOKEN_ENDPOINT={home.url}/token",
                                   "TOKEN_AUTH_METHOD=client_secret_post",
                                   secret_env={"TOKEN_CLIENT_ID": "c", "TOKEN_CLIENT_SECRET": SECRET})
        assert code != 0 and not elsewhere.seen, "the 307 was followed with the client secret"
        home.redirect_to = ""
        home.answer = lambda path: {"token_endpoint": elsewhere.url + "/token"}
        code, summary = run_script(tmp_path / "b", "K6_RATE=20", "LOAD_DURATION=2s",
                                   f"SERVICE_URLS=policy={home.url}", f"AUTHORITY_URL={home.url}",
                                   "TOKEN_AUTH_METHOD=client_secret_post",
                                   secret_env={"TOKEN_CLIENT_ID": "c", "TOKEN_CLIENT_SECRET": SECRET})
        assert code != 0 and "not on AUTHORITY_URL's origin" in summary.get("stderr", ""), summary
        assert not elsewhere.seen, "the discovered endpoint on another origin got the client secret"
    finally:
        home.close()
        elsewhere.close()
