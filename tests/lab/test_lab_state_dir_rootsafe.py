"""Issue 27, item 1: the lab's state directory is root-safe. A local user who can write the lab directory (the default
lived in the working directory, usually a checkout the user owns) could make root truncate any file through a
symlinked ``.lock`` on `lab up|down|status`; the same for the config writers. Now the directory must be root's (or
the user's own, when chaosext runs as that user) all the way up, nothing is followed, and root's default is
root-private."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaosext.core import labstate
from chaosext.lab import promconfig
from tests.conftest import Attacker


def _lab(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chaosext.cli", "lab", *argv], capture_output=True, text=True,
                          timeout=60, check=False, cwd=cwd, env=env)


def test_a_symlinked_lab_lock_never_makes_root_truncate_a_file(attacker: Attacker, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    attacker.sh(f"mkdir .chaosext-lab && ln -s {victim} .chaosext-lab/.lock")
    out = _lab("down", "--state-dir", str(attacker.home / ".chaosext-lab"))
    assert victim.read_text() == "precious\n", "root truncated the file the user's .lock symlink points at"
    assert out.returncode != 0 and f"belongs to uid {attacker.uid}" in out.stderr, out.stderr


def test_a_root_owned_lab_dir_inside_a_users_directory_is_refused(attacker: Attacker) -> None:
    """The user could rename it away and put a symlink in its place between two commands: refused up front."""
    lab = attacker.home / "lab"
    lab.mkdir(mode=0o700)  # root's, but in a directory the user owns
    out = _lab("down", "--state-dir", str(lab))
    assert out.returncode != 0 and f"{attacker.home} belongs to uid {attacker.uid}" in out.stderr, out.stderr


def test_the_prometheus_config_writer_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.yml"
    victim.write_text("precious\n")
    (tmp_path / "prometheus").mkdir(mode=0o700)
    (tmp_path / "prometheus" / "prometheus.yml").symlink_to(victim)
    promconfig.write_yaml(tmp_path / "prometheus" / "prometheus.yml", {"global": {}}, "generated")
    assert victim.read_text() == "precious\n"
    written = tmp_path / "prometheus" / "prometheus.yml"
    assert not written.is_symlink() and "generated" in written.read_text()
    assert (written.stat().st_mode & 0o777) == 0o600


def test_root_keeps_its_lab_state_in_a_root_private_place_and_the_help_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAOSEXT_LAB_DIR", raising=False)
    expected = "/var/lib/chaosext/lab" if os.geteuid() == 0 else str(Path(".chaosext-lab").absolute())
    assert str(labstate.resolve_state_dir()) == expected
    for command in ("up", "down", "status"):
        text = _lab(command, "--help").stdout
        assert "/tmp" not in text, f"`chaosext lab {command} --help` suggests a /tmp state directory"
    assert "/var/lib/chaosext/lab" in _lab("up", "--help").stdout
