"""scripts/setup on the distribution's own interpreter: a copy of this checkout is set up with PATH reduced to
/usr/sbin:/usr/bin:/sbin:/bin (so `python3` is Debian's, marked externally managed by PEP 668, with no pip of its
own), and then chaosext, Chaos Toolkit's discovery and a small lab work from the .venv it made. The copy is a scratch
clone (this checkout's tracked files, committed in a fresh repository): after it was used, the footprint page's
"Remove everything" must leave `git status --ignored` empty."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from chaosext import __version__
from chaosext.lab import supervisor
from chaosext.lab.testing import lab_up_argv
from tests.experiment.experiment_util import ns_pids

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.lab]

REPO = Path(__file__).resolve().parents[2]
DISTRO_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
DISTRO_PYTHON = "/usr/bin/python3"
FOOTPRINT = REPO / "docs" / "footprint.md"


def distro_env() -> dict[str, str]:
    """This environment with PATH cut to the distribution's directories and nothing pointing at another Python."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONNOUSERSITE") and not k.startswith("PYENV")}
    env["PATH"] = DISTRO_PATH
    return env


def run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=distro_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def importable_by_distro_python(module: str, cwd: Path) -> bool:
    return run([DISTRO_PYTHON, "-c", f"import {module}"], cwd).returncode == 0


def scratch_clone(dest: Path) -> Path:
    """This checkout's tracked files (their working-tree content) committed in a fresh repository at ``dest``."""
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True,
                             timeout=60).stdout.decode().split("\0")
    for rel in filter(None, tracked):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel, follow_symlinks=False)
    git = ["git", "-C", str(dest), "-c", "user.name=test", "-c", "user.email=test@localhost"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "scratch clone"]):
        subprocess.run(git + argv, check=True, capture_output=True, timeout=60)
    return dest


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch clone; the first test sets it up, the last one removes what the footprint page says."""
    if not Path(DISTRO_PYTHON).exists() and os.geteuid() != 0:
        pytest.skip(f"{DISTRO_PYTHON} missing and not root: scripts/setup could not install it")
    return scratch_clone(tmp_path_factory.mktemp("clone") / "checkout")


def test_setup_on_the_distribution_python_then_cli_discovery_and_a_lab(checkout: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    chaosext_in_system_before = Path(DISTRO_PYTHON).exists() and importable_by_distro_python("chaosext", work)

    started = time.monotonic()
    setup = run(["bash", "scripts/setup"], checkout)
    took = time.monotonic() - started
    print(f"scripts/setup with PATH={DISTRO_PATH}: exit {setup.returncode} in {took:.0f} s")
    assert setup.returncode == 0, setup.stdout + setup.stderr[-4000:]

    # the interpreter it had to work with really was the externally managed one
    marker = run([DISTRO_PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"], work)
    assert (Path(marker.stdout.strip()) / "EXTERNALLY-MANAGED").exists(), \
        f"{DISTRO_PYTHON} is not marked externally managed here: this test would prove nothing about PEP 668"
    venv = checkout / ".venv"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg, cfg
    # nothing went into the distribution's site-packages
    if not chaosext_in_system_before:
        assert not importable_by_distro_python("chaosext", work)

    # the venv is private: third-party packages ship example tokens (PyJWT's README in its METADATA)
    readable = [os.path.join(d, n) for d, dirs, files in os.walk(venv) for n in dirs + files
                if os.lstat(os.path.join(d, n)).st_mode & 0o077 and not os.path.islink(os.path.join(d, n))]
    assert not readable, f"{len(readable)} paths in .venv readable by others, e.g. {readable[:3]}"

    bin_ = venv / "bin"
    version = run([str(bin_ / "chaosext"), "--version"], work)
    assert version.returncode == 0 and __version__ in version.stdout, version.stdout + version.stderr
    # the venv's chaosext is the copy's code, not this test's tree
    where = run([str(bin_ / "python"), "-c", "import chaosext; print(chaosext.__file__)"], work)
    assert where.stdout.strip() == str(checkout / "chaosext" / "__init__.py"), where.stdout + where.stderr
    for tool in ("chaos", "k6", "actionlint", "pytest"):
        assert (bin_ / tool).exists(), f".venv/bin/{tool} missing after scripts/setup"

    discover = run([str(bin_ / "chaos"), "discover", "--no-install", "--discovery-path", str(work / "d.json"),
                    "chaosext"], work, timeout=180)
    assert discover.returncode == 0, discover.stdout + discover.stderr
    activities = json.loads((work / "d.json").read_text())["activities"]
    names = {a["name"] for a in activities}
    assert {"block_jwks_egress", "restore_jwks_egress"} <= names, sorted(names)

    # the README's test command runs from the venv too (a fast subset: the docs' commands checked against the CLIs)
    tests = run(["scripts/test", "tests/repo/test_docs.py", "-q", "-p", "no:cacheprovider", "-k",
                 "command_shown or configuration_key"], checkout, timeout=300)
    assert tests.returncode == 0 and " passed" in tests.stdout, tests.stdout[-3000:] + tests.stderr[-2000:]

    # a small lab from the venv: up (no Prometheus, free ports), one authenticated request, down
    state_dir = work / "lab"
    argv = lab_up_argv(state_dir, no_prometheus=True, services="policy")
    assert argv[1:4] == ["-m", "chaosext.lab.cli", "up"]
    try:
        up = run([str(bin_ / "chaosext"), "lab", *argv[3:]], work, timeout=120)
        assert up.returncode == 0, up.stderr
        state = json.loads(up.stdout)
        token = requests.post(state["token_url"], timeout=10, auth=(state["client_id"], state["client_secret"]),
                              data={"grant_type": "client_credentials", "tenant": "t01", "scope": "policy:read",
                                    "ttl": "60"})
        assert token.status_code == 200, token.text
        url = state["service_urls"]["policy"] + "/api/v1/policies"
        headers = {state["tenant_header"]: "t01"}
        ok = requests.get(url, headers={**headers, "Authorization": f"Bearer {token.json()['access_token']}"},
                          timeout=10)
        assert ok.status_code == 200, ok.text
        assert requests.get(url, headers=headers, timeout=10).status_code == 401
        down = run([str(bin_ / "chaosext"), "lab", "down", "--state-dir", str(state_dir)], work, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
    finally:
        left = supervisor.down(state_dir, grace=5.0)["left"]
        assert not left, f"lab processes left: {left}"

    # idempotent: a second run reuses the venv (same interpreter file) and succeeds
    python_inode = (bin_ / "python").lstat().st_ino
    again = run(["bash", "scripts/setup"], checkout)
    assert again.returncode == 0, again.stdout + again.stderr[-4000:]
    assert (bin_ / "python").lstat().st_ino == python_inode, "scripts/setup remade a working .venv"
    print(f"python used by this test run: {sys.executable}")


def removal_lines() -> list[str]:
    """The shell lines of docs/footprint.md's "Remove everything" block that need no placeholder."""
    body = FOOTPRINT.read_text().split("## Remove everything", 1)[1]
    block = re.search(r"```bash\n(.*?)```", body, re.S).group(1).replace("\\\n", " ")
    return [line for line in block.splitlines() if line.strip() and "<" not in line]


