"""JWKS_FAILURE on iptables targets, with real iptables in network namespaces the tests create (conftest.py): the
JWKS is redirected (nat REDIRECT inside the target's namespace) to the run's impostor, which serves the mode's
answer; restore, the dead-man watchdog, the deadline and ``restore --all`` remove every part of it (the filter and nat
chains, the impostor process). The JWKS server of the pair answers ``{"keys": []}`` to every path; the impostor
answers its run id at ``/.chaosext/impostor/<run id>``, which the real server never does."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from chaosext.core.failures import ROTATED_KID, answer
from chaosext.egress import impostor, watchdog
from chaosext.egress.actions import block_jwks_egress, restore_jwks_egress
from tests.egress.egress_util import _sh, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

FAST = {"verify_timeout_seconds": 0.5}
GET = ("import json, sys, requests\n"
       "out = []\n"
       "for url in sys.argv[2:]:\n"
       "    try:\n"
       "        r = requests.get(url, timeout=float(sys.argv[1]), verify=True)\n"
       "        out.append({'status': r.status_code, 'body': r.text})\n"
       "    except requests.RequestException as exc:\n"
       "        out.append({'status': 0, 'error': type(exc).__name__})\n"
       "print(json.dumps(out))\n")


def fetch(pair, *urls: str, timeout: float = 3.0) -> list[dict]:
    """GET each URL from inside the pair's client namespace (the target)."""
    out = subprocess.run(["ip", "netns", "exec", pair.client, sys.executable, "-c", GET, str(timeout), *urls],
                         capture_output=True, text=True, timeout=timeout * len(urls) + 30, check=True).stdout
    return json.loads(out)


def every_rule(pair) -> list[str]:
    """Every chaosext line of both tables and both families in the target."""
    lines = []
    for binary in ("iptables", "ip6tables"):
        for table in ("filter", "nat"):
            out = _sh("ip", "netns", "exec", pair.client, binary, "-w", "5", "-t", table, "-S").stdout
            lines += [f"{binary} {table} {x}" for x in out.splitlines() if "chaosext" in x.lower()]
    return lines


def impostor_url(pair, run_id: str) -> str:
    return pair.url().replace("/.well-known/jwks.json", f"{impostor.VERIFY_PATH}/{run_id}")


@pytest.mark.parametrize("failure,extra,status,body", [
    ("http-error", {}, 503, answer("http-error").text),
    ("malformed", {}, 200, answer("malformed").text),
    ("rotated", {}, 200, answer("rotated").text),
])
def test_each_answer_is_served_inside_the_target_and_restore_removes_every_part(netpair, failure, extra, status,
                                                                               body):
    out = block_jwks_egress(netpair.url(), target=netpair.target, jwks_failure=failure, deadline_seconds=60, **FAST)

    assert out["verification"]["blocked"] is True and out["jwks_failure"] == failure
    run_id = out["run_id"]
    pid = out["applied"]["impostor"]["pid"]
    assert impostor.find(run_id) == [pid]
    got, verified = fetch(netpair, netpair.url(), impostor_url(netpair, run_id))
    assert (got["status"], got["body"]) == (status, body)
    assert verified == {"status": 200, "body": run_id}
    rules = every_rule(netpair)
    assert any(" nat -A OUTPUT " in r and f"-j CHAOSEXT-{run_id}" in r for r in rules)
    assert any("REDIRECT --to-ports" in r and "--datestop" in r and f"chaosext:{run_id}" in r for r in rules)

    restored = restore_jwks_egress(netpair.url(), target=netpair.target)

    assert restored["restored"][0]["run_id"] == run_id
    assert every_rule(netpair) == [] and impostor.find(run_id) == [] and watchdog.find(run_id) == []
    assert fetch(netpair, impostor_url(netpair, run_id))[0]["body"] == '{"keys": []}'  # the real server again
    assert ROTATED_KID not in fetch(netpair, netpair.url())[0]["body"]


