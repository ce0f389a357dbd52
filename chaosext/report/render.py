"""Turn the collected facts into one self-contained HTML page (inline CSS, PNGs as data: URIs, no scripts)."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from chaosext import __version__

if TYPE_CHECKING:  # matplotlib is imported only while a report is made (chaosext.report.cli)
    from chaosext.report.plots import Plot

__all__ = ["render_html"]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dbe2;padding-bottom:4px}
.sub{color:#5b6272}
.verdict{display:flex;gap:16px;align-items:center;padding:14px 18px;border-radius:8px;margin:16px 0;color:#fff}
.verdict.pass{background:#1f7a3f}.verdict.fail{background:#b3261e}.verdict.nodata{background:#8a5a00}
.verdict b{font-size:26px;letter-spacing:1px}
.verdict ul{margin:0;padding-left:18px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #d8dbe2;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eceef2}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ok{color:#1f7a3f;font-weight:600}.bad{color:#b3261e;font-weight:600}.muted{color:#7a8090}
code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#eceef2;padding:1px 4px;border-radius:3px;
 word-break:normal;overflow-wrap:anywhere}
.kvlines{white-space:pre-wrap;word-break:normal;overflow-wrap:break-word;font:12px ui-monospace,Menlo,monospace}
figure{margin:12px 0;background:#fff;border:1px solid #d8dbe2;border-radius:6px;padding:8px}
figure img{width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#5b6272}
.kv td:first-child{width:180px;color:#5b6272}
"""


