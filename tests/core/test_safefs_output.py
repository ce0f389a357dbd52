"""An output the operator names (``chaosext report -o``, ``--save-ranges``) is written where they ask, as root too,
even into another user's directory (a CI runner's workspace: the gated job's Report step), yet never through a
symlink or hard link that user planted there; chaosext's own state is still refused in such a directory."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from chaosext.core import safefs

NOBODY = 65534  # another user: no account is needed to own files


@pytest.fixture
def theirs(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root (files of another user)")
    work = tmp_path / "workspace"
    (work / "artefacts").mkdir(parents=True)
    for p in (work, work / "artefacts"):
        os.chown(p, NOBODY, NOBODY)
    return work


def test_an_output_goes_into_another_users_directory_but_never_through_their_links(theirs: Path,
                                                                                   tmp_path: Path) -> None:
    precious = tmp_path / "precious"  # root's file the other user would like root to overwrite
    precious.write_text("root's\n")
    link, hard = theirs / "artefacts" / "ranges.json", theirs / "artefacts" / "report.html"
    link.symlink_to(precious)
    os.lchown(link, NOBODY, NOBODY)
    os.link(precious, hard)  # a hard link: written through by a plain open(..., "w")
    safefs.write_output(link, '{"ranges": 1}')
    safefs.write_output(hard, "<html>")
    assert precious.read_text() == "root's\n"
    assert not link.is_symlink() and link.read_text() == '{"ranges": 1}'
    assert hard.read_text() == "<html>" and os.stat(hard).st_ino != os.stat(precious).st_ino
    assert os.stat(link).st_mode & 0o777 == 0o644  # shared on purpose: a report holds no secret
    # a directory on the way that is their symlink is not followed
    (theirs / "elsewhere").symlink_to(tmp_path)
    os.lchown(theirs / "elsewhere", NOBODY, NOBODY)
    with pytest.raises(safefs.UnsafePath, match="symlink"):
        safefs.write_output(theirs / "elsewhere" / "precious", "x")
    assert precious.read_text() == "root's\n"
    # chaosext's own state is still refused there
    with pytest.raises(safefs.UnsafePath, match="belongs to uid 65534"):
        safefs.write_file(theirs / "artefacts" / "state.json", "{}")
