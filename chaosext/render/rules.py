"""Render the tenancy recording rules and alerts for a target's metric names, and its ``services.yaml``.

The source is the shipped files themselves (``ops/devops/tenant/recording-rules.yaml`` and ``alerts.yaml``, written
in the lab's names): the rendering rewrites each rule's ``expr`` and its annotations' ``$labels`` in place, line by
line, so comments and layout stay, and a target with the lab's names gets the shipped bytes back. A rule that reads a
series the target does not have (``chaosext.render.mapping``) is left out, with the rules that read its recorded
series, its leading comment and a group left empty; the file's header then says what was left out and why.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from chaosext.core import safefs
from chaosext.core.rulefiles import SERVICES_RULES_FILE, expected_services_rules
from chaosext.render.mapping import LAB, Mapping
from chaosext.render.promql import rename_template_labels, rewrite

__all__ = ["RULE_FILES", "RenderedRules", "source_dir", "prepare", "render_rules", "write_rules"]

#: the shipped rule files, in the order Prometheus should load them
RULE_FILES = ("recording-rules.yaml", "alerts.yaml")
_RULE_START = re.compile(r"^(\s*)- (record|alert):\s*(\S+)\s*$")
_GROUP_START = re.compile(r"^(\s*)- name:\s*(\S+)\s*$")
_EXPR = re.compile(r"^(\s*)expr:\s*(.*)$")


def source_dir() -> Path:
    """``ops/devops/tenant/`` of this checkout: the shipped files the renderer starts from."""
    return Path(__file__).resolve().parents[2] / "ops" / "devops" / "tenant"


@dataclass
class _Rule:
    name: str
    kind: str
    start: int  # first line (its leading comment included)
    end: int  # one past its last line
    expr: str


@dataclass
class RenderedRules:
    """The rendered files (name -> text), the rules left out (name -> why)."""

    files: dict[str, str]
    left_out: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _rules(lines: list[str]) -> list[_Rule]:
    """Every rule of a rule file: its lines (with the comment lines right above it) and its expression text."""
    out = []
    for i, line in enumerate(lines):
        m = _RULE_START.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        end = i + 1
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
            end += 1
        while end > i + 1 and not lines[end - 1].strip():
            end -= 1  # blank lines after a rule belong to what follows
        start = i
        while start > 0 and lines[start - 1].lstrip().startswith("#") and _indent(lines[start - 1]) == indent:
            start -= 1
        doc = yaml.safe_load("\n".join(line[indent + 2:] for line in lines[i:end]))
        out.append(_Rule(m.group(3), m.group(2), start, end, str(doc.get("expr", ""))))
    return out


def _drop_set(sources: dict[str, list[str]], mapping: Mapping) -> dict[str, str]:
    """Rules to leave out (name -> the series it lacks), to a fixpoint: a rule reading a left-out record goes too."""
    rules = [r for lines in sources.values() for r in _rules(lines)]
    left_out: dict[str, str] = {}
    while True:
        more = {}
        for rule in rules:
            if rule.name in left_out:
                continue
            missing = rewrite(rule.expr, mapping.names).missing
            if missing:
                more[rule.name] = ", ".join(f"{m} (left out too)" if m in mapping.records else
                                            f"{m} (no such series in the target's metric contract)"
                                            for m in sorted(missing))
        if not more:
            return left_out
        left_out.update(more)
        mapping.dropped |= {name for name in more if name in mapping.records}


def _rewrite_rule(lines: list[str], mapping: Mapping) -> list[str]:
    """One rule's lines in the target's names: the expression rewritten where it stands; in the annotations the
    ``$labels`` and the request counter's name."""
    out: list[str] = []
    annotations = False
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _EXPR.match(line)
        if m and m.group(2).strip() in ("|", "|-", ">", ">-"):
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > len(m.group(1))):
                j += 1
            out.append(line)
            out.extend(rewrite("\n".join(lines[i + 1:j]), mapping.names).text.split("\n"))
            i = j
            continue
        if m:
            out.append(f"{m.group(1)}expr: {rewrite(m.group(2), mapping.names).text}")
        else:
            annotations = annotations or line.strip() == "annotations:"
            text = rename_template_labels(line, mapping.names) if annotations else line
            if annotations and mapping.contract.requests != LAB.requests:
                text = re.sub(rf"\b{re.escape(LAB.requests)}\b", mapping.contract.requests, text)
            out.append(text)
        i += 1
    return out


