"""End to end: a live baseline before the fault, a live recovery after it, and runs that never watch an outage that
did not happen (issue: "A steady state that means something").

Each test runs `chaos run experiments/jwks-outage.json` in its own network namespace against a lab there. "No fault
was ever applied" is asserted by polling iptables-save in that namespace every 100 ms for the whole run.
"""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.experiment.experiment_util import ExperimentRunner, Outcome, iptables_rules, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.slow, pytest.mark.netns]


class RulePoller:
    """Polls iptables-save in the namespace every 100 ms while a run goes on; ``seen`` = any chaosext rule seen."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.seen: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen += [line for line in iptables_rules(self.netns).splitlines() if "chaosext" in line.lower()]
            self.samples += 1
            self._stop.wait(0.1)

    def __enter__(self) -> RulePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _not_run(out: Outcome) -> None:
    assert out.verdict_rc == 3, out.verdict_out + out.output[-3000:]
    assert "VERDICT: NOT RUN" in out.verdict_out
    assert not any((r.get("activity") or {}).get("name") == "block-jwks-egress" for r in out.journal.get("run") or [])


@pytest.mark.parametrize("flags, failing", [
    ({"inject_5xx": 0.2}, "valid-tokens-accepted"),  # 503s: the first baseline check to see them
    ({"no_audit": True}, "audit-pipeline-healthy"),
], ids=["errors-before-the-run", "audit-off"])
def test_unhealthy_baseline_injects_nothing(experiment: ExperimentRunner, lab_factory, flags: dict,
                                            failing: str) -> None:
    """A system already failing before the run gets no fault: the verdict says "not run: baseline unhealthy". The
    503s are random (a fifth of the requests): when the safety control's pre-flight request is one of them, the run is
    refused before any change instead, naming the 503 -- as honest, and still no fault."""
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120, **flags)
    with RulePoller(experiment.netns.name) as poll:
        out = experiment.run(lab)
    assert poll.samples > 20 and not poll.seen, poll.seen[:3]
    _not_run(out)
    preflight_saw_it = "inject_5xx" in flags and "refused before any change" in out.verdict_out \
        and "HTTP 503; fix: it must answer 200 to a valid token" in out.output
    assert preflight_saw_it or ("baseline unhealthy" in out.verdict_out and failing in out.verdict_out), \
        out.verdict_out


def test_an_expiry_alert_already_firing_blocks_the_run(experiment: ExperimentRunner, lab_factory) -> None:
    """A service whose cache already expired (an expiry alert firing) before the run: no fault, "not run"."""
    lab = lab_factory(jwks_ttl=2, jwks_max_stale=3, no_refetch_after_failure=True, alert_for=2)
    port = lab["jwks_url"].split(":")[2].split("/")[0]
    rule = ["-d", "127.0.0.2", "-p", "tcp", "--dport", port, "-j", "REJECT", "--reject-with", "tcp-reset"]
    ns = experiment.netns.prefix
    # one failed fetch is enough: the --no-refetch-after-failure services never fetch again, so they expire
    subprocess.run(ns + ["iptables", "-I", "OUTPUT", "1", *rule], check=True, timeout=20)
    try:
        time.sleep(3)
    finally:
        subprocess.run(ns + ["iptables", "-D", "OUTPUT", *rule], check=True, timeout=20)
    assert experiment.netns.get(lab["jwks_url"]) == 200

    def firing() -> bool:
        code = ("import sys,requests; a=requests.get(sys.argv[1]+'/api/v1/alerts',timeout=5).json()['data']['alerts'];"
                "print(any(x['labels']['alertname']=='jwks_cache_miss_spike' and x['state']=='firing' for x in a))")
        r = subprocess.run(ns + ["python3", "-c", code, lab["prometheus_url"]], capture_output=True, text=True,
                           timeout=30, check=False)
        return r.stdout.strip() == "True"

    assert wait_for(firing, timeout=60, interval=2), "jwks_cache_miss_spike never fired"
    with RulePoller(experiment.netns.name) as poll:
        out = experiment.run(lab)
    assert not poll.seen
    _not_run(out)
    # an expired cache refuses the pre-flight's valid tokens: the live pre-flight stops the run before any change
    # (before the hypothesis' jwks-caches-fresh / expiry-alerts checks could)
    assert "not starting, nothing was changed" in out.output, out.output[-4000:]
    assert all(f"service: {name}" in out.output for name in lab["service_urls"]) and "HTTP 401" in out.output


def test_a_service_that_never_refetches_fails_recovery(experiment: ExperimentRunner, lab_factory) -> None:
    """After the restore every service must fetch the JWKS again: a stuck cache fails recovery, naming the
    services, although the outage itself passed."""
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120, no_refetch_after_failure=True)
    out = experiment.run(lab, RECOVERY_SECONDS="10")
    assert out.verdict_rc == 1, out.verdict_out
    assert "recovery failed" in out.verdict_out and "jwks-caches-fresh" in out.verdict_out
    after = {p["activity"]["name"]: p for p in out.journal["steady_states"]["after"]["probes"]}
    assert after["jwks-caches-fresh"]["output"]["not_recovered"] == sorted(lab["service_urls"])
    assert out.check("outage-held")["ok"]


@pytest.mark.parametrize("extra, message", [
    ({"FAULT_TARGET": "netns:chaosext-no-such-ns", "CHAOSEXT_APPROVE": "netns:chaosext-no-such-ns"},
     "not found: no network namespace"),
    ({"OUTAGE_SECONDS": "3601"}, "above MAX_OUTAGE_SECONDS=3600; use OUTAGE_SECONDS=3600 or less"),
], ids=["missing-target", "over-the-cap"])
def test_refused_before_k6_starts(experiment: ExperimentRunner, lab_factory, extra: dict, message: str) -> None:
    """What can be checked before any change is checked before k6 starts: no k6 run, no rule, "not run"."""
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120)
    out = experiment.run(lab, **extra)
    assert message in out.output, out.output[-3000:]
    assert "not starting, nothing was changed" in out.output
    assert not list(Path(out.env["CHAOSEXT_RUN_DIR"]).glob("*/k6/*/run.json")), "k6 was started"
    _not_run(out)


def test_a_fault_that_does_not_verify_ends_the_run_at_once(experiment: ExperimentRunner, lab_factory) -> None:
    """The fault applied in a namespace that cannot reach the JWKS at all verifies wrong (no timeout but "network
    unreachable"): it is removed, and the run ends in seconds, not after OUTAGE_SECONDS, saying "fault not applied"."""
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120)
    empty = f"{experiment.netns.name}x"
    subprocess.run(["ip", "netns", "add", empty], check=True, timeout=20)  # loopback down: nothing is reachable
    try:
        began = time.monotonic()
        out = experiment.run(lab, OUTAGE_SECONDS="120", FAULT_TARGET=f"netns:{empty}",
                             CHAOSEXT_APPROVE=f"netns:{empty}")
        took = time.monotonic() - began
        assert not [r for r in iptables_rules(empty).splitlines() if "chaosext" in r.lower()]
    finally:
        subprocess.run(["ip", "netns", "del", empty], check=False, timeout=20)
    assert took < 90, f"the run went on for {took:.0f}s after the fault failed"
    assert out.verdict_rc == 1 and "fault not applied" in out.verdict_out, out.verdict_out
    assert not any((r.get("activity") or {}).get("name") == "watch-outage" and (r.get("output") or {}).get("ticks")
                   for r in out.journal.get("run") or [])


