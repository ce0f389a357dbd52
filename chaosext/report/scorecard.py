"""The scorecard as a section of the HTML report: services × JWKS failure modes, each cell held / failed + the checks /
not run + why, and what each mode's run said (``chaosext scorecard`` writes it; ``render_scorecard_html`` takes the
scorecard's JSON document)."""
from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from chaosext import __version__
from chaosext.report.render import CSS

__all__ = ["render_scorecard_section", "render_scorecard_html"]

_CELL_CSS = ".held{background:#e3f3e8}.failed{background:#fbe4e2}.notrun{background:#f1f1f1;color:#5b6272}"


def _cell(cell: dict[str, Any]) -> str:
    status = str(cell.get("status", "not run"))
    if status == "held":
        return '<td class="held"><span class="ok">held</span></td>'
    if status == "failed":
        checks = "<br>".join(f"<code>{escape(c)}</code>" for c in cell.get("checks") or [])
        return f'<td class="failed"><span class="bad">failed</span><br>{checks}</td>'
    return f'<td class="notrun">not run<br><span class="muted">{escape(str(cell.get("why", "")))}</span></td>'


def render_scorecard_section(doc: dict[str, Any]) -> str:
    """The table and each mode's run, as an HTML fragment."""
    modes: list[str] = list(doc.get("modes") or [])
    services: list[str] = list(doc.get("services") or [])
    cells: dict[str, dict[str, Any]] = doc.get("cells") or {}
    runs: dict[str, dict[str, Any]] = doc.get("runs") or {}
    head = "".join(f"<th>{escape(m)}</th>" for m in modes)
    rows = []
    for service in services:
        rows.append(f"<tr><th>{escape(service)}</th>"
                    + "".join(_cell((cells.get(m) or {}).get(service) or {}) for m in modes) + "</tr>")
    run_row = []
    for m in modes:
        failed = (runs.get(m) or {}).get("run_failed") or []
        run_row.append('<td class="failed"><span class="bad">failed</span><br>'
                       + "<br>".join(f"<code>{escape(c)}</code>" for c in failed) + "</td>" if failed
                       else '<td class="muted">—</td>')
    rows.append("<tr><th>the run (not one service's)</th>" + "".join(run_row) + "</tr>")
    detail = []
    for m in modes:
        r = runs.get(m) or {}
        reasons = "".join(f"<li>{escape(str(x))}</li>" for x in r.get("reasons") or [])
        journal = r.get("journal") or ""
        detail.append(f"<tr><td>{escape(m)}</td><td>{escape(str(r.get('verdict', 'NOT RUN')))}</td>"
                      f"<td class=num>{r.get('seconds', 0):.0f} s</td><td><ul>{reasons}</ul></td>"
                      f"<td><code>{escape(journal)}</code></td></tr>")
    target = doc.get("target") or {}
    return f"""<h2 id="scorecard">JWKS failure modes: every service in every mode</h2>
<p class="sub">Target: {escape(str(target.get("via", "?")))} on {escape(str(target.get("target", "?")))}, JWKS
{escape(str(target.get("jwks_url", "?")))}; {len(modes)} modes in {doc.get("wall_seconds", 0):.0f} s. Each mode is a
full run (baseline, outage, recovery) judged per service; docs/failure-modes.md says what each check means.</p>
<table><tr><th>service</th>{head}</tr>{"".join(rows)}</table>
<h2 id="scorecard-runs">Each mode's run</h2>
<table><tr><th>mode</th><th>verdict</th><th>took</th><th>reasons</th><th>journal</th></tr>{"".join(detail)}</table>"""


def render_scorecard_html(doc: dict[str, Any]) -> str:
    """A self-contained page with the scorecard section."""
    started = doc.get("started_at")
    when = datetime.fromtimestamp(started, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if started else "?"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>chaosext scorecard</title><style>{CSS}{_CELL_CSS}</style></head>
<body><main>
<h1>JWKS failure scorecard</h1>
<div class="sub">chaosext {escape(__version__)} · started {escape(when)}</div>
{render_scorecard_section(doc)}
</main></body></html>
"""