def test_slow_answers_the_real_key_set_only_after_the_delay(netpair, monkeypatch):
    monkeypatch.setenv("JWKS_SLOW_SECONDS", "3")
    out = block_jwks_egress(netpair.url(), target=netpair.target, jwks_failure="slow", deadline_seconds=60, **FAST)
    assert out["verification"]["blocked"] is True

    quick = fetch(netpair, netpair.url(), timeout=1.0)[0]
    start = time.monotonic()
    patient = fetch(netpair, netpair.url(), timeout=10.0)[0]
    waited = time.monotonic() - start

    assert quick["status"] == 0 and quick["error"] in ("ReadTimeout", "ConnectionError")
    assert patient == {"status": 200, "body": '{"keys": []}'} and waited >= 3.0  # the real body, after the delay
    restore_jwks_egress(netpair.url(), target=netpair.target)
    assert every_rule(netpair) == [] and impostor.find(out["run_id"]) == []


def test_tls_untrusted_presents_a_certificate_a_verifying_client_refuses(netpair):
    url = netpair.url().replace("http://", "https://")
    out = block_jwks_egress(url, target=netpair.target, jwks_failure="tls-untrusted", deadline_seconds=60, **FAST)
    assert out["verification"]["blocked"] is True  # the driver reached its impostor over TLS (certificate read only)

    got = fetch(netpair, url)[0]

    assert got == {"status": 0, "error": "SSLError"}
    restore_jwks_egress(url, target=netpair.target)
    assert every_rule(netpair) == [] and impostor.find(out["run_id"]) == []


def test_the_impostor_ends_at_the_deadline_with_no_chaosext_process_alive(netpair):
    out = block_jwks_egress(netpair.url(), target=netpair.target, jwks_failure="empty-keys", deadline_seconds=2,
                            use_watchdog=False, **FAST)
    run_id = out["run_id"]
    assert impostor.find(run_id)

    assert wait_for(lambda: impostor.find(run_id) == [], timeout=10)
    assert fetch(netpair, impostor_url(netpair, run_id))[0]["body"] == '{"keys": []}'  # the kernel's datestop too
    restore_jwks_egress(netpair.url(), target=netpair.target)
    assert every_rule(netpair) == []


def test_the_dead_man_watchdog_removes_the_redirect_and_the_impostor(netpair, state_dir, tmp_path):
    heartbeat = tmp_path / "heartbeat"
    heartbeat.write_text("")
    code = ("import json, time\n"
            "from chaosext.egress.actions import block_jwks_egress\n"
            f"out = block_jwks_egress({netpair.url()!r}, target={netpair.target!r}, jwks_failure='rotated',"
            f" deadline_seconds=120, verify_timeout_seconds=0.5, heartbeat_file={str(heartbeat)!r},"
            " heartbeat_grace_seconds=4)\n"
            "print(json.dumps(out), flush=True)\n"
            "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)})
    try:
        out = json.loads(parent.stdout.readline())
        run_id = out["run_id"]
        assert impostor.find(run_id) and every_rule(netpair)
        parent.send_signal(signal.SIGKILL)  # the heartbeat is never renewed again
        parent.wait(timeout=10)

        assert wait_for(lambda: every_rule(netpair) == [] and impostor.find(run_id) == [], timeout=20)
        assert "reverted" in (state_dir / f"{run_id}.watchdog.log").read_text()
    finally:
        if parent.poll() is None:
            parent.kill()


def test_restore_all_finds_the_redirect_and_the_impostor_without_any_record(netpair, state_dir):
    out = block_jwks_egress(netpair.url(), target=netpair.target, jwks_failure="empty-keys", deadline_seconds=60,
                            use_watchdog=False, **FAST)
    (state_dir / f"{out['run_id']}.json").unlink()

    cli = subprocess.run([sys.executable, "-m", "chaosext.cli", "restore", "--all", "--target", netpair.target],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)})

    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert every_rule(netpair) == [] and impostor.find(out["run_id"]) == []


def test_dry_run_shows_the_impostor_and_the_redirect_and_changes_nothing(netpair, state_dir):
    out = block_jwks_egress(netpair.url(), target=netpair.target, jwks_failure="http-error", deadline_seconds=60,
                            dry_run=True, **FAST)

    text = "\n".join(out["commands"])
    assert f"-m {impostor.MODULE} --run-id {out['run_id']}" in text and "HTTP 503" in text
    assert "*nat" in text and "-j REDIRECT --to-ports <port>" in text
    assert f"-I OUTPUT 1 -m comment --comment \"chaosext:{out['run_id']}\" -j CHAOSEXT-{out['run_id']}" in text
    assert every_rule(netpair) == [] and impostor.find(out["run_id"]) == []
    assert not state_dir.exists() or not list(state_dir.glob("*.json"))


