"""The lab is one target among many: nothing outside it names the lab's services (issue 23). The extension, the k6
load script, the shipped rules and dashboards and the experiments reach any target's services only through its
description (docs/target.md); the lab's own description is written by the lab (chaosext/lab/target.py)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB_NAMES = re.compile(r"\b(policy|vuln|notify|policies|findings|notifications)\b")
#: words that contain a lab name but are not one (a NetworkPolicy, a "policy" in prose about Kubernetes)
NOT_NAMES = re.compile(r"NetworkPolic|network[_ ]polic|networkpolic|k8s-networkpolicy|policies add up|the policy|"
                       r"Another policy|findings kept|first findings|pre-flight findings|the findings|findings of|"
                       r"Finding|findings\b(?= that| it| a| =|:| \(| list| stop| refuse)", re.I)
SCANNED = ["chaosext", "ops/devops/tenant", "experiments", "deploy"]
#: the lab itself (its code, its deployment on kind) and test data
EXCLUDED = ("chaosext/lab/", "deploy/kind/", "ops/devops/tenant/tests/")


def offending_lines() -> list[str]:
    found = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            rel = path.relative_to(ROOT).as_posix()
            if not path.is_file() or rel.startswith(EXCLUDED) or path.suffix not in (".py", ".js", ".json", ".yaml",
                                                                                      ".yml", ".sh"):
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if LAB_NAMES.search(NOT_NAMES.sub("", line)):
                    found.append(f"{rel}:{n}: {line.strip()[:120]}")
    return found


def test_no_lab_service_name_outside_the_lab() -> None:
    offending = offending_lines()
    assert not offending, "lab service names outside the lab:\n" + "\n".join(offending)


def test_the_scan_finds_a_lab_name(tmp_path: Path) -> None:
    """The check can fail: a line naming a lab service is found, a NetworkPolicy is not."""
    assert LAB_NAMES.search(NOT_NAMES.sub("", 'SERVICES = {"policy": "policies"}'))
    assert not LAB_NAMES.search(NOT_NAMES.sub("", "a NetworkPolicy selects the pods"))
