"""The shipped experiment's `secrets` block reaches chaosext the way Chaos Toolkit hands it over (no network)."""
import json
from pathlib import Path

import pytest
from chaoslib.secret import load_secrets

from chaosext.core import backends
from chaosext.core.config import load_config
from chaosext.core.tokens import token_settings

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "jwks-outage.json"


def _activities(doc: dict) -> list[dict]:
    return [*doc["steady-state-hypothesis"]["probes"], *doc["method"], *doc["rollbacks"]]


def test_every_chaosext_activity_asks_for_the_chaosext_secrets_and_none_holds_a_value() -> None:
    doc = json.loads(EXPERIMENT.read_text())
    for act in _activities(doc):
        if act["provider"].get("module", "").startswith("chaosext"):
            assert act["provider"].get("secrets") == ["chaosext"], act["name"]
    declared = doc["secrets"]["chaosext"]
    assert {"token_client_id", "token_client_secret", "prometheus_bearer_token", "loki_password",
            "clickhouse_password"} <= set(declared)
    assert all(v == "" for v in declared.values()), "a secret value written into the experiment ends up in journals"


def test_env_and_literal_secrets_reach_the_token_and_backend_settings(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("CHAOSEXT_LAB_DIR", str(tmp_path / "no-lab"))
    monkeypatch.setenv("IDP_SECRET", "from-a-named-variable")
    monkeypatch.setenv("PROMETHEUS_BEARER_TOKEN", "from-the-env-fallback")
    block = json.loads(EXPERIMENT.read_text())["secrets"]
    block["chaosext"]["token_client_id"] = "probe-client"
    block["chaosext"]["token_client_secret"] = {"type": "env", "key": "IDP_SECRET"}
    secrets = load_secrets(block)  # what chaostoolkit does; controls get this, activities get secrets["chaosext"]
    cfg = load_config({"authority_url": "http://idp.example"})
    for given in (secrets, secrets["chaosext"]):
        s = token_settings(cfg, given)
        assert (s.client_id, s.client_secret, s.source) == ("probe-client", "from-a-named-variable", "secrets/env")
        # an empty value in the block falls back to the environment variable of the same name
        assert backends.auth_for("prometheus", cfg, given).headers["Authorization"] == "Bearer from-the-env-fallback"


@pytest.mark.e2e
@pytest.mark.lab
@pytest.mark.slow
def test_a_run_with_client_credentials_from_the_environment_leaves_no_token_or_secret_behind(
        experiment, lab_factory) -> None:
    """`chaos run` with the client given as TOKEN_CLIENT_ID/_SECRET (the secrets block's env fallback): the probes and
    k6 get their tokens by the grant, the run passes, and no JWT or client secret is in the output, the journal or
    any file of the run (run file, k6 records)."""
    import re

    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120)
    out = experiment.run(lab, OUTAGE_SECONDS="12", TOKEN_CLIENT_ID=lab["client_id"],
                         TOKEN_CLIENT_SECRET=lab["client_secret"], TOKEN_AUTH_METHOD="client_secret_post")
    assert out.verdict_rc == 0, out.verdict_out + out.output[-3000:]
    jwt_like = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")
    texts = {"output": out.output, "journal": json.dumps(out.journal)}
    for path in Path(out.env["_WORK"]).rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    for where, text in texts.items():
        assert lab["client_secret"] not in text, f"client secret in {where}"
        assert not jwt_like.search(text), f"a token in {where}"
    assert any(name.endswith("run.json") for name in texts) and any("/k6/" in name for name in texts)
