"""Issue 27, item 5: one URL parser decides and sends, and the lab is recognised by identity.

In two private network namespaces: "near" (where chaosext runs) and "far" (10.214.x.2, a host off loopback with an
Envoy admin API that must never receive the fault). ``http://<far>:<port>\\@127.0.0.1:<port>`` was read as loopback
(``urlparse``) by the approval gate but sent to the far host by urllib3, so an unapproved Envoy admin received the
fault. And ``FAULT_TARGET=local`` counted as the lab in any network namespace, because the lab's URLs are loopback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chaosext.core.config import load_config
from chaosext.safety.controls import approval_problem
from tests.labfake import write_running_lab
from tests.nsutil import NsPair

pytestmark = [pytest.mark.e2e, pytest.mark.netns]
RECORDER = Path(__file__).resolve().parents[1] / "httprecorder.py"

IN_NEAR = textwrap.dedent("""
    import json, sys
    from chaosext.core.config import load_config
    from chaosext.safety.controls import approval_problem
    conf = json.loads(sys.argv[1])
    out = {"approval": approval_problem(load_config(conf))}
    if sys.argv[2] == "block":
        from chaosext.egress.actions import block_jwks_egress
        try:
            block_jwks_egress(jwks_url="http://127.0.0.2:8440/.well-known/jwks.json", via="envoy",
                              target=conf["fault_target"], deadline_seconds=60, use_watchdog=False, verify=False,
                              run_id="1a2b3c4d")
            out["block"] = "applied"
        except Exception as exc:
            out["block"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))
""")


def _near(pair: NsPair, conf: dict[str, str], what: str, tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "CHAOSEXT_STATE_DIR": str(tmp_path / "faults")}
    out = subprocess.run(["ip", "netns", "exec", pair.near, sys.executable, "-c", IN_NEAR, json.dumps(conf), what],
                         capture_output=True, text=True, timeout=120, check=False, env=env)
    assert out.returncode == 0, out.stderr
    result: dict[str, str] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_a_backslash_url_never_takes_the_fault_to_an_unapproved_host_off_loopback(ns_pair: NsPair,
                                                                                 tmp_path: Path) -> None:
    recorder = subprocess.Popen(["ip", "netns", "exec", ns_pair.far, sys.executable, str(RECORDER), ns_pair.far_ip],
                                stdout=subprocess.PIPE, text=True)
    try:
        port = int(recorder.stdout.readline()) if recorder.stdout else 0
        target = f"http://{ns_pair.far_ip}:{port}\\@127.0.0.1:{port}"
        out = _near(ns_pair, {"fault_via": "envoy", "fault_target": target,
                              "chaosext_lab_dir": str(tmp_path / "no-lab")}, "block", tmp_path)
    finally:
        recorder.kill()
        received = recorder.communicate(timeout=10)[0].strip()  # (its port line was read above)
    assert not received, f"the Envoy admin off loopback received: {received!r}"
    assert out["approval"], "the gate took a URL that goes to another host for the local lab"
    assert out["block"].startswith("FaultError") and "backslash" in out["block"], out["block"]


def test_fault_target_local_in_another_network_namespace_needs_approval(ns_pair: NsPair, tmp_path: Path) -> None:
    """The lab (its state file, written from this namespace) is the lab only in its own namespace: in another
    team's namespace the same loopback URLs are other servers."""
    write_running_lab(tmp_path / "lab")
    conf = {"chaosext_lab_dir": str(tmp_path / "lab")}
    assert approval_problem(load_config(conf)) == ""  # here, in the lab's namespace: the lab
    elsewhere = _near(ns_pair, conf, "approval", tmp_path)["approval"]
    assert "CHAOSEXT_APPROVE=" in elsewhere, "FAULT_TARGET=local in another namespace was taken for the lab"
