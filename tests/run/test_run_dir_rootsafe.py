"""Issue 27, item 2 (and issue 22 item 7): the run base, the run directory, the run file and the heartbeat are
root-safe. The run base used to be reused without an owner check and the heartbeat re-opened by path every 2 s with
O_CREAT and fchmod 0600: swapping the run directory for a symlink made root chmod files of the user's choosing and
handed the user the dead-man switch. Run directories are 0700 and their files 0600, as the footprint page says."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from chaosext.run import heartbeat, record
from tests.conftest import Attacker

RUN_ID = "1a2b3c4d"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _victim_dir(tmp_path: Path) -> Path:
    """A directory with root's files named like a run's (what a swapped symlink would point at)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ("heartbeat", "run.json"):
        (victim / name).write_text("precious\n")
        (victim / name).chmod(0o644)
        os.utime(victim / name, (1_000_000_000, 1_000_000_000))
    return victim


def test_a_run_base_the_user_owns_is_refused_and_its_heartbeat_is_never_trusted(attacker: Attacker,
                                                                               tmp_path: Path) -> None:
    victim = _victim_dir(tmp_path)
    base = attacker.home / ".chaosext-run"
    attacker.sh("mkdir .chaosext-run")
    refused = None
    try:
        record.new_run(str(base), RUN_ID)
        pulse = heartbeat.Heartbeat(str(base / RUN_ID / "heartbeat")).start()
    except PermissionError as exc:
        refused = exc
    else:  # what the user can do next in a directory of its own: swap the run directory for a symlink
        attacker.sh(f"mv .chaosext-run/{RUN_ID} .chaosext-run/old && ln -s {victim} .chaosext-run/{RUN_ID}")
        pulse.beat()
        record.save_run(str(base / RUN_ID), record.Run(run_id=RUN_ID))
        pulse.stop()
    assert _mode(victim / "heartbeat") == 0o644, "root chmod-ed a file through the swapped run directory"
    assert (victim / "run.json").read_text() == "precious\n", "root wrote the run file through the symlink"
    assert refused is not None and f"belongs to uid {attacker.uid}" in str(refused)
    # a heartbeat the user can touch is not a pulse: the dead-man switch never takes the user's word
    attacker.sh(f"mkdir -p .chaosext-run/{RUN_ID} && touch .chaosext-run/{RUN_ID}/heartbeat")
    assert heartbeat.age(str(base / RUN_ID / "heartbeat")) is None


def test_the_heartbeat_never_follows_a_run_directory_swapped_after_it_started(tmp_path: Path) -> None:
    victim = _victim_dir(tmp_path)
    base = tmp_path / "run"
    record.new_run(str(base), RUN_ID)
    pulse = heartbeat.Heartbeat(str(base / RUN_ID / "heartbeat")).start()
    try:
        (base / RUN_ID).rename(base / "moved")
        (base / RUN_ID).symlink_to(victim)
        pulse.beat()
    finally:
        pulse.stop()
    assert _mode(victim / "heartbeat") == 0o644
    assert os.stat(victim / "heartbeat").st_mtime == 1_000_000_000, "the beat went to the file the symlink names"
    assert os.stat(base / "moved" / "heartbeat").st_mtime > 1_000_000_000  # it went to its own file


def test_run_directories_are_0700_and_their_files_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a permissive umask must not widen anything
    try:
        base = tmp_path / "base" / "run"
        record.new_run(str(base), RUN_ID)
        pulse = heartbeat.Heartbeat(str(base / RUN_ID / "heartbeat")).start()
        pulse.stop()
    finally:
        os.umask(old)
    for d in (tmp_path / "base", base, base / RUN_ID):
        assert _mode(d) == 0o700, f"{d} is {_mode(d):o}"
    for f in (base / RUN_ID / "run.json", base / RUN_ID / "heartbeat"):
        assert _mode(f) == 0o600, f"{f} is {_mode(f):o}"


def test_a_run_id_never_becomes_a_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a chaosext run id"):
        record.new_run(str(tmp_path / "run"), "../x")
    assert not (tmp_path / "x").exists()
