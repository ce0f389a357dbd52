"""The heartbeat file: renewed while its process lives, ages once the process is gone."""
from __future__ import annotations

import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chaosext.run.heartbeat import Heartbeat, age


def test_beats_keep_the_file_young_and_stop_lets_it_age(tmp_path: Path) -> None:
    path = tmp_path / "run" / "heartbeat"
    assert age(str(path)) is None
    hb = Heartbeat(str(path), interval=0.2).start()
    try:
        assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
        time.sleep(1.5)
        assert hb.running and age(str(path)) < 1.0
    finally:
        hb.stop()
    assert not hb.running
    time.sleep(1.2)
    assert age(str(path)) >= 1.0
    hb.stop(remove=True)
    assert age(str(path)) is None


def test_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="seconds > 0"):
        Heartbeat("/nonexistent", interval=0)


def test_the_beats_stop_when_the_process_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    code = textwrap.dedent(f"""
        import time
        from chaosext.run.heartbeat import Heartbeat
        Heartbeat({str(path)!r}, interval=0.2).start()
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        end = time.monotonic() + 30
        while age(str(path)) is None:
            assert time.monotonic() < end
            time.sleep(0.05)
        time.sleep(1.0)
        assert age(str(path)) < 1.0, "a live process keeps beating"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    time.sleep(1.5)
    assert age(str(path)) >= 1.2