def _t(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "—"


def _rel(ts: float | None, origin: float | None) -> str:
    return f"+{ts - origin:.1f} s" if ts is not None and origin is not None else "—"


def _short(value: Any, limit: int = 220) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _verdict(verdict: dict[str, Any], has_data: bool = True) -> str:
    """The banner. Without metric data it never shows a bare PASS: it says the plots are empty and what that means."""
    cls = "pass" if verdict["passed"] else "fail"
    reasons = "".join(f"<li>{escape(r)}</li>" for r in verdict.get("reasons", []))
    detail = f"<ul>{reasons}</ul>" if reasons else "<span>every check of the run passed</span>"
    summary = verdict.get("summary") or cls.upper()
    if not has_data:
        detail += ("<div><b>NO METRIC DATA</b>: every metric plot below is empty (Prometheus gone or rotated, and no "
                   "evidence file). This report shows the journal's verdict but no evidence of what the system did: "
                   "re-render with <code>--ranges evidence.json</code> or while Prometheus still holds the run.</div>")
        cls, summary = ("nodata" if verdict["passed"] else "fail"), f"{summary} · NO DATA"
    return f'<div class="verdict {cls}"><b>{escape(summary)}</b><div>{detail}</div></div>'


def _summary(journal: dict[str, Any], window: tuple[float, float] | None, start: float | None,
             end: float | None, sources: list[str]) -> str:
    exp = journal.get("experiment") or {}
    rows = [
        ("experiment", escape(exp.get("title", "?"))),
        ("run status", f'{escape(str(journal.get("status")))}; deviated: {escape(str(journal.get("deviated")))}'),
        ("started / ended", f"{_t(start)} / {_t(end)} ({journal.get('duration', 0):.0f} s)"
         if isinstance(journal.get("duration"), (int, float)) else f"{_t(start)} / {_t(end)}"),
        ("outage window", f"{_t(window[0])} → {_t(window[1])} ({window[1] - window[0]:.0f} s)" if window
         else '<span class="bad">no fault action found in the journal</span>'),
        ("data sources", "<br>".join(escape(s) for s in sources)),
        ("chaostoolkit", escape(f"lib {journal.get('chaoslib-version', '?')} on {journal.get('node', '?')}")),
    ]
    return '<table class="kv">' + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _plots(plots: list[Plot]) -> str:
    parts = []
    for plot in plots:
        if plot["png"]:
            gap = f'<br><b>{escape(plot["note"])}</b>' if plot["note"] else ""
            parts.append(f'<figure id="plot-{escape(plot["key"])}"><img alt="{escape(plot["title"])}" '
                         f'src="data:image/png;base64,{plot["png"]}"><figcaption>{escape(plot["title"])}; '
                         f"shaded bands: baseline / JWKS outage / recovery windows; dashed lines: audit events; "
                         f"the same time axis on every plot{gap}</figcaption></figure>")
        else:
            parts.append(f'<figure id="plot-{escape(plot["key"])}"><figcaption><b>{escape(plot["title"])}</b>: '
                         f'{escape(plot["note"])}</figcaption></figure>')
    return "\n".join(parts)


def _met(value: Any) -> str:
    if value is True:
        return '<span class="ok">met</span>'
    if value is False:
        return '<span class="bad">NOT met</span>'
    return '<span class="muted">—</span>'


def _tolerance(value: Any) -> str:
    """A tolerance as a reader says it: ``$.ok == true`` style for jsonpath tolerances, the value otherwise."""
    if isinstance(value, dict) and value.get("type") == "jsonpath":
        expect = value.get("expect", value.get("target"))
        return f"{value.get('path', '?')} == {json.dumps(expect)}" if expect is not None else str(value.get("path"))
    if isinstance(value, (bool, int, float, str)):
        return json.dumps(value) if not isinstance(value, str) else value
    return _short(value)


def _kv_lines(value: Any, limit: int = 14) -> str:
    """A probe value as ``key: value`` lines (dicts), else its short text."""
    if not isinstance(value, dict):
        return _short(value)
    lines = [f"{k}: {_short(v, 120)}" for k, v in list(value.items())[:limit]]
    if len(value) > limit:
        lines.append(f"… {len(value) - limit} more")
    return "\n".join(lines)


def _probes(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="muted">the journal holds no steady-state probes</p>'
    body = "".join(
        f"<tr><td>{escape(r['phase'])}</td><td>{escape(r['name'])}</td><td>{escape(_tolerance(r['tolerance']))}"
        f'</td><td><div class="kvlines">{escape(_kv_lines(r["value"]))}</div></td><td>{_met(r["met"])}</td></tr>'
        for r in rows)
    return ("<table><tr><th>phase</th><th>probe</th><th>tolerance</th><th>value</th><th>result</th></tr>"
            f"{body}</table>")


def _timeline(rows: list[dict[str, Any]], origin: float | None) -> str:
    body = []
    for r in rows:
        took = f"{r['end'] - r['start']:.1f} s" if r["start"] is not None and r["end"] is not None else "—"
        status = r["status"]
        css = "ok" if status == "succeeded" else "bad" if status == "failed" else "muted"
        kind = r["type"] + (" (background)" if r["background"] else "")
        error = f'<br><span class="bad">{escape(_short(r["error"], 300))}</span>' if r["error"] else ""
        body.append(f"<tr><td class=num>{_rel(r['start'], origin)}</td><td class=num>{took}</td>"
                    f"<td>{escape(r['phase'])}</td><td>{escape(kind)}</td><td>{escape(r['name'])}"
                    f"<br><code>{escape(r['func'])}</code>{error}</td><td class={css}>{escape(status)}</td></tr>")
    return ("<table><tr><th>start</th><th>took</th><th>phase</th><th>type</th><th>activity</th><th>status</th></tr>"
            + "".join(body) + "</table>")


def render_html(journal: dict[str, Any], verdict: dict[str, Any], timeline: list[dict[str, Any]],
                probes: list[dict[str, Any]], plots: list[Plot], window: tuple[float, float] | None,
                start: float | None, end: float | None, sources: list[str]) -> str:
    """The whole report page as a string."""
    title = (journal.get("experiment") or {}).get("title", "chaos run")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Report: {escape(title)}</title><style>{CSS}</style></head>
<body><main>
<h1>{escape(title)}</h1>
<div class="sub">chaosext {escape(__version__)} report · generated {_t(datetime.now(UTC).timestamp())}</div>
{_verdict(verdict, any(p["png"] for p in plots if p["key"] != "audit_events"))}
{_summary(journal, window, start, end, sources)}
<h2 id="plots">What the system did during the outage</h2>
{_plots(plots)}
<h2 id="probes">Probes against their tolerances</h2>
{_probes(probes)}
<h2 id="timeline">Timeline of activities</h2>
{_timeline(timeline, start)}
<p class="sub">How to read this report, and what to do about a failure: docs/operations.md and docs/runbook.md.</p>
</main></body></html>
"""
