"""Issue 27, item 6: credentials never follow a redirect to another origin, need https outside the lab, and the
client secret goes only to the authority's own token endpoint (or one configured explicitly).

Real local HTTP servers on loopback: the "server" answers 307 to an "elsewhere" server on another port (another
origin), which records everything it receives. Before the fix a 307 token endpoint received the client id and secret
of ``client_secret_post`` at the other origin, ClickHouse's and Loki's credential headers went along too, plain http
was fine for any credential, and a discovery document could send the client secret to any host."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chaosext.core import backends
from chaosext.core.config import ExperimentConfig, load_config
from chaosext.core.tokens import TokenSettings, client_credentials_token, token_settings, tokens_for
from chaosext.metrics import prom
from tests.redirector import SECRET, Server

NO_LAB = {"chaosext_lab_dir": "/nonexistent"}


def _cfg(**conf: str) -> ExperimentConfig:
    """The run's settings (no lab); the backend credentials come from the environment, as secrets do."""
    return load_config({**NO_LAB, **conf})


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Server, Server]]:
    """(the server that redirects, the other origin it redirects to)."""
    for name in ("CHAOSEXT_ALLOW_HTTP", "CHAOSEXT_LAB_DIR", "TOKEN_ENDPOINT", "TOKEN_CLIENT_ID", "TOKEN_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    home, elsewhere = Server(), Server()
    home.redirect_to = elsewhere.url
    try:
        yield home, elsewhere
    finally:
        home.close()
        elsewhere.close()


def test_a_307_token_endpoint_never_gets_the_client_secret_to_another_origin(servers: tuple[Server, Server]) -> None:
    home, elsewhere = servers
    with pytest.raises(Exception, match="another origin"):
        client_credentials_token(home.url + "/token", "client-1", SECRET, "client_secret_post", timeout=5)
    assert home.seen and not elsewhere.seen, "the redirect was followed"
    assert not elsewhere.leaked()


@pytest.mark.parametrize("backend, call", [
    ("clickhouse", lambda url, cfg: backends.backend("clickhouse", url, cfg).post("/?query=SELECT%201", timeout=5,
                                                                                  data="x")),
    ("loki", lambda url, cfg: backends.backend("loki", url, cfg).get("/loki/api/v1/query_range", timeout=5)),
    ("prometheus", lambda url, cfg: prom.query(prom.Prom(backends.backend("prometheus", url, cfg)), "up", timeout=5)),
])
def test_backend_credentials_never_follow_a_redirect_to_another_origin(
        servers: tuple[Server, Server], monkeypatch: pytest.MonkeyPatch, backend: str, call: Any) -> None:
    home, elsewhere = servers
    monkeypatch.setenv("CLICKHOUSE_USER", "reader")
    monkeypatch.setenv("CLICKHOUSE_PASSWORD", SECRET)
    monkeypatch.setenv("LOKI_HEADERS", json.dumps({"X-Api-Key": SECRET}))
    monkeypatch.setenv("PROMETHEUS_HEADERS", json.dumps({"X-Api-Key": SECRET}))
    with pytest.raises(Exception):  # noqa: B017 - BackendError or RequestException: what matters is below
        call(home.url, _cfg(chaosext_allow_http="true"))  # plain http on purpose: only the redirect is tested
    assert home.seen and home.leaked()  # the credentials did go where they belong
    assert not elsewhere.seen, f"{backend}: the redirect to another origin was followed"


def test_credentials_need_https_outside_the_lab_unless_allowed(servers: tuple[Server, Server],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    home, _ = servers
    home.redirect_to = ""
    creds = {"token_client_id": "client-1", "token_client_secret": SECRET}
    settings = token_settings(_cfg(authority_url=home.url, token_endpoint=home.url + "/token"), creds)
    with pytest.raises(Exception, match="CHAOSEXT_ALLOW_HTTP"):
        tokens_for(settings, ["t01"], {}, timeout=5)
    monkeypatch.setenv("LOKI_PASSWORD", SECRET)
    monkeypatch.setenv("LOKI_USERNAME", "reader")
    with pytest.raises(Exception, match="CHAOSEXT_ALLOW_HTTP"):
        backends.backend("loki", home.url, _cfg()).get("/loki/api/v1/query_range", timeout=5)
    assert not home.seen, "a credential went over plain http to a server that is not the lab"
    allowed = token_settings(_cfg(authority_url=home.url, token_endpoint=home.url + "/token",
                                  chaosext_allow_http="true"), creds)
    assert tokens_for(allowed, ["t01"], {}, timeout=5) == {"t01": "tok"}  # the documented setting allows it


def test_a_discovered_token_endpoint_must_share_the_authoritys_origin(servers: tuple[Server, Server]) -> None:
    home, elsewhere = servers
    home.redirect_to = ""
    home.answer = lambda path: {"issuer": home.url, "token_endpoint": elsewhere.url + "/token"}
    conf = {"authority_url": home.url, "chaosext_allow_http": "true"}
    creds = {"token_client_id": "client-1", "token_client_secret": SECRET}
    with pytest.raises(Exception, match="not on the authority's origin"):
        tokens_for(token_settings(_cfg(**conf), creds), ["t01"], {}, timeout=5)
    assert not elsewhere.seen
    explicit: TokenSettings = token_settings(_cfg(**conf, token_endpoint=elsewhere.url + "/token"), creds)
    assert tokens_for(explicit, ["t01"], {}, timeout=5) == {"t01": "tok"}  # configured on purpose: allowed
    assert [r["path"] for r in elsewhere.seen] == ["/token"]
