"""Fixtures for the load tests: the stand-in service as a real process, and a private k6 runs directory."""
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.load.targets import write_target

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "ops" / "devops" / "tenant" / "k6-tenant-load.js"
FAKE = Path(__file__).with_name("fake_service.py")


def start_fake(*args: str) -> tuple[subprocess.Popen, int]:
    """Start fake_service.py on a free loopback port; returns (process, port)."""
    proc = subprocess.Popen([sys.executable, str(FAKE), *args], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        proc.wait(5)
        raise RuntimeError(f"fake service did not start: {line!r}")
    return proc, int(line)


def stop(proc: subprocess.Popen) -> None:
    """Terminate and reap a process the test started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def fake_service() -> Iterator[int]:
    """A stand-in tenant service + Authority (answers 200), yields its port."""
    proc, port = start_fake()
    try:
        yield port
    finally:
        stop(proc)


@pytest.fixture
def k6_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_service: int) -> dict:
    """Point chaosext's k6 runs dir and the experiment configuration (env) at the stand-in service: a target
    description (TARGET_FILE) whose two services, orders and billing, are the stand-in."""
    url = f"http://127.0.0.1:{fake_service}"
    monkeypatch.setenv("CHAOSEXT_K6_DIR", str(tmp_path / "k6"))
    monkeypatch.setenv("CHAOSEXT_LAB_DIR", str(tmp_path / "no-lab"))
    monkeypatch.setenv("TARGET_FILE", str(write_target(tmp_path / "target.yaml", {"orders": url, "billing": url})))
    monkeypatch.setenv("AUTHORITY_URL", url)
    monkeypatch.setenv("TOKEN_CLIENT_ID", "fake-client")  # the stand-in Authority's client (fake_service.py)
    monkeypatch.setenv("TOKEN_CLIENT_SECRET", "fake-secret")
    return {"url": url, "port": fake_service, "runs": tmp_path / "k6"}


@pytest.fixture(autouse=True)
def no_k6_left_behind() -> Iterator[None]:
    """Whatever a test does, no k6 it started outlives it."""
    from chaosext.load import actions

    yield
    for run_id, proc in list(actions._CHILDREN.items()):
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(5)
        actions._CHILDREN.pop(run_id, None)
