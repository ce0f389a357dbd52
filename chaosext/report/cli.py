"""`chaosext report`: a Chaos Toolkit journal (+ Prometheus ranges + audit events) -> one self-contained HTML file."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import requests

from chaosext.core import safefs
from chaosext.core.backends import backend
from chaosext.core.config import ExperimentConfig, load_config
from chaosext.core.settings import raw_setting
from chaosext.metrics.prom import Prom
from chaosext.outage import evidence
from chaosext.report import collect
from chaosext.report.render import render_html

__all__ = ["report", "build_report", "private_matplotlib_dir"]


@contextmanager
def private_matplotlib_dir() -> Iterator[str]:
    """matplotlib's config and font cache in a temporary directory, removed afterwards (``MPLCONFIGDIR``): making a
    report leaves nothing in ``~/.cache/matplotlib`` or ``~/.config/matplotlib`` (root's, under sudo). matplotlib is
    imported only inside (chaosext.report.plots), so no other command touches them either."""
    before = os.environ.get("MPLCONFIGDIR")
    with tempfile.TemporaryDirectory(prefix="chaosext-matplotlib-") as tmp:
        os.environ["MPLCONFIGDIR"] = tmp
        try:
            yield tmp
        finally:
            if before is None:
                os.environ.pop("MPLCONFIGDIR", None)
            else:
                os.environ["MPLCONFIGDIR"] = before


def _settings(state_dir: str) -> ExperimentConfig:
    """The settings from the environment and the running lab (the same resolver as a run)."""
    return load_config({"chaosext_lab_dir": state_dir} if state_dir else None)


def _audit_path(audit: str, cfg: ExperimentConfig) -> str:
    """--audit, else AUDIT_SOURCE when it is ``file:<path>`` (the lab's when it runs)."""
    if audit:
        return audit
    configured = raw_setting(None, "audit_source", "") or cfg.lab_running
    return cfg.audit_location if configured and cfg.audit_kind == "file" else ""


def build_report(journal_path: str, prometheus: Prom | None = None, ranges_path: str = "", audit_path: str = "",
                 error_rate_max: float | None = None, save_ranges: str = "",
                 plan: evidence.EvidencePlan | None = None, run_dir: str = "") -> tuple[str, dict[str, Any], list[str]]:
    """(html, verdict, warnings) for a journal; never raises for missing metrics, only for a bad journal. ``plan``:
    the target's queries and plot notes when asking Prometheus (default: its metric contract's); a recorded evidence
    file brings its own. The verdict is `chaosext verdict`'s, the journal checked against its run's record
    (``run_dir``: that run's directory, when not the one the journal names)."""
    journal = collect.load_journal(journal_path)
    start, end = collect.parse_time(journal.get("start")), collect.parse_time(journal.get("end"))
    window = collect.outage_window(journal)
    if start is None:
        start = window[0] if window else None
    if end is None:
        end = window[1] if window else start
    warnings: list[str] = []
    sources: list[str] = [f"journal: {journal_path}"]
    ranges: dict[str, Any] = {}
    windows: dict[str, Any] = {}
    if not ranges_path:
        ranges_path = collect.evidence_in_journal(journal, journal_path)  # saved at judge time by the experiment
    if ranges_path:
        ranges = collect.load_ranges(ranges_path)
        windows = evidence.load_windows(ranges_path)
        plan = evidence.load_plan_notes(ranges_path)
        sources.append(f"metrics: recorded ranges {ranges_path}")
        if windows:
            sources.append("windows: " + ", ".join(f"{n} {e - s:.0f} s" for n, (s, e) in windows.items()))
            start = min(([start] if start is not None else []) + [w[0] for w in windows.values()])
            end = max(([end] if end is not None else []) + [w[1] for w in windows.values()])
    elif prometheus is not None and start is not None and end is not None:
        plan = plan or evidence.evidence_plan(prometheus.contract)
        try:
            ranges = evidence.query_ranges(prometheus, start, end, plan.queries)
            sources.append(f"metrics: {prometheus.url} /api/v1/query_range")
        except (requests.RequestException, ValueError, KeyError) as exc:
            warnings.append(f"Prometheus at {prometheus.url} gave no ranges ({type(exc).__name__}: {exc}); metric "
                            f"plots are empty. Re-run while it still holds the data, or pass --ranges FILE.")
    else:
        warnings.append("no Prometheus URL and no --ranges file: metric plots are empty "
                        "(pass --prometheus-url or set PROMETHEUS_URL).")
    if ranges and save_ranges:
        safefs.write_output(save_ranges, json.dumps(ranges))  # root-safe; shareable, nothing secret
    if warnings:
        sources += [f"warning: {w}" for w in warnings]
    events = collect.audit_events(audit_path, start, end) if audit_path else []
    sources.append(f"audit: {audit_path} ({len(events)} auth.* events)" if audit_path
                   else "audit: none given (--audit or AUDIT_SOURCE=file:...)")
    span = (start, end) if start is not None and end is not None and end > start else None
    with private_matplotlib_dir():
        from chaosext.report.plots import make_plots

        plots = make_plots(ranges, events, window, span, error_rate_max, windows, collect.k6_p95_ms(journal),
                           plan.notes if plan else None, plan.cache_gaps if plan else None)
    verdict = collect.verdict_of(journal, run_dir)
    html = render_html(journal, verdict, collect.timeline(journal), collect.probe_results(journal), plots,
                       window, start, end, sources)
    return html, verdict, warnings


@click.command(epilog="""\b
Examples:
  chaosext report journal.json -o report.html                  # metrics from $PROMETHEUS_URL or the lab's
  chaosext report journal.json -o report.html --prometheus-url http://127.0.0.1:9490 \\
      --audit .chaosext-lab/audit.jsonl --save-ranges ranges.json
  chaosext report journal.json -o report.html --ranges ranges.json   # offline, from recorded ranges
""")
@click.argument("journal", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              help="HTML file to write")
@click.option("--prometheus-url", default="", help="default: $PROMETHEUS_URL, else the running lab's")
@click.option("--ranges", "ranges_path", default=None, type=click.Path(dir_okay=False, exists=True),
              help="JSON of recorded query_range results {name: matrix} instead of asking Prometheus")
@click.option("--save-ranges", default="", type=click.Path(dir_okay=False),
              help="also write the ranges fetched from Prometheus here (to re-render later offline)")
@click.option("--audit", default="", help="audit JSONL (default: AUDIT_SOURCE=file:..., else the lab's)")
@click.option("--error-rate-max", type=float, default=None, show_default="$ERROR_RATE_MAX or 0.01",
              help="tolerance line on the error-rate plot")
@click.option("--state-dir", default="", help="lab state directory to find Prometheus and the audit file")
@click.option("--run-dir", default="", metavar="DIR",
              help="the run's directory (run.json) to check the journal against, as `chaosext verdict --run-dir`")
def report(journal: str, output: str, prometheus_url: str, ranges_path: str, save_ranges: str, audit: str,
           error_rate_max: float | None, state_dir: str, run_dir: str) -> None:
    """Write a self-contained HTML report (verdict, plots, probes, timeline) for JOURNAL."""
    try:
        cfg = _settings(state_dir)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    configured = prometheus_url or raw_setting(None, "prometheus_url", "") or cfg.lab_running
    prom = Prom(backend("prometheus", prometheus_url or cfg.prometheus_url, cfg), cfg.metrics) if configured else None
    try:
        html, verdict, warnings = build_report(journal, prom, ranges_path or "", _audit_path(audit, cfg),
                                               cfg.error_rate_max if error_rate_max is None else error_rate_max,
                                               save_ranges, evidence.evidence_plan(cfg.metrics, cfg.services),
                                               run_dir)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:  # root-safe: never through a symlink, never into a directory another user could change
        safefs.write_output(output, html)  # a report is meant to be shared: readable, nothing secret
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from None
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {output} (verdict: {verdict['summary']}); open it in a browser")