def test_the_footprint_pages_remove_everything_leaves_the_clone_clean(checkout: Path, tmp_path: Path) -> None:
    """After set-up (the test above), a lab, a report, a discovery and a benchmark result, the documented removal
    deletes no tracked file and leaves nothing untracked or ignored in the clone, and nothing in HOME. Before, it
    deleted the committed bench-results/bench.json and left chaosext.egg-info, the bytecode caches and matplotlib's
    ~/.cache/matplotlib and ~/.config/matplotlib."""
    if not (checkout / ".venv" / "bin" / "chaosext").exists():
        pytest.skip("the set-up test above did not run")
    home = tmp_path / "home"
    home.mkdir()
    env = {**distro_env(), "HOME": str(home), "PATH": f"{checkout / '.venv' / 'bin'}:{DISTRO_PATH}"}
    for var in ("CHAOSEXT_STATE_DIR", "CHAOSEXT_RUN_DIR", "CHAOSEXT_LAB_DIR", "CHAOSEXT_K6_DIR", "MPLCONFIGDIR",
                "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "PYTHONDONTWRITEBYTECODE"):  # bytecode caches are made, as usual
        env.pop(var, None)
    if os.geteuid() == 0:  # root's defaults are under /var/lib/chaosext (the machine's): a user's, in the clone/HOME
        env.update(CHAOSEXT_LAB_DIR=".chaosext-lab", CHAOSEXT_RUN_DIR=".chaosext-run",
                   CHAOSEXT_STATE_DIR=str(home / ".chaosext"))
    ns = f"cxfp{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=20)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, capture_output=True, timeout=20)

        def sh(script: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
            """A shell line in the clone, as its user would type it (in a namespace of this test's own)."""
            return subprocess.run(["ip", "netns", "exec", ns, "bash", "-eo", "pipefail", "-c", script], cwd=checkout,
                                  env=env, capture_output=True, text=True, timeout=timeout, check=False)

        # use it: the lab in its default state dir, a run's journal and report, a discovery, a benchmark result
        for line in ("chaosext lab up --no-prometheus --services policy",
                     "chaos discover --no-install chaosext",
                     "chaosext lab down",
                     "echo '{\"experiment\": {\"title\": \"t\"}, \"run\": [], \"status\": \"completed\"}' "
                     "> journal.json",
                     "chaosext report journal.json -o report.html",
                     "echo '{\"rewritten\": true}' > bench-results/bench.json"):
            used = sh(line)
            assert used.returncode == 0, f"{line}: {used.stdout[-1500:]}{used.stderr[-1500:]}"
        before = sh("git status --porcelain --ignored").stdout
        for made in (".venv/", ".chaosext-lab/", "report.html", "discovery.json", " M bench-results/bench.json"):
            assert made in before, f"{made} was not made, the test proves nothing about removing it:\n{before}"

        for line in removal_lines():
            removed = sh(line)
            assert removed.returncode == 0, f"{line}: {removed.stdout[-1500:]}{removed.stderr[-1500:]}"
        status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=checkout, capture_output=True,
                                text=True, timeout=60, check=True).stdout
        assert status == "", f"after the documented removal, git status --ignored shows:\n{status}"
        left = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
        assert left == [], f"left in HOME: {left}"
    finally:
        for pid in ns_pids(ns):  # a lab the test could not stop
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=20)