def test_two_targets_get_one_impostor_listening_in_each(netpair):
    sleeper = netpair.start_in_client("sleep", "60")
    assert wait_for(lambda: os.readlink(f"/proc/{sleeper.pid}/ns/net") != os.readlink("/proc/self/ns/net"), 5)
    # the same namespace named twice (by name and by pid) is one target
    target = f"{netpair.target},pid:{sleeper.pid}"
    out = block_jwks_egress(netpair.url(), target=target, jwks_failure="malformed", deadline_seconds=60, **FAST)

    assert [t["target"] for t in out["verification"]["targets"]] == [netpair.target]
    assert fetch(netpair, netpair.url())[0]["body"] == answer("malformed").text
    restore_jwks_egress(netpair.url(), target=target)
    assert every_rule(netpair) == [] and impostor.find(out["run_id"]) == []


def test_restore_all_leaves_nat_rules_and_chains_that_are_not_exactly_chaosexts(netpair, state_dir):
    """Issue 27 item 9 for the redirect's nat table: a user chain CHAOSEXT-corpfw, a rule commented chaosext:ssh or
    'chaosext:<run id> keep' is somebody else's; restore --all removes the run's nat chain, jump and rules only."""
    def nat() -> list[str]:
        return _sh("ip", "netns", "exec", netpair.client, "iptables", "-w", "5", "-t", "nat", "-S").stdout.splitlines()

    for rule in (["-N", "CHAOSEXT-corpfw"], ["-A", "OUTPUT", "-j", "CHAOSEXT-corpfw"],
                 ["-A", "OUTPUT", "-p", "tcp", "--dport", "22", "-m", "comment", "--comment", "chaosext:ssh",
                  "-j", "RETURN"],
                 ["-A", "OUTPUT", "-p", "tcp", "--dport", "25", "-m", "comment", "--comment", "chaosext:2b3c4d5e keep",
                  "-j", "RETURN"]):
        _sh("ip", "netns", "exec", netpair.client, "iptables", "-w", "5", "-t", "nat", *rule)
    before = nat()
    out = block_jwks_egress(netpair.url(), target=netpair.target, jwks_failure="http-error", deadline_seconds=60,
                            use_watchdog=False, run_id="2b3c4d5e", **FAST)
    assert any(line == "-N CHAOSEXT-2b3c4d5e" for line in nat())

    swept = subprocess.run([sys.executable, "-m", "chaosext.cli", "restore", "--all", "--target", netpair.target],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)})

    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert nat() == before, f"restore --all touched nat rules that are not chaosext's: {set(before) ^ set(nat())}"
    assert impostor.find(out["run_id"]) == []


def test_an_impostor_look_alike_of_another_user_is_never_signalled(attacker):
    """Issue 27 item 10 for the impostor: any user can start a process whose command line is exactly the run's
    impostor's (here: a module of that name in the user's own directory); find, stop and restore --all signal only
    processes of the user chaosext runs as."""
    run_id = "0badc0de"
    pkg = attacker.home / "chaosext" / "egress"
    attacker.run(["mkdir", "-p", str(pkg)])
    for name, text in (("chaosext/__init__.py", ""), ("chaosext/egress/__init__.py", ""),
                       ("chaosext/egress/impostor.py", "import time\ntime.sleep(60)\n")):
        attacker.run(["sh", "-c", f"cat > {attacker.home / name}"], input=text)
    look_alike = attacker.popen(["/usr/bin/python3", "-m", impostor.MODULE, "--run-id", run_id], cwd=attacker.home)
    try:
        assert wait_for(lambda: impostor._is_impostor(_argv(look_alike.pid), run_id), 10), _argv(look_alike.pid)
        assert impostor.find(run_id) == [] and impostor.stop(run_id, timeout=0.5) == []
        assert look_alike.poll() is None, "root signalled another user's process"
    finally:
        look_alike.kill()
        look_alike.wait(10)


def _argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode() for a in fh.read().split(b"\0")[:-1]]
    except OSError:
        return []
