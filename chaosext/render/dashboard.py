"""Render the tenancy dashboard (``ops/devops/tenant/dashboards/tenant-audit.json``) for a target's metric names.

Every panel query, the template variables' ``label_values`` queries and the legends are rewritten through the same
mapping as the rules (``chaosext.render.mapping``); a query that reads a series the target does not have is left out,
and so is a panel left without a query and a row left without a panel. The dashboard's description then says what
was left out. With the lab's names the shipped JSON comes back byte for byte.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from chaosext.render.mapping import Mapping
from chaosext.render.promql import rewrite
from chaosext.render.rules import prepare, source_dir

__all__ = ["DASHBOARD_FILE", "render_dashboard", "dashboard_text"]

DASHBOARD_FILE = "tenant-audit.json"
_LABEL_VALUES = re.compile(r"^label_values\((?P<series>.+),\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\)$", re.DOTALL)


def _legend(text: str, mapping: Mapping) -> str:
    def one(m: re.Match[str]) -> str:
        label = mapping.names.label(m.group(1))
        return "" if label is None else "{{" + label + "}}"

    return re.sub(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s?", lambda m: one(m) + (" " if one(m) and
                                                                                    m.group(0).endswith(" ") else ""),
                  text)


def _variable_query(query: str, mapping: Mapping) -> str | None:
    """A ``label_values(series, label)`` query in the target's names (None: the target has not that label/series)."""
    m = _LABEL_VALUES.match(query.strip())
    if not m:
        done = rewrite(query, mapping.names)
        return None if done.missing else done.text
    label = mapping.names.label(m.group("label"))
    series = rewrite(m.group("series"), mapping.names)
    if label is None or series.missing:
        return None
    if label == m.group("label") and series.text == m.group("series"):
        return query
    return f"label_values({series.text}, {label})"


def render_dashboard(mapping: Mapping, src: Path | None = None) -> tuple[dict[str, Any], list[str]]:
    """(the dashboard for ``mapping``'s target, what was left out)."""
    path = (src or source_dir()) / "dashboards" / DASHBOARD_FILE
    prepare(mapping, src)  # the recorded series there are, and those this target cannot have
    dash = copy.deepcopy(json.loads(path.read_text(encoding="utf-8")))
    left_out: list[str] = []
    variables = []
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var.get("query"), dict) else var.get("query", "")
            done = _variable_query(str(query), mapping)
            if done is None:
                left_out.append(f"variable ${var['name']}")
                continue
            if isinstance(var.get("query"), dict):
                var["query"]["query"] = done
            else:
                var["query"] = done
            if "definition" in var:
                var["definition"] = done
        variables.append(var)
    if "templating" in dash:
        dash["templating"]["list"] = variables
    panels = []
    for panel in dash.get("panels", []):
        targets = []
        for target in panel.get("targets", []):
            query = rewrite(target.get("expr", ""), mapping.names)
            if query.missing:
                left_out.append(f"{panel.get('title')!r}: {target.get('expr', '')[:60]}… "
                                f"(reads {', '.join(sorted(query.missing))})")
                continue
            target["expr"] = query.text
            if "legendFormat" in target:
                target["legendFormat"] = _legend(target["legendFormat"], mapping)
            targets.append(target)
        if panel.get("type") != "row" and not targets:
            continue
        panel["targets"] = targets if "targets" in panel else panel.get("targets")
        if "targets" in panel and panel["targets"] is None:
            del panel["targets"]
        panels.append(panel)
    # a row with no panel after it (before the next row) goes
    kept = [p for i, p in enumerate(panels) if p.get("type") != "row"
            or (i + 1 < len(panels) and panels[i + 1].get("type") != "row")]
    dash["panels"] = kept
    if left_out or not mapping.is_lab:
        c = mapping.contract
        dash["description"] = (f"{dash.get('description', '')} Rendered by `chaosext render dashboard` for the "
                               f"target's names (request counter {c.requests}, labels {c.service_label}, "
                               f"{c.tenant_label or 'no tenant label'}). "
                               + (f"Left out: {'; '.join(left_out)}." if left_out else "")).strip()
    return dash, left_out


def dashboard_text(dash: dict[str, Any]) -> str:
    """The dashboard as the shipped file is written (2-space JSON, UTF-8, a final newline)."""
    return json.dumps(dash, indent=2, ensure_ascii=False) + "\n"
