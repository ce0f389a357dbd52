"""The shop target (target.py) for the tests of this folder: started once per test session (per xdist worker) in
namespaces of its own, healthy; a test that needs a planted variant restarts a service with its switch through
``shop_variant`` and gets the healthy one back afterwards. Teardown stops everything and checks that no namespace is
left."""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.targets.nodeapi.shoputil import InNetns
from tests.targets.nodeapi.target import SERVICES, Target, TargetError, node_binary


def needs_shop_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if not shutil.which("node"):
        # in CI a missing Node.js is a missing install step (scripts/setup), not a reason to pass without the target
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "needs Node.js 20.19 or later (the target's services): install it, then bash scripts/setup")
    try:
        node_binary()
    except TargetError as exc:  # node is there but too old, or scripts/setup did not install the packages
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The running shop target (healthy). Do not stop it; restart a service only through ``shop_variant``."""
    needs_shop_tools()
    target = Target(tmp_path_factory.mktemp("shop")).up()
    try:
        yield target
    finally:
        left = target.down()
        assert not Path(f"/run/netns/{target.name}").exists()
        assert not Path(f"/run/netns/{target.idp_netns}").exists()
        assert not left, f"processes left in the shop's namespaces: {left}"


@pytest.fixture(scope="session")
def shop_ns(shop: Target) -> Iterator[InNetns]:
    """Calls from inside the shop's apps namespace."""
    client = InNetns(shop.name)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def shop_variant(shop: Target) -> Iterator[Callable[..., Target]]:
    """``switch(orders=["--fail-open"], billing=[...])``: restart those services with these switches (counters
    reset); every service touched is restarted healthy after the test."""
    touched: set[str] = set()

    def switch(**flags: list[str]) -> Target:
        for name, service_flags in flags.items():
            touched.add(name)
            shop.restart(name, service_flags)
        return shop

    yield switch
    for name in sorted(touched & set(SERVICES)):
        with contextlib.suppress(TargetError):
            shop.restart(name, [])
