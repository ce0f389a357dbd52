"""The one settings resolver (chaosext.core.settings): the experiment's configuration (lower- or upper-case key), else
the environment variable, else the default; empty values and unresolved ``${...}`` references count as unset.
Secrets: the ``chaosext`` scope of the experiment's secrets (or the flat mapping an activity gets), else the env."""
from __future__ import annotations

import pytest

from chaosext.core.settings import SECRETS_SCOPE, is_unset, raw_setting, secret_value, setting


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OUTAGE_SECONDS", "K6_RATE", "TOKEN_CLIENT_SECRET", "LOKI_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("value, unset", [
    (None, True), ("", True), ("${OUTAGE_SECONDS}", True), ("${}", True),
    ("0", False), (0, False), (False, False), ("$OUTAGE_SECONDS", False), ("${a} b", False), ("x}", False),
])
def test_what_counts_as_unset(value: object, unset: bool) -> None:
    assert is_unset(value) is unset


def test_the_lower_case_key_is_read_and_an_upper_case_key_is_accepted_too() -> None:
    assert setting({"outage_seconds": "20"}, "OUTAGE_SECONDS") == "20"
    assert setting({"OUTAGE_SECONDS": "30"}, "outage_seconds") == "30"
    # both given: the documented lower-case key wins
    assert setting({"OUTAGE_SECONDS": "30", "outage_seconds": "20"}, "outage_seconds") == "20"
    # an unset lower-case key does not hide a set upper-case one
    assert setting({"outage_seconds": "", "OUTAGE_SECONDS": "30"}, "outage_seconds") == "30"
    assert setting({"outage_seconds": "${OUTAGE_SECONDS}", "OUTAGE_SECONDS": "30"}, "outage_seconds") == "30"


def test_the_configuration_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTAGE_SECONDS", "99")
    assert setting({"outage_seconds": "20"}, "outage_seconds", "300") == "20"


@pytest.mark.parametrize("configuration", [None, {}, {"outage_seconds": ""}, {"outage_seconds": None},
                                           {"outage_seconds": "${OUTAGE_SECONDS}"}, {"k6_rate": "5"}])
def test_an_unset_configuration_value_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                                     configuration: dict[str, object] | None) -> None:
    """Chaos Toolkit leaves ``${OUTAGE_SECONDS}`` as written when the variable is not set: that is unset too."""
    monkeypatch.setenv("OUTAGE_SECONDS", "99")
    assert setting(configuration, "outage_seconds", "300") == "99"


@pytest.mark.parametrize("env", [None, "", "${OUTAGE_SECONDS}"])
def test_without_configuration_or_environment_the_default(monkeypatch: pytest.MonkeyPatch, env: str | None) -> None:
    if env is not None:
        monkeypatch.setenv("OUTAGE_SECONDS", env)
    assert setting({"outage_seconds": ""}, "outage_seconds", "300") == "300"
    assert setting(None, "outage_seconds") == ""


def test_raw_setting_keeps_the_type_and_a_falsy_value_is_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTAGE_SECONDS", "99")
    assert raw_setting({"outage_seconds": 0}, "outage_seconds", 300) == 0
    assert raw_setting({"outage_seconds": False}, "outage_seconds") is False
    routes = {"policy": ["GET /a"]}
    assert raw_setting({"forgery_routes": routes}, "FORGERY_ROUTES") is routes
    assert setting({"outage_seconds": 20}, "outage_seconds") == "20"


def test_secrets_come_from_the_chaosext_scope_or_the_flat_mapping_else_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    scoped = {SECRETS_SCOPE: {"token_client_secret": "from-scope"}, "other": {"token_client_secret": "not-ours"}}
    assert secret_value(scoped, "token_client_secret") == "from-scope"
    # what an activity gets: Chaos Toolkit already merged its scopes into one flat mapping
    assert secret_value({"token_client_secret": "flat"}, "token_client_secret") == "flat"
    monkeypatch.setenv("TOKEN_CLIENT_SECRET", "from-env")
    for unset in (None, {}, {SECRETS_SCOPE: {"token_client_secret": ""}},
                  {SECRETS_SCOPE: {"token_client_secret": "${TOKEN_CLIENT_SECRET}"}}):
        assert secret_value(unset, "token_client_secret") == "from-env"
    assert secret_value(None, "loki_password") == ""
