"""docs/own-services.md says what the shop target really is and does: the description it shows is the one
target.py writes, and its walkthrough, run command by command on a fresh shop, ends in a passing verdict and leaves
nothing behind.

The walkthrough runs as the page shows it, with only these changes: the clone and set-up lines are left out (this
checkout is set up), ``/tmp/shop`` is this test's directory, the namespace gets a name of its own (tests may run side by
side), the outage is 20 s instead of 60 s and the baseline/recovery timings are CI's (the environment below, which the
page does not set). It runs from a directory of its own that sees the repository's ``tests/`` and ``experiments/``,
so that ``journal.json`` never lands in the checkout.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.experiment.experiment_util import EXPERIMENT_VARS, needs_root_iptables
from tests.targets.nodeapi.conftest import needs_shop_tools
from tests.targets.nodeapi.shoputil import SHOP_ENV
from tests.targets.nodeapi.target import Target, description

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "own-services.md"
#: what the page's walkthrough needs done already here, or cannot do here
NOT_RUN = ("git clone", "bash scripts/setup", ". .venv/bin/activate")


def walkthrough_lines() -> list[str]:
    """The shell lines of the page's "Walkthrough" section, in order."""
    body = PAGE.read_text(encoding="utf-8")
    section = re.search(r"^## Walkthrough$(.*?)(?=^## )", body, re.M | re.S)
    assert section, "docs/own-services.md has no '## Walkthrough' section"
    lines = []
    for block in re.findall(r"^```bash\n(.*?)^```", section.group(1), re.M | re.S):
        lines += [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def test_the_page_shows_the_description_target_py_writes() -> None:
    body = PAGE.read_text(encoding="utf-8")
    shown = [yaml.safe_load(b) for b in re.findall(r"^```yaml\n(.*?)^```", body, re.M | re.S)]
    assert shown, "docs/own-services.md shows no description"
    assert shown[0] == description(Path("/tmp/shop"))


def test_the_walkthrough_starts_describes_runs_and_stops_the_shop() -> None:
    lines = walkthrough_lines()
    assert [line for line in lines if line.startswith(NOT_RUN)] == [
        "git clone <this repository> chaosext && cd chaosext", "bash scripts/setup", ". .venv/bin/activate"]
    joined = "\n".join(lines)
    for step in ("target.py --dir /tmp/shop up", "TARGET_FILE=/tmp/shop/target.json", "chaosext doctor",
                 "chaos run experiments/jwks-outage.json", "chaosext verdict journal.json",
                 "target.py --dir /tmp/shop down"):
        assert step in joined, step


@pytest.mark.e2e
@pytest.mark.netns
@pytest.mark.slow
def test_walkthrough_on_a_fresh_shop_ends_in_a_pass(tmp_path: Path) -> None:
    needs_shop_tools()
    needs_root_iptables()
    home, work = tmp_path / "shop", tmp_path / "work"
    work.mkdir()
    for name in ("tests", "experiments"):
        (work / name).symlink_to(ROOT / name)
    name = f"shopdoc{secrets.token_hex(3)}"
    script = ["set -euo pipefail"]
    for line in walkthrough_lines():
        if line.startswith(NOT_RUN):
            continue
        line = line.replace("/tmp/shop", str(home)).replace("ip netns exec shop ", f"ip netns exec {name} ")
        line = line.replace(" up", f" up --name {name}") if line.rstrip().endswith(" up") else line
        script.append(line.replace("OUTAGE_SECONDS=60", f"OUTAGE_SECONDS={SHOP_ENV['OUTAGE_SECONDS']}"))
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in EXPERIMENT_VARS and k != "TOKEN_CLIENTS"}
    env.update({k: v for k, v in SHOP_ENV.items() if k != "OUTAGE_SECONDS"})
    env["PATH"] = f"{bindir}:{env.get('PATH', '')}"
    try:
        proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
    finally:
        left = Target.load(home).down() if (home / "state.json").exists() else []
    shown = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, shown
    assert "VERDICT: PASS" in proc.stdout, shown
    assert json.loads((work / "journal.json").read_text())["status"] == "completed"
    assert not (home / "state.json").exists() and not left, "the walkthrough's own `down` did not stop everything"
    assert not Path(f"/run/netns/{name}").exists() and not Path(f"/run/netns/{name}-idp").exists()
