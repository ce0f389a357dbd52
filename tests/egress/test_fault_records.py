"""Issue 27, item 4: fault records and run ids are validated before root acts on them. A record with
``"run_id": "../x"`` made `chaosext restore` delete a root-owned file; a forged record picked the driver, target and
URLs root acts on; the state directory was 0755 and records 0644; and an unvalidated id reached the
``iptables-restore`` input through ``block_jwks_egress(run_id=...)``."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chaosext.egress.actions import block_jwks_egress, restore_jwks_egress
from chaosext.egress.base import load_records, make_spec, save_record
from tests.conftest import Attacker

URL = "http://10.213.250.2:8440/.well-known/jwks.json"


def _restore(state_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """`chaosext restore ...` as root, in a private network namespace (nothing of this machine's iptables)."""
    return subprocess.run(["unshare", "--net", sys.executable, "-m", "chaosext.cli", "restore", *argv],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "CHAOSEXT_STATE_DIR": str(state_dir)})


def _forged(run_id: str, target: str = "netns:cx-none-27") -> dict[str, object]:
    spec = make_spec(URL, "iptables", target, "drop", 60, run_id="1a2b3c4d").to_dict()
    return {"spec": {**spec, "run_id": run_id}, "recorded_at": 1.0, "status": "active"}


@pytest.mark.e2e
@pytest.mark.netns
def test_a_record_whose_run_id_is_a_path_never_makes_restore_delete_a_file(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    victim = state_dir.parent / "victim.json"
    victim.write_text("precious\n")
    (state_dir / "1a2b3c4d.json").write_text(json.dumps(_forged("../victim")))
    (state_dir / "1a2b3c4d.json").chmod(0o600)
    out = _restore(state_dir, "--target", "netns:cx-none-27")
    assert victim.exists(), f"restore deleted {victim}: {out.stdout}{out.stderr}"
    assert "ignoring fault record" in out.stderr and "not a chaosext run id" in out.stderr, out.stderr
    assert load_records() == []  # the record is never acted on


@pytest.mark.e2e
@pytest.mark.netns
def test_a_record_another_user_wrote_is_never_acted_on(attacker: Attacker) -> None:
    """A state directory the user can write (e.g. CHAOSEXT_STATE_DIR pointing into it) would let it pick driver,
    target and URLs: the directory itself is refused."""
    forged = json.dumps(_forged("1a2b3c4d"))
    attacker.sh(f"mkdir faults && cat > faults/1a2b3c4d.json <<'EOF'\n{forged}\nEOF")
    out = _restore(attacker.home / "faults", "--target", "netns:cx-none-27")
    assert out.returncode == 2 and f"belongs to uid {attacker.uid}" in out.stderr, out.stdout + out.stderr
    assert (attacker.home / "faults" / "1a2b3c4d.json").exists()


def test_the_state_dir_is_0700_and_records_0600(state_dir: Path) -> None:
    old = os.umask(0o022)
    try:
        path = save_record(make_spec(URL, "iptables", "local", "drop", 60, run_id="1a2b3c4d"), status="active")
    finally:
        os.umask(old)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600


@pytest.mark.parametrize("run_id", ["../x", "1a2b3c4d\n-F OUTPUT", "CHAOSEXT", "1A2B3C4D", "1a2b3c4d5"])
def test_a_run_id_that_is_not_one_never_reaches_the_iptables_restore_input(state_dir: Path, run_id: str) -> None:
    with pytest.raises(Exception, match="not a chaosext run id"):
        out = block_jwks_egress(jwks_url=URL, via="iptables", target="local", run_id=run_id, dry_run=True)
        pytest.fail(f"planned with run id {run_id!r}: {out.get('commands')}")  # what would be fed to the kernel
    with pytest.raises(Exception, match="not a chaosext run id"):
        restore_jwks_egress(via="iptables", target="netns:cx-none-27", run_id=run_id)