def test_a_dry_run_changes_nothing_and_is_never_a_pass(experiment: ExperimentRunner, lab_factory) -> None:
    """`chaos run --dry actions` prints the plan and the exact fault commands, never sleeps through the outage,
    never blocks anything, and its verdict says "dry run"."""
    lab = lab_factory(jwks_ttl=3, jwks_max_stale=120)
    env = experiment.env_for(lab, OUTAGE_SECONDS="120")
    journal = Path(env["_WORK"]) / "journal.json"
    began = time.monotonic()
    with RulePoller(experiment.netns.name) as poll:
        proc = experiment.popen(["chaos", "--no-log-file", "run", "--dry", "actions", "--journal-path", str(journal),
                                 str(Path(__file__).resolve().parents[2] / "experiments" / "jwks-outage.json")], env)
        output, _ = proc.communicate(timeout=120)
    assert time.monotonic() - began < 60, output[-2000:]
    assert not poll.seen
    assert "[dry run]" in output and "iptables" in output and "-j DROP" in output, output[-3000:]
    v = subprocess.run(["python3", "-m", "chaosext.cli", "verdict", str(journal)], capture_output=True, text=True,
                       timeout=60, check=False)
    assert v.returncode == 4 and "VERDICT: DRY RUN" in v.stdout, v.stdout