def _render_file(lines: list[str], mapping: Mapping, left_out: dict[str, str]) -> list[str]:
    rules = _rules(lines)
    keep = [True] * len(lines)
    replaced: dict[int, list[str]] = {}
    for rule in rules:
        if rule.name in left_out:
            for k in range(rule.start, rule.end):
                keep[k] = False
        else:
            replaced[rule.start] = _rewrite_rule(lines[rule.start:rule.end], mapping)
            for k in range(rule.start + 1, rule.end):
                keep[k] = False
    # a group whose every rule is left out goes, with its header and the comments above it
    groups = [i for i, line in enumerate(lines) if _GROUP_START.match(line)]
    for n, g in enumerate(groups):
        end = groups[n + 1] if n + 1 < len(groups) else len(lines)
        inside = [r for r in rules if g < r.start < end]
        if inside and all(r.name in left_out for r in inside):
            start = g
            while start > 0 and lines[start - 1].lstrip().startswith("#"):
                start -= 1
            for k in range(start, end):
                keep[k] = False
    out: list[str] = []
    for k, line in enumerate(lines):
        if k in replaced and keep[k] is not False:
            out.extend(replaced[k])
        elif keep[k]:
            out.append(line)
    # no run of blank lines where rules went
    tidy: list[str] = []
    for line in out:
        if line.strip() or not tidy or tidy[-1].strip():
            tidy.append(line)
    return tidy


def _header(mapping: Mapping, target: str, left_out: dict[str, str]) -> str:
    c = mapping.contract
    lines = [f"# Rendered by `chaosext render rules` for {target} from the shipped file of the same name (written",
             "# in the lab's names). The target's names: request counter "
             f"{c.requests}{'{' + c.requests_matchers + '}' if c.requests_matchers else ''},",
             f"# labels {c.status_label} (errors: {c.error_status}), {c.service_label}, "
             f"{c.tenant_label or '(no tenant label)'}; latency histogram {c.latency_histogram or '(none)'}.",
             "# Comments below describe the lab's series; the expressions are the target's."]
    for name, why in sorted(left_out.items()):
        lines.append(f"# Left out: {name}: it reads {why}.")
    lines += [f"# Note: {n}" for n in mapping.notes]
    return "\n".join(lines) + "\n"


def _sources(src: Path | None) -> dict[str, list[str]]:
    src = src or source_dir()
    return {name: (src / name).read_text(encoding="utf-8").split("\n") for name in RULE_FILES}


def prepare(mapping: Mapping, src: Path | None = None) -> dict[str, str]:
    """Tell ``mapping`` the shipped recording rules and which of them this target cannot have (the dashboard needs
    both too); returns the rules left out (name -> the series it lacks)."""
    sources = _sources(src)
    mapping.records |= {r.name for lines in sources.values() for r in _rules(lines) if r.kind == "record"}
    return _drop_set(sources, mapping)


def render_rules(mapping: Mapping, target: str = "the target", src: Path | None = None) -> RenderedRules:
    """The recording rules, the alerts and ``services.yaml`` for ``mapping``'s target (file name -> text)."""
    sources = _sources(src)
    left_out = prepare(mapping, src)
    files = {}
    for name, lines in sources.items():
        text = "\n".join(_render_file(lines, mapping, left_out))
        if not mapping.is_lab or left_out:
            text = _header(mapping, target, {k: v for k, v in left_out.items()
                                             if k in {r.name for r in _rules(lines)}}) + text
        files[name] = text
    files[SERVICES_RULES_FILE] = expected_services_rules(mapping.services, mapping.contract.service_label,
                                                         source=target)
    return RenderedRules(files, left_out, list(mapping.notes) if not mapping.is_lab else [])


def write_rules(rendered: RenderedRules, out_dir: Path) -> list[Path]:
    """Write the rendered files into ``out_dir`` (created); their paths. As root too: never through a link planted
    there (``chaosext.core.safefs.write_output``)."""
    written = []
    for name, text in rendered.files.items():
        path = out_dir / name
        safefs.write_output(path, text)
        written.append(path)
    return written
