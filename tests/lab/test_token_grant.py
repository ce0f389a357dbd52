"""The lab Authority's token endpoint is a standard OAuth2 client-credentials endpoint (RFC 6749 §4.4, §2.3.1, §5.2),
and chaosext.core.tokens gets tokens from it the way it would from a real IdP (OIDC discovery, both client
authentication methods). The Authority runs as a real process on a free loopback port; it is not a running lab, so
plain http is allowed on purpose here (``allow_http``, CHAOSEXT_ALLOW_HTTP).
"""
import base64
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import jwt
import pytest
import requests

from chaosext.core import tokens
from chaosext.core.config import load_config
from chaosext.lab.testing import free_ports

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

CLIENT_ID, SECRET = "grant-test", "p@ss word:/+%"  # characters that HTTP Basic must form-url-encode


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real lab Authority with one client; yields its issuer URL."""
    tmp = tmp_path_factory.mktemp("grant")
    clients = tmp / "clients.json"
    clients.write_text(json.dumps({"clients": [{"client_id": CLIENT_ID, "client_secret": SECRET}]}))
    port, ops = free_ports(["127.0.0.1", "127.0.0.1"])
    issuer = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "chaosext.lab.authority", "--host", "127.0.0.1", "--port", str(port),
            "--ops-host", "127.0.0.1", "--ops-port", str(ops), "--issuer", issuer, "--key-dir", str(tmp / "keys"),
            "--clients-file", str(clients), "--tenants", "t01,t02"]
    with open(tmp / "authority.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp / "authority.log").read_text()
            try:
                if requests.get(f"http://127.0.0.1:{ops}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        yield issuer
    finally:
        proc.terminate()
        proc.wait(10)


def post(issuer: str, data: Any = None, auth: tuple[str, str] | None = None, **kw: Any) -> requests.Response:
    return requests.post(f"{issuer}/token", data=data, auth=auth, timeout=5, **kw)


def basic(client_id: str = CLIENT_ID, secret: str = SECRET) -> tuple[str, str]:
    return quote_plus(client_id), quote_plus(secret)


def test_discovery_advertises_the_token_endpoint_and_both_client_auth_methods(authority: str) -> None:
    disco = requests.get(f"{authority}/.well-known/openid-configuration", timeout=5).json()
    assert disco["token_endpoint"] == f"{authority}/token"
    assert disco["grant_types_supported"] == ["client_credentials"]
    assert set(disco["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}


@pytest.mark.parametrize("method", ["basic", "post"])
def test_client_credentials_grant_with_either_client_authentication(authority: str, method: str) -> None:
    form = {"grant_type": "client_credentials", "tenant": "t02", "scope": "policy:read"}
    if method == "basic":
        resp = post(authority, form, auth=basic())
    else:
        resp = post(authority, {**form, "client_id": CLIENT_ID, "client_secret": SECRET})
    assert resp.status_code == 200, resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["tenant"] == "t02" and claims["sub"] == CLIENT_ID and claims["iss"] == authority


@pytest.mark.parametrize("how", ["basic", "post", "unknown-client"])
def test_a_wrong_secret_is_invalid_client_401(authority: str, how: str) -> None:
    form = {"grant_type": "client_credentials", "tenant": "t01"}
    if how == "basic":
        resp = post(authority, form, auth=basic(secret="wrong"))
    elif how == "post":
        resp = post(authority, {**form, "client_id": CLIENT_ID, "client_secret": "wrong"})
    else:
        resp = post(authority, form, auth=basic(client_id="nobody"))
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    # RFC 6749 §5.2: WWW-Authenticate when the client tried HTTP Basic
    assert ("WWW-Authenticate" in resp.headers) == (how != "post")
    assert "access_token" not in resp.json()


def test_errors_follow_rfc6749_section_5_2(authority: str) -> None:
    no_auth = post(authority, {"grant_type": "client_credentials", "tenant": "t01"})
    assert no_auth.status_code == 401 and no_auth.json()["error"] == "invalid_client"
    assert no_auth.headers["WWW-Authenticate"].startswith("Basic")
    wrong_grant = post(authority, {"grant_type": "password", "tenant": "t01"}, auth=basic())
    assert wrong_grant.status_code == 400 and wrong_grant.json()["error"] == "unsupported_grant_type"
    no_grant = post(authority, {"tenant": "t01"}, auth=basic())
    assert no_grant.status_code == 400 and no_grant.json()["error"] == "invalid_request"
    both = post(authority, {"grant_type": "client_credentials", "tenant": "t01", "client_id": CLIENT_ID,
                            "client_secret": SECRET}, auth=basic())
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"
    unknown_tenant = post(authority, {"grant_type": "client_credentials", "tenant": "t99"}, auth=basic())
    assert unknown_tenant.status_code == 400 and "t99" in unknown_tenant.json()["error_description"]
    # the old JSON shortcut is gone: a JSON body is an invalid request, not a token
    as_json = requests.post(f"{authority}/token", json={"tenant": "t01"}, auth=basic(), timeout=5)
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    bad_basic = requests.post(f"{authority}/token", data={"grant_type": "client_credentials", "tenant": "t01"},
                              headers={"Authorization": "Basic !!!not-base64"}, timeout=5)
    assert bad_basic.status_code == 401 and bad_basic.json()["error"] == "invalid_client"


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_chaosext_gets_tenant_tokens_by_discovery_and_client_credentials(authority: str, method: str) -> None:
    cache: tokens.TokenCache = {}  # the run's memory (chaosext.run.memory): this test's own
    settings = tokens.TokenSettings(authority_url=authority, client_id=CLIENT_ID, client_secret=SECRET,
                                    auth_method=method, scope="policy:read", allow_http=True)
    got = tokens.tokens_for(settings, ["t01", "t02"], cache, min_valid_seconds=60)
    assert {t: jwt.decode(v, options={"verify_signature": False})["tenant"] for t, v in got.items()} == {
        "t01": "t01", "t02": "t02"}
    # cached for the run: a second call needs no IdP (point it at a dead endpoint to prove it)
    dead = tokens.TokenSettings(authority_url=authority, token_endpoint="http://127.0.0.1:9/token")
    assert tokens.tokens_for(dead, ["t01", "t02"], cache) == got


def test_chaosext_says_what_to_fix_on_a_bad_secret_and_never_shows_it(authority: str) -> None:
    cache: tokens.TokenCache = {}  # the run's memory (chaosext.run.memory): this test's own
    settings = tokens.TokenSettings(authority_url=authority, client_id=CLIENT_ID, client_secret="hunter2-wrong",
                                    allow_http=True)
    with pytest.raises(tokens.TokenError) as err:
        tokens.tokens_for(settings, ["t01"], cache)
    assert "401 invalid_client" in str(err.value) and "token_client_secret" in str(err.value)
    assert "hunter2" not in str(err.value) and "hunter2" not in repr(settings)


def test_a_token_shorter_than_the_run_is_refused_before_the_fault(authority: str) -> None:
    cache: tokens.TokenCache = {}  # the run's memory (chaosext.run.memory): this test's own
    settings = tokens.TokenSettings(authority_url=authority, client_id=CLIENT_ID, client_secret=SECRET, allow_http=True)
    with pytest.raises(tokens.TokenError, match="valid for 3600 s but this run needs 7200 s"):
        tokens.tokens_for(settings, ["t01"], cache, min_valid_seconds=7200)


def test_per_tenant_clients_from_the_secrets_block(authority: str, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    """An IdP with one client per tenant: secrets.chaosext.token_clients (here both map to the one lab client)."""
    cache: tokens.TokenCache = {}  # the run's memory (chaosext.run.memory): this test's own
    monkeypatch.setenv("CHAOSEXT_LAB_DIR", str(tmp_path / "no-lab"))
    secrets = {"chaosext": {"token_clients": json.dumps({
        "t01": {"client_id": CLIENT_ID, "client_secret": SECRET},
        "t02": {"client_id": CLIENT_ID, "client_secret": "wrong"}}), "token_client_id": "", "token_client_secret": ""}}
    settings = tokens.token_settings(load_config({"authority_url": authority, "chaosext_allow_http": "true"}), secrets)
    assert settings.client_for("t01") == (CLIENT_ID, SECRET)
    assert "t01" in tokens.tokens_for(settings, ["t01"], cache)
    with pytest.raises(tokens.TokenError, match="invalid_client"):
        tokens.tokens_for(settings, ["t02"], cache)


def test_tokens_file_is_the_fallback_and_must_not_be_readable_by_others(tmp_path: Path) -> None:
    cache: tokens.TokenCache = {}  # the run's memory (chaosext.run.memory): this test's own
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"t01": "a.b.c"}))
    path.chmod(0o644)
    settings = tokens.TokenSettings(authority_url="http://127.0.0.1:9", tokens_file=str(path))
    with pytest.raises(tokens.TokenError, match="chmod 600"):
        tokens.tokens_for(settings, ["t01"], cache)
    path.chmod(0o600)
    assert tokens.tokens_for(settings, ["t01"], cache) == {"t01": "a.b.c"}  # no IdP asked (port 9 is closed)
    with pytest.raises(tokens.TokenError, match=r"no token for tenant.*t02"):
        tokens.tokens_for(settings, ["t01", "t02"], cache)


def test_lab_up_makes_a_client_shown_by_status_json_and_stored_0600(lab: dict[str, Any]) -> None:
    status = subprocess.run([sys.executable, "-m", "chaosext.lab.cli", "status", "--state-dir", lab["state_dir"],
                             "--json"], capture_output=True, text=True, timeout=60)
    state = json.loads(status.stdout)
    assert state["client_id"] and len(state["client_secret"]) >= 32
    for name in ("clients.json", "state.json"):
        assert stat.S_IMODE(os.stat(Path(lab["state_dir"]) / name).st_mode) == 0o600, name
    creds = base64.b64encode(f"{state['client_id']}:{state['client_secret']}".encode()).decode()
    resp = requests.post(state["token_url"], data={"grant_type": "client_credentials", "tenant": "t03"},
                         headers={"Authorization": f"Basic {creds}"}, timeout=5)
    assert resp.status_code == 200, resp.text
    # the secret is not on any lab process's command line
    for comp in state["components"].values():
        assert state["client_secret"] not in " ".join(comp.get("argv") or [])


def test_doctor_gets_every_tenants_token_with_the_lab_client(lab: dict[str, Any]) -> None:
    proc = subprocess.run([sys.executable, "-m", "chaosext.cli", "doctor", "--state-dir", lab["state_dir"], "--json"],
                          capture_output=True, text=True, timeout=120)
    check = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "tokens")
    assert check["ok"], check
    assert "12 tenant token(s)" in check["detail"] and "lab client" in check["detail"]
    assert lab["client_secret"] not in proc.stdout


def test_doctor_says_what_to_give_when_the_client_is_wrong(lab: dict[str, Any]) -> None:
    env = {**os.environ, "TOKEN_CLIENT_ID": lab["client_id"], "TOKEN_CLIENT_SECRET": "not-the-secret"}
    proc = subprocess.run([sys.executable, "-m", "chaosext.cli", "doctor", "--state-dir", lab["state_dir"], "--json"],
                          capture_output=True, text=True, timeout=120, env=env)
    check = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "tokens")
    assert not check["ok"] and check["status"] == "MISSING"
    assert "invalid_client" in check["detail"] and "token_client_secret" in check["fix"]
    assert proc.returncode == 1 and "not-the-secret" not in proc.stdout
