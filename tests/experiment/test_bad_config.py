"""A bad configuration stops `chaos run` before any fault, with a message that says what to fix — and `chaosext
doctor`, run with the same environment, refuses the same thing (one pre-flight list for both).

No lab is needed: the target is a description (tests/targetutil.py) and every URL points at a free (closed) loopback
port, so nothing could even be reached; the checks
are that the safety control refused to start, the method never ran, no iptables rule exists for the JWKS port, the
verdict fails although Chaos Toolkit's exit code alone would not say why, and doctor exits 1 naming the same problem.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaosext.lab.testing import free_ports
from tests.experiment.experiment_util import ExperimentRunner, iptables_rules
from tests.targetutil import description, write_target

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


def _urls(where: Path) -> dict[str, str]:
    """The settings of a described target (its service's routes in TARGET_FILE) on free ports, no lab."""
    jwks, prom, am, svc = free_ports(["127.0.0.2", "127.0.0.1", "127.0.0.1", "127.0.0.1"])
    target = write_target(where, description(services={"policy": {"url": f"http://127.0.0.1:{svc}",
                                                                  "routes": ["GET /api/v1/policies"]}}))
    return {"JWKS_URL": f"http://127.0.0.2:{jwks}/.well-known/jwks.json", "AUTHORITY_URL": f"http://127.0.0.2:{jwks}",
            "PROMETHEUS_URL": f"http://127.0.0.1:{prom}", "ALERTMANAGER_URL": f"http://127.0.0.1:{am}",
            "TARGET_FILE": target, "AUDIT_SOURCE": "file:/tmp/chaosext-no-such/audit.jsonl",
            "CHAOSEXT_LAB_DIR": "/nonexistent-chaosext-lab",
            # loopback without a lab is not the lab (issue 27): approved and plain http allowed, so that each case
            # stops on the problem it is about
            "CHAOSEXT_APPROVE": "127.0.0.2", "CHAOSEXT_ALLOW_HTTP": "true"}


@pytest.mark.parametrize("override, message", [
    ({"OUTAGE_SECONDS": "-5"}, "OUTAGE_SECONDS=-5 must be a positive number"),
    ({"FAULT_VIA": "carrier-pigeon"}, "FAULT_VIA='carrier-pigeon' is unknown"),
    ({"PROMETHEUS_URL": "not a url"}, "PROMETHEUS_URL='not a url' is not an http(s) URL"),
    ({}, "unreachable: ConnectionError"),  # Prometheus (and the rest) down
    ({"K6_BIN": "/nonexistent/k6"}, "K6_BIN=/nonexistent/k6 is not an executable file"),
    ({"FAULT_TARGET": "netns:prod"}, "CHAOSEXT_APPROVE=netns:prod"),
    ({"OUTAGE_SECONDS": "4000"}, "OUTAGE_SECONDS=4000 is above MAX_OUTAGE_SECONDS=3600"),
    ({"FAULT_TARGET": "envoy:http://127.0.0.1:9901"}, "FAULT_VIA=iptables works on"),
    ({"K6_RATE": "999999999999"}, "K6_RATE=999999999999 is above the limit of 50000 requests/s"),
], ids=["negative-outage", "unknown-via", "bad-url", "prometheus-down", "no-k6", "unapproved-target", "over-cap",
        "target-of-another-driver", "k6-rate"])
def test_bad_configuration_stops_before_any_fault(experiment: ExperimentRunner, override: dict, message: str,
                                                  tmp_path: Path) -> None:
    urls = _urls(tmp_path / "target")
    out = experiment.run(None, **{**urls, **override})
    assert message in out.output, out.output[-3000:]
    assert "not starting, nothing was changed" in out.output
    assert out.journal["status"] == "interrupted"
    assert not out.journal.get("run"), "the method ran"
    assert not (out.journal.get("steady_states") or {}).get("before"), "the hypothesis ran"
    port = urls["JWKS_URL"].split(":")[2].split("/")[0]
    assert f"--dport {port}" not in iptables_rules(experiment.netns.name)
    assert out.verdict_rc == 3 and "VERDICT: NOT RUN" in out.verdict_out and "interrupted" in out.verdict_out
    # doctor refuses exactly what the run refused, with the same words
    rc, said = experiment.doctor(None, **{**urls, **override})
    assert rc == 1 and message in said and "MISSING" in said, said


@pytest.mark.lab
def test_live_refusals_are_doctors_too(experiment: ExperimentRunner, lab_factory, tmp_path: Path) -> None:
    """Against a running lab, what only the live pre-flight can see (a refused client, a service that does not answer,
    an audit file nobody writes) stops `chaos run` before any change, and doctor with the same settings refuses the
    same thing; on the healthy lab doctor passes."""
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120)
    closed = free_ports(["127.0.0.1"])[0]
    with_ghost = json.loads(Path(lab["target_file"]).read_text())  # the lab's description, one service more
    with_ghost["services"]["ghost"] = {"url": f"http://127.0.0.1:{closed}", "routes": ["GET /api/v1/ghosts"]}
    cases = [({"TOKEN_CLIENT_ID": "chaosext-lab", "TOKEN_CLIENT_SECRET": "wrong"}, "invalid_client"),
             # a service the lab's state file does not name makes the target not the lab: approved, http allowed
             ({"TARGET_FILE": write_target(tmp_path / "ghost", with_ghost), "CHAOSEXT_APPROVE": "127.0.0.2",
               "CHAOSEXT_ALLOW_HTTP": "true"}, "service: ghost"),
             ({"AUDIT_SOURCE": "file:/nonexistent-chaosext/audit.jsonl"}, "directory does not exist")]
    for override, message in cases:
        out = experiment.run(lab, **override)
        assert "not starting, nothing was changed" in out.output and message in out.output, out.output[-3000:]
        assert not out.journal.get("run") and out.verdict_rc == 3
        rc, said = experiment.doctor(lab, **override)
        assert rc == 1 and message in said, said
    rc, said = experiment.doctor(lab)
    assert rc == 0, said
    assert f"--dport {lab['jwks_url'].split(':')[2].split('/')[0]}" not in iptables_rules(experiment.netns.name)
