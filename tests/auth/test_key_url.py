"""Issue 27, item 7: the ``jku`` / ``x5u`` forgeries point at a key URL the services can reach, or are reported "not
testable here" -- never tried against an unreachable URL and counted as refused.

The key server used to live on the runner's 127.0.0.1, re-bound every round: a service on another host that DOES
follow ``jku`` cannot reach it, fails, refuses the token, and the class counted as refused -- a false pass on exactly
the flaw the class exists for. Here the service (tests/auth/jku_service.py: it trusts the key at the token's ``jku``
URL, with PyJWT) runs in network namespace "far"; the probe runs in "near", another "host" it reaches over a veth."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.labfake import write_running_lab
from tests.nsutil import NsPair

HERE = Path(__file__).resolve().parent
PROBE = textwrap.dedent("""
    import json
    from chaosext.auth.measure import ForgeryPlan
    from chaosext.run.context import run_context
    ctx = run_context(None)
    cfg = ctx.cfg
    plan = ForgeryPlan(ctx)
    first = plan.judge(cfg, plan.round(cfg), None)
    second = plan.judge(cfg, plan.round(cfg), None)  # a second round: the same listener, the same key URL
    print(json.dumps({"jku": first["classes"].get("jku"), "x5u": first["classes"].get("x5u"),
                      "fetched": second.get("key_url_fetched", []), "key_url": plan.key_url}))
""")


def _tokens_file(tmp_path: Path) -> Path:
    """Valid tokens of t01 and t02 from an "IdP" key the service never sees (the forgeries copy their claims)."""
    idp = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    tokens = {t: jwt.encode({"sub": "svc", "tenant": t, "iss": "http://idp.example", "aud": "api", "iat": now,
                             "exp": now + 7200}, idp, algorithm="RS256", headers={"kid": "idp-1"})
              for t in ("t01", "t02")}
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(tokens))
    path.chmod(0o600)
    return path


def _probe(pair: NsPair, tmp_path: Path, **extra: str) -> dict[str, Any]:
    service = subprocess.Popen(["ip", "netns", "exec", pair.far, sys.executable, str(HERE / "jku_service.py"),
                                pair.far_ip], stdout=subprocess.PIPE, text=True)
    try:
        port = int(service.stdout.readline()) if service.stdout else 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORGERY_")}
        env = {**env, "TOKENS_FILE": str(_tokens_file(tmp_path)), "TENANTS": "t01,t02",
               "SERVICE_URLS": f"svc=http://{pair.far_ip}:{port}", "FORGERY_ROUTES": "svc=GET /items",
               "JWKS_URL": f"http://{pair.far_ip}:1/jwks.json",
               "AUTHORITY_URL": f"http://{pair.far_ip}:1", "CHAOSEXT_LAB_DIR": str(tmp_path / "no-lab"),
               "CHAOSEXT_RUN_DIR": str(tmp_path / "run"), "FORGERY_TIMEOUT": "3", **extra}
        out = subprocess.run(["ip", "netns", "exec", pair.near, sys.executable, "-c", PROBE], capture_output=True,
                             text=True, timeout=120, check=False, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    finally:
        service.kill()
        result_fetches = service.communicate(timeout=10)[0]
    result["service_fetched"] = [line for line in result_fetches.splitlines() if line.startswith("fetched")]
    return result


@pytest.mark.e2e
@pytest.mark.netns
def test_a_service_on_another_host_is_never_counted_as_refusing_jku_it_could_not_fetch(ns_pair: NsPair,
                                                                                       tmp_path: Path) -> None:
    out = _probe(ns_pair, tmp_path)
    for name in ("jku", "x5u"):
        cls = out[name] or {}
        assert "not testable here" in str(cls.get("skipped")), f"{name}: {cls} (a refusal nobody could have proven)"
        assert not cls.get("refused")


@pytest.mark.e2e
@pytest.mark.netns
def test_with_a_key_url_the_services_reach_a_service_that_follows_jku_is_caught(ns_pair: NsPair,
                                                                                tmp_path: Path) -> None:
    key_url = f"http://{ns_pair.near_ip}:8099"
    out = _probe(ns_pair, tmp_path, FORGERY_KEY_URL=key_url)
    assert out["key_url"].startswith(key_url + "/")
    assert (out["jku"] or {}).get("accepted", 0) >= 1, out["jku"]
    assert out["service_fetched"] and all(f"fetched {key_url}/" in line for line in out["service_fetched"])
    assert out["fetched"], "the second round's fetch of the same listener was not seen"


def test_the_lab_gets_a_loopback_key_url_and_other_targets_are_not_testable(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from chaosext.auth import keyserver
    from chaosext.core.config import load_config
    from chaosext.run.context import RunContext

    monkeypatch.delenv("FORGERY_KEY_URL", raising=False)
    monkeypatch.delenv("FORGERY_KEY_LISTEN", raising=False)
    write_running_lab(tmp_path / "lab")
    ctx = RunContext(load_config({"chaosext_lab_dir": str(tmp_path / "lab")}))
    try:
        lab, again = keyserver.key_url_for(ctx), keyserver.key_url_for(ctx)
        assert lab.url.startswith("http://127.0.0.1:") and lab.listener is again.listener  # one listener for the run
        assert lab.url != again.url  # each plan under a path of its own
        other = keyserver.key_url_for(RunContext(load_config({"chaosext_lab_dir": str(tmp_path / "no-lab")})))
        assert other.url == "" and "not testable here" in other.reason
    finally:
        if ctx.memory.key_server is not None:
            ctx.memory.key_server.close()
            ctx.memory.key_server = None
