"""JWKS_FAILURE: one list of what each fault driver can make (chaosext.core.failures). A bad mode name, or a mode the
chosen driver cannot make against this target, is refused before anything changes, with the list of what the
driver can do, and the same way by the settings check (chaosext doctor), the safety control (chaos run) and
block_jwks_egress. The answers are one definition: the impostor's, Envoy's direct responses and Istio's are the same
bytes. No network, no namespace."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from chaoslib.exceptions import InterruptExecution
from click.testing import CliRunner

from chaosext.core.config import load_config, validate
from chaosext.core.failures import (
    ANSWER_MODES,
    DRIVER_FAILURES,
    JWKS_FAILURES,
    ROTATED_KID,
    answer,
    body_variants,
    driver_failures,
    failure_problem,
)
from chaosext.doctor import doctor
from chaosext.egress.actions import block_jwks_egress
from chaosext.egress.base import FaultError
from chaosext.egress.envoy import EnvoyDriver, body_variant
from chaosext.egress.kubernetes import IstioDriver
from chaosext.lab.envoy import body_routes, bootstrap
from chaosext.lab.jwks_cache import InvalidJwks, parse_jwks
from chaosext.safety import controls
from tests.targetutil import target_config

HTTP = "http://10.96.0.9:8440/jwks"
HTTPS = "https://idp.example/.well-known/jwks.json"


def test_every_driver_can_make_unreachable_and_the_scenarios_and_only_iptables_tls_untrusted():
    for via, modes in DRIVER_FAILURES.items():
        assert {"unreachable", "rotation-during-outage", "cold-start-during-outage"} <= set(modes), via
        assert ("tls-untrusted" in modes) == (via == "iptables")
    assert driver_failures("k8s-networkpolicy") == ("unreachable", "rotation-during-outage",
                                                    "cold-start-during-outage")
    assert driver_failures("iptables") == JWKS_FAILURES


@pytest.mark.parametrize("via,failure,says", [
    ("k8s-networkpolicy", "slow", "only allows or denies packets"),
    ("k8s-networkpolicy", "empty-keys", "k8s-networkpolicy can make: unreachable, rotation-during-outage, "
                                        "cold-start-during-outage"),
    ("envoy", "tls-untrusted", "envoy can make: unreachable, slow, http-error, empty-keys, malformed, rotated, "
                               "rotation-during-outage, cold-start-during-outage"),
    ("istio", "tls-untrusted", "TLS passthrough"),
    ("iptables", "explode", "use one of unreachable, slow, http-error"),
])
def test_a_mode_the_driver_cannot_make_is_refused_with_what_it_can(via, failure, says):
    assert says in failure_problem(failure, via, "local", HTTP)


def test_what_iptables_cannot_impersonate_is_refused_and_named():
    assert "needs an https JWKS_URL" in failure_problem("tls-untrusted", "iptables", "local", HTTP)
    assert failure_problem("tls-untrusted", "iptables", "local", HTTPS) == ""
    for mode in ("http-error", "empty-keys", "malformed", "rotated"):  # the impostor is no trusted https server
        assert "which is JWKS_FAILURE=tls-untrusted" in failure_problem(mode, "iptables", "local", HTTPS)
    assert failure_problem("slow", "iptables", "local", HTTPS) == ""  # a held connection needs no certificate
    for mode in ANSWER_MODES:
        said = failure_problem(mode, "iptables", "k8s-pod:tenancy/app=policy", HTTPS.replace("https", "http"))
        if mode != "tls-untrusted":
            assert "for pods iptables can make: unreachable, rotation-during-outage" in said, mode
    assert failure_problem("rotation-during-outage", "iptables", "k8s-pod:tenancy/app=policy", HTTP) == ""


def test_the_canned_answers_are_one_definition_for_every_driver():
    routes = {r["name"]: r for r in body_routes()}
    for name, canned in body_variants().items():
        route = routes[f"chaosext_body_{name}"]
        assert route["direct_response"] == {"status": 200, "body": {"inline_string": canned.text}}
        assert route["match"]["runtime_fraction"]["runtime_key"] == f"chaosext.jwks.body.{name}_percent"
    # the Envoy driver switches exactly the route the lab's bootstrap (and docs/egress.md) carries
    from chaosext.egress.base import make_spec

    for failure, malformed in (("empty-keys", ""), ("malformed", "not-json"), ("malformed", "truncated"),
                               ("rotated", "")):
        options = {"jwks_failure": failure, "answer": {"malformed": malformed}}
        spec = make_spec(HTTP, "envoy", "local", "reject", 60, options=options, resolve=False)
        keys = EnvoyDriver().keys(spec)
        switched = [k for k in keys if ".body." in k]
        assert switched == [f"chaosext.jwks.body.{body_variant(failure, options['answer'])}_percent"]
        assert switched[0] in {r["match"]["runtime_fraction"]["runtime_key"] for r in body_routes()}
        assert set(EnvoyDriver().all_keys()) >= set(keys)
        istio = IstioDriver().body(make_spec(HTTP, "istio", "tenancy/app=p", "reject", 60, options=options,
                                             resolve=False), "tenancy", "app=p")
        assert istio["spec"]["http"][0]["directResponse"]["body"]["string"] == \
            answer(failure, malformed=malformed or "not-json").text
    hosted = bootstrap(("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.2", 3))
    listener_routes = hosted["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"]
    assert [r.get("name") for r in listener_routes[:-1]] == [f"chaosext_body_{n}" for n in body_variants()]
    assert listener_routes[-1]["route"]["cluster"] == "jwks_upstream"  # the real JWKS last, when no switch is on
    assert [k["kid"] for k in json.loads(answer("rotated").body)["keys"]] == [ROTATED_KID]
    for broken in (answer("empty-keys"), answer("malformed"), answer("malformed", malformed="truncated")):
        with pytest.raises(InvalidJwks):  # no usable key in any of them (the lab's parser, as strict as a library's)
            parse_jwks(broken.body)


@pytest.mark.parametrize("settings,says", [
    ({"jwks_failure": "melt"}, "JWKS_FAILURE='melt' is unknown"),
    ({"jwks_failure": "slow", "fault_via": "k8s-networkpolicy", "fault_target": "tenancy/app=policy"},
     "k8s-networkpolicy can make: unreachable"),
    ({"jwks_failure": "slow", "jwks_slow_seconds": "400"}, "not shorter than OUTAGE_SECONDS"),
    ({"jwks_failure": "http-error", "jwks_error_status": "200"}, "JWKS_ERROR_STATUS=200 must be"),
    ({"jwks_failure": "malformed", "jwks_malformed": "gibberish"}, "JWKS_MALFORMED='gibberish'"),
    ({"jwks_failure": "rotation-during-outage"}, "ROTATE_URL=''"),
    ({"jwks_failure": "cold-start-during-outage"}, "COLD_START_URL=''"),
    ({"jwks_failure": "cold-start-during-outage", "cold_start_url": "{service_url}/x", "cold_start_service": "nope"},
     "COLD_START_SERVICE names nope"),
])
def test_the_settings_check_refuses_a_mode_and_says_what_to_set(tmp_path: Path, settings, says):
    cfg = load_config(target_config(tmp_path, **settings))
    assert any(says in p for p in validate(cfg)), validate(cfg)


def test_doctor_and_the_safety_control_refuse_the_same_before_anything(tmp_path: Path, monkeypatch):
    conf = target_config(tmp_path, fault_via="envoy", fault_target="http://127.0.0.1:9", jwks_failure="tls-untrusted")
    monkeypatch.setenv("TARGET_FILE", conf["target_file"])
    monkeypatch.setenv("JWKS_FAILURE", "tls-untrusted")
    result = CliRunner().invoke(doctor, ["--via", "envoy", "--target", "http://127.0.0.1:9", "--state-dir",
                                         str(tmp_path / "no-lab"), "--json"])
    assert result.exit_code == 1, result.output
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    said = checks["configuration"]["detail"]
    assert "FAULT_VIA=envoy cannot make JWKS_FAILURE=tls-untrusted" in said and "envoy can make: unreachable" in said
    with pytest.raises(InterruptExecution) as refused:
        controls.before_experiment_control(context={}, configuration=dict(conf), secrets=None)
    assert said in str(refused.value) and "nothing was changed" in str(refused.value)


@pytest.mark.parametrize("via,target,failure", [("envoy", "http://127.0.0.1:9", "tls-untrusted"),
                                                ("k8s-networkpolicy", "tenancy/app=policy", "rotated"),
                                                ("iptables", "local", "not-a-mode")])
def test_block_refuses_before_it_records_or_contacts_anything(tmp_path: Path, monkeypatch, via, target, failure):
    monkeypatch.setenv("CHAOSEXT_STATE_DIR", str(tmp_path / "faults"))
    with pytest.raises(FaultError, match=r"can make|use one of"):
        block_jwks_egress(HTTP, via=via, target=target, jwks_failure=failure, deadline_seconds=60, use_watchdog=False,
                          kube_api_url="http://127.0.0.1:9")
    assert not (tmp_path / "faults").exists()


def test_docs_show_the_body_route_the_lab_and_the_driver_use():
    import yaml

    section = (Path(__file__).parents[2] / "docs" / "egress.md").read_text().split("**JWKS failure modes**", 1)[1]
    shown = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])["routes"]
    assert json.loads(json.dumps(shown)) == body_routes()[:1]

