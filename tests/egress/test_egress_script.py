"""ops/devops/tenant/jwks-chaos.sh end to end with target ``local``, inside a private ``unshare -rn`` namespace
(loopback only) with the JWKS stand-in on 127.0.0.2; nothing outside that namespace is touched."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ops/devops/tenant/jwks-chaos.sh"
SERVER = Path(__file__).with_name("jwks_server.py")

PRELUDE = f"""
set -u
export CHAOSEXT_STATE_DIR="$STATE"
ip link set lo up
"$PYTHON" {SERVER} 127.0.0.2 > "$STATE.port" &
SRV=$!
trap '{SCRIPT} restore --all >/dev/null 2>&1; kill $SRV' EXIT
for i in $(seq 50); do [ -s "$STATE.port" ] && break; sleep 0.1; done
PORT=$(cat "$STATE.port")
export JWKS_URL="http://127.0.0.2:$PORT/.well-known/jwks.json"
probe() {{ "$PYTHON" -c "from chaosext.egress.probes import jwks_reachable as j; import os
r=j(os.environ['JWKS_URL'], timeout_seconds=0.5); print('PROBE', r['reachable'], r['error'])"; }}
"""


def _lab(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-rn", "bash", "-c", PRELUDE + script], capture_output=True, text=True,
                          timeout=90, cwd=ROOT,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                               "PYTHON": sys.executable, "STATE": str(tmp_path / "faults"), "HOME": str(tmp_path)})


def test_help_lists_the_commands():
    out = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for word in ("block", "restore", "status", "run", "--duration"):
        assert word in out.stdout
    assert subprocess.run([str(SCRIPT), "frobnicate"], capture_output=True, timeout=30).returncode == 2


def test_block_status_restore(tmp_path):
    r = _lab(f"""
probe
{SCRIPT} block --mode reject --duration 60 > /dev/null || echo BLOCK-FAILED
probe
{SCRIPT} status; echo "STATUS-RC $?"
{SCRIPT} restore; echo "RESTORE-RC $?"
{SCRIPT} status; echo "STATUS-RC $?"
probe
{SCRIPT} block --duration 0 2>&1 | tail -1
""", tmp_path)
    lines = r.stdout.splitlines()
    assert [x for x in lines if x.startswith("PROBE")] == ["PROBE True ", "PROBE False refused", "PROBE True "], r
    assert "STATUS-RC 3" in lines and "RESTORE-RC 0" in lines and "STATUS-RC 0" in lines
    assert "BLOCK-FAILED" not in r.stdout
    assert "must be > 0" in r.stdout


def test_timed_run_restores_at_the_end_and_on_sigterm(tmp_path):
    r = _lab(f"""
{SCRIPT} run --mode reject --duration 1 > /dev/null; echo "RUN-RC $?"
probe
{SCRIPT} run --mode reject --duration 60 > "$STATE.run" 2>&1 &
RUN=$!
for i in $(seq 100); do grep -q run_id "$STATE.run" 2>/dev/null && break; sleep 0.1; done
probe
kill -TERM $RUN; wait $RUN; echo "TERM-RC $?"
probe
{SCRIPT} status > /dev/null; echo "STATUS-RC $?"
""", tmp_path)
    lines = r.stdout.splitlines()
    assert "RUN-RC 0" in lines, r
    assert [x for x in lines if x.startswith("PROBE")] == ["PROBE True ", "PROBE False refused", "PROBE True "], r
    assert "TERM-RC 130" in lines and "STATUS-RC 0" in lines
