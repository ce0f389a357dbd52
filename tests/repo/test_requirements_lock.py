"""requirements-lock.txt: what the gated CI job installs (`scripts/setup --locked`, pip --require-hashes) and what
every set-up installs first, so the tests run against exactly the versions the job will run.

Every requirement is pinned (==) with the sha256 of its files; together they cover chaosext's dependencies with the
[lab] and [report] extras (what the job uses: the lab on the runner, the report) and the build backend; the pinned
versions satisfy pyproject.toml; and this test environment holds those very versions. That pip really refuses
anything else is shown by tests/deploy/test_workflow_runs.py, whose offline install gets only the lock's files.
"""
from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements-lock.txt"


def locked() -> dict[str, tuple[str, str, list[str]]]:
    """``{name: (version, marker, [sha256, ...])}`` of every entry whose marker holds on this Python."""
    text = LOCK.read_text().replace("\\\n", " ")
    out: dict[str, tuple[str, str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)\s*(?:;\s*([^-]+?))?\s+(--hash=.*)$", line)
        assert m, f"not pinned with == and hashes: {line[:100]}"
        name, version, marker, hashes = m.groups()
        if marker and not Marker(marker).evaluate():
            continue
        out[canonicalize_name(name)] = (version, marker or "", re.findall(r"--hash=sha256:([0-9a-f]{64})", hashes))
    return out


def test_every_entry_is_pinned_and_hashed() -> None:
    entries = locked()
    assert len(entries) > 40
    for name, (_, _, hashes) in entries.items():
        assert hashes, f"{name} has no sha256"


def test_the_lock_covers_what_the_gated_job_installs_at_versions_pyproject_allows() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["project"]["optional-dependencies"]["lab"],
              *project["project"]["optional-dependencies"]["report"], *project["build-system"]["requires"]]
    entries = locked()
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        assert name in entries, f"{spec} is not in requirements-lock.txt: run scripts/lock"
        assert spec.specifier.contains(entries[name][0], prereleases=True), \
            f"requirements-lock.txt pins {name}=={entries[name][0]}, pyproject.toml wants {spec}"


def test_the_tests_run_against_the_locked_versions() -> None:
    """scripts/setup installs the lock first (hash-checked), then the test tools: a CI that tested other versions
    than the job runs would prove little."""
    for name, (version, _, _) in locked().items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise AssertionError(f"{name} of requirements-lock.txt is not installed: run `bash scripts/setup`") \
                from None
        assert have == version, f"{name} {have} is installed, the lock pins {version}: run `bash scripts/setup`"


def test_setup_installs_the_lock_with_require_hashes_and_the_job_uses_locked() -> None:
    setup = (REPO / "scripts" / "setup").read_text()
    assert '--require-hashes --no-build-isolation -r "$lock"' in setup and "lock=requirements-lock.txt" in setup
    assert '"${pip[@]}" --require-hashes -r "$backend"' in setup
    workflow = (REPO / ".github" / "workflows" / "jwks-outage.yml").read_text()
    installs = re.findall(r"run: (.*scripts/setup.*)", workflow)
    assert installs and all(i.endswith("scripts/setup --locked") for i in installs), installs
