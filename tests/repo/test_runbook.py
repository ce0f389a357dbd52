"""docs/runbook.md is a game day an on-call can follow at 2 am: the sections established practice has (Google's DiRT,
AWS FIS, Gremlin: comms, blast radius, pre-flight, abort by anyone, definition of done, post-mortem), lab commands
that really exercise the stale-key path, and a watch table whose panels and PromQL exist. Its commands are checked
against the CLIs by tests/repo/test_docs.py like every page's."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"
DASHBOARDS = ROOT / "ops" / "devops" / "tenant" / "dashboards"


def text() -> str:
    return RUNBOOK.read_text(encoding="utf-8")


def section(heading: str) -> str:
    """The body under the heading that starts with ``heading``, up to the next level-2 heading (headings inside fenced
    blocks, such as the post-mortem template's, do not count)."""
    out: list[str] = []
    inside = fenced = False
    for line in text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"^#+ ", line):
            if re.match(rf"^#+ {re.escape(heading)}", line):
                inside = True
                continue
            if inside and line.startswith("## "):
                break
        if inside:
            out.append(line)
    assert out, f"docs/runbook.md has no section {heading!r}"
    return "\n".join(out)


def test_the_sections_of_a_game_day() -> None:
    comms = section("Communication plan")
    for message in ("**Announce**", "**Start**", "**Abort**", "**All-clear**"):
        assert message in comms, f"no {message} message"
    for who in ("identity provider (IdP) owners", "security monitoring", "support", "on-call"):
        assert who in comms, f"the plan does not say to tell {who}"
    ladder = section("Blast radius and the environment ladder")
    assert "staging" in ladder and "production" in ladder and "Short before long" in ladder
    assert "synthetic load ≤" in ladder, "how much synthetic load production may take"
    assert "| T0 |" in section("Timeline") and "post-mortem" in section("Timeline")
    preflight = section("Pre-flight checklist")
    assert "**Baseline numbers recorded**" in preflight and "**Key rotation frozen**" in preflight
    during = section("During the run")
    assert "**The abort word is `RED CARD`.** Anyone" in during
    assert "incident commander" in during and "**Cancel workflow**" in during and "always()" in during
    done = section("After the run")
    assert "### Definition of done" in done and done.count("- [ ]") >= 5
    template = re.search(r"### Post-mortem template.*?```markdown\n(.*?)```", done, re.S)
    assert template, "no post-mortem template"
    for part in ("### Hypothesis vs outcome", "### Time to detect", "### Customer impact", "### Actions"):
        assert part in template.group(1), part
    drill = section("Scenario: the expiry drill")
    assert "experiments/jwks-expiry-drill.json" in drill and "auth.expired" in drill


def _lab_block(body: str) -> tuple[int, int, int]:
    """(TTL, max-stale, outage) of the first ``chaosext lab up`` / ``OUTAGE_SECONDS=`` pair in ``body``'s shell
    block; flags not given are the lab's defaults."""
    from chaosext.lab.cli import lab

    defaults = {p.name: p.default for p in lab.commands["up"].params}
    block = re.search(r"```sh\n(.*?)```", body, re.S)
    assert block, "no shell block"
    up = next(line for line in block.group(1).splitlines() if line.startswith("chaosext lab up"))
    ttl = re.search(r"--jwks-ttl (\d+)", up)
    stale = re.search(r"--jwks-max-stale (\d+)", up)
    outage = re.search(r"OUTAGE_SECONDS=(\d+)", block.group(1))
    assert outage, "the block must set OUTAGE_SECONDS"
    return (int(ttl.group(1)) if ttl else int(defaults["jwks_ttl"]),
            int(stale.group(1)) if stale else int(defaults["jwks_max_stale"]), int(outage.group(1)))


def test_the_lab_commands_exercise_stale_keys_and_the_drill_expires_them() -> None:
    """Followed literally, the lab block goes stale (TTL below the outage: auth.degraded) and does not expire
    (max-stale above it); the drill's block expires (max-stale below the outage). With the lab's default TTL (300 s)
    and a 300 s outage, no cache ever went stale and the run proved nothing about stale keys."""
    ttl, max_stale, outage = _lab_block(section("The exact commands"))
    assert ttl * 2 <= outage < max_stale, (ttl, max_stale, outage)
    assert "auth.degraded" in section("The exact commands")
    ttl, max_stale, outage = _lab_block(section("Scenario: the expiry drill"))
    assert ttl < max_stale < outage, (ttl, max_stale, outage)


def _panel_titles() -> set[str]:
    titles: set[str] = set()

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            titles.add(panel.get("title", ""))
            walk(panel.get("panels", []))

    for path in DASHBOARDS.glob("*.json"):
        walk(json.loads(path.read_text())["panels"])
    return titles


def _known_series() -> set[str]:
    rules = yaml.safe_load((ROOT / "ops" / "devops" / "tenant" / "recording-rules.yaml").read_text())
    names = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    metrics = (ROOT / "docs" / "lab-servers.md").read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names |= set(re.findall(r"`([a-z_]+)(?:\{|`)", metrics))
    return names | {"ALERTS"}


PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "increase", "by", "on", "or", "and", "unless", "without",
                "histogram_quantile", "ignoring", "group_left", "group_right"}


def watch_rows() -> list[list[str]]:
    lines = section("During the run").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| watch |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]] for line in table]
    assert rows[0][:3] == ["watch", "dashboard panel", "PromQL without Grafana"], rows[0]
    return rows[2:]


def test_every_watch_row_has_its_dashboard_panel_and_a_promql_fallback(tmp_path: Path) -> None:
    rows = watch_rows()
    assert len(rows) >= 5
    panels = _panel_titles()
    known = _known_series()
    exprs = []
    for watch, panel, promql, *_ in rows:
        named = re.findall(r'"([^"]+)"', panel)
        assert named, f"{watch}: no dashboard panel named"
        for title in named:
            assert title in panels, f"{watch}: the dashboard has no panel {title!r}"
        expr = re.search(r"`([^`]+)`", promql)
        assert expr, f"{watch}: no PromQL fallback"
        query = expr.group(1).replace("\\|", "|")
        exprs.append(query)
        bare = re.sub(r"\b(?:by|on|without)\s*\([^)]*\)", " ", re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", query))
        unknown = {w for w in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare)} - PROMQL_WORDS - known
        assert not unknown, f"{watch}: PromQL names series nothing exports: {unknown}"
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool is not installed: run `bash scripts/setup` (Debian package prometheus)")
    rules = {"groups": [{"name": "runbook", "rules": [{"record": f"runbook:row{i}", "expr": e}
                                                      for i, e in enumerate(exprs)]}]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    check = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True,
                           text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
