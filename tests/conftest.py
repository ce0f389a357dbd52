"""Fixtures shared by every test folder, and the rule that keeps ``pytest -m "not e2e"`` fast.

Labs: ``lab`` (one lab for the session, default settings, free ports: do not stop or break it),
``lab_factory`` (``make(**overrides) -> state``: a lab of your own, stopped after the test; tests/experiment overrides
it with one that starts the lab in the test's network namespace), ``ns_lab`` (a lab inside ``module_netns``, a network
namespace the module creates). See ``chaosext.lab.testing.running_lab``.

Markers (registered in pyproject.toml, strict): a test that starts a lab, k6, Envoy, Prometheus/Alertmanager,
Chromium, a network namespace or Chaos Toolkit itself (``chaos run``/``chaos discover``) is marked ``e2e`` (besides
``lab``/``netns``/``slow`` where they apply), so that ``pytest -m "not e2e"`` is the quick developer run. A test that
uses one of :data:`E2E_FIXTURES`, or is marked ``lab``/``netns``/``slow``, without ``e2e`` fails at once, before any
of its fixtures starts anything.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chaosext.lab.testing import running_lab
from tests.jsonstub import Handler, JsonStub
from tests.nsutil import NsPair, fresh_netns, netns_pair

#: markers that imply ``e2e`` (what they mark starts processes or namespaces)
E2E_MARKERS = ("lab", "netns", "slow")
#: fixtures that start a lab (or a lab component), k6, Envoy, Prometheus, or create a network namespace
E2E_FIXTURES = frozenset({
    "lab", "lab_factory", "module_netns", "ns_lab", "ns_pair",  # this file
    "lab_journal",  # tests/report
    "netns", "experiment",  # tests/experiment (netns also tests/lab/test_lab_cli.py)
    "netpair", "envoy", "k6_dir", "four", "sized", "big", "pods", "twenty",  # tests/egress
    "k6_env",  # tests/load
    "lab_processes", "own_lab", "authority",  # tests/lab
    "scraped",  # tests/metrics/test_metric_contract.py
    "proxies",  # tests/core/test_backends_authenticated.py
    "shop", "shop_ns", "shop_variant", "shop_runner",  # tests/targets/nodeapi (the second target)
})


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail (before its fixtures start anything) a test that starts processes or namespaces without the e2e marker."""
    if item.get_closest_marker("e2e"):
        return
    why = [f"marker {m}" for m in E2E_MARKERS if item.get_closest_marker(m)]
    params = set(getattr(getattr(item, "callspec", None), "params", {}))  # parametrize arguments are no fixtures
    why += [f"fixture {f}" for f in sorted(E2E_FIXTURES & set(getattr(item, "fixturenames", ())) - params)]
    if why:
        pytest.fail(f"{item.nodeid} uses {', '.join(why)} but is not marked e2e: add @pytest.mark.e2e (or e2e in "
                    f"the module's pytestmark) so that `pytest -m \"not e2e\"` stays quick", pytrace=False)


# ------------------------------------------------------------------------------------------------ labs on loopback
@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One lab for the whole session (per xdist worker; default settings, free ports): its state dict. Do not stop or
    break it."""
    with running_lab(tmp_path_factory.mktemp("lab")) as state:
        yield state


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[Callable[..., dict[str, Any]]]:
    """``make(**overrides) -> state``: a lab of your own with special flags (e.g. ``jwks_ttl=2``), stopped after."""
    with contextlib.ExitStack() as stack:
        count = 0

        def make(**overrides: Any) -> dict[str, Any]:
            nonlocal count
            count += 1
            return stack.enter_context(running_lab(tmp_path / f"lab{count}", **overrides))

        yield make


# ------------------------------------------------------------------------------------- a lab in a network namespace
@pytest.fixture(scope="module")
def module_netns() -> Iterator[str]:
    """A fresh network namespace for the module, loopback up; deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    with fresh_netns("cxops", loopback=True) as name:
        yield name
    assert not Path(f"/run/netns/{name}").exists()


@pytest.fixture
def ns_pair() -> Iterator[NsPair]:
    """Two fresh namespaces joined by a veth (tests/nsutil.py ``netns_pair``); deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    with netns_pair() as p:
        yield p


@pytest.fixture(scope="module")
def ns_lab(module_netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A lab (short JWKS TTL, long max-stale: the services serve stale keys through an outage) in ``module_netns``."""
    with running_lab(tmp_path_factory.mktemp("nslab"), exec_prefix=["ip", "netns", "exec", module_netns],
                     jwks_ttl=2, jwks_max_stale=120) as state:
        yield state


# ------------------------------------------------------------------------------------------------------ small
@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def stub() -> Iterator[Callable[[Handler], JsonStub]]:
    """``stub(handler) -> JsonStub`` (tests/jsonstub.py: a loopback HTTP server answering canned JSON); every stub is
    stopped after the test, and an assertion that failed inside a handler fails the test."""
    with contextlib.ExitStack() as stack:
        yield lambda handler: stack.enter_context(JsonStub(handler))


# ------------------------------------------------------------------------------------- a local attacker (issue 27)
@dataclass
class Attacker:
    """A throwaway unprivileged user and a directory it owns (like a checkout of its own, in /tmp: the test's own
    tmp_path is root's 0700 directory, which the user cannot even enter)."""

    name: str
    uid: int
    gid: int
    home: Path

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` run as this user (``setpriv``: its uid and gid, no supplementary groups)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--", *argv]

    def run(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as this user; fails the test when it fails."""
        return subprocess.run(self.argv(argv), check=True, capture_output=True, text=True, timeout=60, **kw)

    def sh(self, script: str) -> subprocess.CompletedProcess[str]:
        """A shell script run as this user, in its directory."""
        return self.run(["sh", "-c", script], cwd=self.home)

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    """A throwaway unprivileged user (``useradd`` here, ``userdel`` after, with every process it still runs killed by
    pid) and a 0755 directory of its own under /tmp, removed after."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a throwaway user")
    name = f"cxatk{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
                   check=True, capture_output=True, timeout=30)
    entry = pwd.getpwnam(name)
    home = Path(f"/tmp/{name}")
    try:
        home.mkdir(mode=0o755)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield Attacker(name, entry.pw_uid, entry.pw_gid, home)
    finally:
        for proc in Path("/proc").iterdir():  # every process the user still runs, by pid
            with contextlib.suppress(OSError, ValueError):
                if proc.name.isdigit() and proc.stat().st_uid == entry.pw_uid:
                    os.kill(int(proc.name), signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=30)
        subprocess.run(["groupdel", name], check=False, capture_output=True, timeout=30)
