"""``chaosext scorecard``: every JWKS failure mode against one target, in sequence, as one services × modes table.

Each mode is a full run of the experiment (``chaos run experiments/jwks-outage.json`` with ``JWKS_FAILURE=<mode>``:
baseline, outage, recovery), so every run keeps the safety control's rules: the target lock, the approval of a non-lab
target, the heartbeat and dead-man watchdog, the deadline, the restore on every exit. A mode the chosen driver cannot
make (``chaosext.core.failures``), or whose settings are missing (ROTATE_URL, COLD_START_URL), is "not run" with the
reason, and nothing is started for it; a mode that fails does not stop the rest. Each run's safety control keeps the
previous run out of its baseline window (its cool-down: BASELINE_SECONDS after the previous run on the target); after
a run that did not pass the scorecard also waits until no expiry alert is active (at most ``--settle-max`` seconds; a
target that does not settle gets a "not run: baseline" cell from the next run's own baseline, honestly).

Per mode and service the cell is ``held``, ``failed`` with the checks the service failed (the outage checks and the
recovery, ``chaosext.outage.services``), or ``not run`` and why; failures no service is named in (the client-side
error rate, a fault that did not hold, an aborted outage) are the run's row. The table goes to stdout, the JSON
document to ``--json`` (for CI), the HTML page to ``--html`` (``chaosext.report.scorecard``). Exit 0 when every mode
that ran passed, every service held, 1 when anything failed, 3 when nothing failed but a mode that could run was not
run or not judged completely (``chaosext verdict``'s NOT RUN, NOT EXERCISED, INCOMPLETE, UNVERIFIED).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from chaosext.core import safefs
from chaosext.core.config import ExperimentConfig, failure_problems, load_config
from chaosext.core.errors import ConfigError
from chaosext.core.failures import JWKS_FAILURES, failure_problem
from chaosext.metrics.measure import active_expiry_alerts
from chaosext.outage.services import per_service
from chaosext.report.scorecard import render_scorecard_html
from chaosext.run.context import RunContext
from chaosext.verdict import check_record, classify

__all__ = ["scorecard", "run_scorecard", "cells_of", "render_table", "parse_modes", "EXPERIMENT"]

#: the experiment each mode runs (the repository's; ``--experiment`` for another)
EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "jwks-outage.json"


def parse_modes(text: str) -> list[str]:
    """``--modes``: a comma list of JWKS_FAILURE names (``all`` or empty: every one); click.BadParameter naming the
    known ones for a name that is not one."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names or names == ["all"]:
        return list(JWKS_FAILURES)
    bad = [m for m in names if m not in JWKS_FAILURES]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)} unknown; use a comma list of {', '.join(JWKS_FAILURES)} (or all)")
    return list(dict.fromkeys(names))


def _mode_config(env: dict[str, str], mode: str) -> ExperimentConfig:
    """The settings a run of ``mode`` would resolve (``env`` over the environment and the running lab), without
    running it."""
    return load_config({**{k.lower(): v for k, v in env.items()}, "jwks_failure": mode})


def _why_not(cfg: ExperimentConfig, mode: str) -> str:
    """'' when ``mode`` can run against this target; else why not (nothing is started for it)."""
    return failure_problem(mode, cfg.fault_via, cfg.fault_target, cfg.jwks_url) or "; ".join(failure_problems(cfg))


def _recovery_results(journal: dict[str, Any]) -> dict[str, Any]:
    """The recovery's probes that did not hold, by name (their outputs)."""
    after = (journal.get("steady_states") or {}).get("after") or {}
    return {f"recovery: {(p.get('activity') or {}).get('name', '?')}": (p.get("output") if isinstance(
        p.get("output"), dict) else {"ok": False}) for p in after.get("probes") or []
        if not (p.get("tolerance_met") and p.get("status") == "succeeded")}


def _judged(journal: dict[str, Any]) -> dict[str, Any]:
    for run in journal.get("run") or []:
        out = run.get("output")
        if (run.get("activity") or {}).get("name") in ("judge-outage", "judge-drill") and isinstance(out, dict):
            return out
    return {}


#: verdicts whose run judged no service (each cell says why)
UNJUDGED = ("NOT RUN", "DRY RUN", "UNREADABLE", "NOT EXERCISED")


def cells_of(journal: dict[str, Any], services: list[str],
             verified: bool = True) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(per-service cells, the run's summary) of one mode's journal, judged as ``chaosext verdict`` judges it (against
    its run's record unless ``verified`` is False)."""
    kind, reasons = classify(journal, check_record(journal) if verified else None)
    run: dict[str, Any] = {"verdict": kind, "reasons": reasons, "run_failed": []}
    if kind in UNJUDGED:
        why = reasons[0] if reasons else kind.lower()
        return {s: {"status": "not run", "why": why} for s in services}, run
    judged = _judged(journal)
    if not judged.get("checks"):
        why = next((r for r in reasons if r.startswith("fault not applied")), reasons[0] if reasons else "not judged")
        return {s: {"status": "not run", "why": why} for s in services}, run
    results = {**judged["checks"], **_recovery_results(journal)}
    view = per_service(results, services)
    run["run_failed"] = list(view["run"])
    run["not_judged"] = list(view["not_judged"])
    cells = {s: ({"status": "failed", "checks": view["services"][s]} if view["services"][s] else {"status": "held"})
             for s in services}
    return cells, run


def _settle(cfg: ExperimentConfig, settle_max: float) -> None:
    """Wait until no expiry alert is active (bounded; the safety control itself keeps the previous run out of the
    next baseline window: its cool-down)."""
    if not cfg.expiry_alerts:
        return
    deadline = time.time() + settle_max
    ctx = RunContext(cfg)
    while time.time() < deadline:
        try:
            active = active_expiry_alerts(ctx)
        except Exception:  # Prometheus/Alertmanager unreachable: the run's own pre-flight says so
            return
        if not active["prometheus"] and not active["alertmanager"]:
            return
        time.sleep(5.0)


def run_scorecard(modes: list[str], out_dir: Path, env: dict[str, str], experiment: Path = EXPERIMENT,
                  settle_max: float = 360.0, echo: Any = print) -> dict[str, Any]:
    """Run every mode in sequence (module docstring); the scorecard document."""
    started = time.time()
    base = _mode_config(env, "unreachable")
    services = list(base.services)
    doc: dict[str, Any] = {"version": 1, "started_at": started, "modes": modes, "services": services,
                           "target": {"via": base.fault_via, "target": base.fault_target, "jwks_url": base.jwks_url,
                                      "fault_mode": base.fault_mode},
                           "cells": {}, "runs": {}}
    chaos = shutil.which("chaos") or str(Path(sys.executable).parent / "chaos")
    last_end, settle = 0.0, False
    for mode in modes:
        cfg = _mode_config(env, mode)
        if why := _why_not(cfg, mode):
            echo(f"scorecard: {mode}: not run: {why}")
            doc["cells"][mode] = {s: {"status": "not run", "why": why} for s in services}
            doc["runs"][mode] = {"verdict": "NOT RUN", "reasons": [why], "run_failed": [], "seconds": 0.0,
                                 "capability": True}
            continue
        if settle:  # the previous run did not pass: its alerts must not be the next baseline's
            _settle(cfg, settle_max)
        # the operator's directory may be anyone's (a CI workspace): each mode's files go into a 0700 directory of
        # ours in it, reached by descriptor only (chaos runs in it through /proc/self/fd), never through a symlink
        with safefs.open_dir(out_dir, create=True, mode=0o755, anyones=True) as out, out.subdir(mode) as work:
            journal_path = Path(work.shown("journal.json"))
            echo(f"scorecard: {mode}: chaos run (journal {journal_path})")
            t0 = time.time()
            log = work.open("chaos.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                proc = subprocess.run([chaos, "--log-file", "chaostoolkit.log", "run", "--journal-path",
                                       "journal.json", str(experiment.resolve())], cwd=f"/proc/self/fd/{work.fd}",
                                      pass_fds=(work.fd,), stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, **env, "JWKS_FAILURE": mode}, check=False)
            finally:
                os.close(log)
            last_end = time.time()
            try:
                journal = json.loads(work.read_text("journal.json"))
            except (OSError, ValueError):
                journal = {}
        if journal:
            cells, run = cells_of(journal, services)
        else:
            why = f"chaos run wrote no journal (exit {proc.returncode}; see {journal_path.parent / 'chaos.log'})"
            cells = {s: {"status": "not run", "why": why} for s in services}
            run = {"verdict": "NOT RUN", "reasons": [why], "run_failed": []}
        run.update(seconds=round(last_end - t0, 1), journal=str(journal_path), chaos_exit_code=proc.returncode)
        settle = run["verdict"] != "PASS"
        doc["cells"][mode], doc["runs"][mode] = cells, run
        echo(f"scorecard: {mode}: {run['verdict']} in {run['seconds']:.0f} s: " + ", ".join(
            f"{s} {c['status']}{' (' + ', '.join(c.get('checks') or []) + ')' if c.get('checks') else ''}"
            for s, c in cells.items()))
    doc["wall_seconds"] = round(time.time() - started, 1)
    return doc


def exit_code(doc: dict[str, Any]) -> int:
    """0 every mode that ran passed (its verdict PASS) with every service held; 1 anything failed; 3 nothing failed
    but a mode that could run was not run or not judged completely (the verdict's NOT RUN, NOT EXERCISED,
    INCOMPLETE, UNVERIFIED, UNREADABLE). A mode the driver cannot make does not count."""
    cells = [c for per in doc["cells"].values() for c in per.values()]
    if any(c["status"] == "failed" for c in cells) or any(r.get("run_failed") for r in doc["runs"].values()):
        return 1
    if any(r.get("verdict") == "FAIL" for r in doc["runs"].values()):
        return 1
    if any(r.get("verdict") != "PASS" and not r.get("capability") for r in doc["runs"].values()):
        return 3
    return 0


def render_table(doc: dict[str, Any], width: int = 40) -> str:
    """services × modes as fixed-width text (a failed cell names its first check, ``+n`` the others); under it every
    failure in full, the run-level failures and the not-run reasons."""
    modes, services = doc["modes"], doc["services"]

    def short(cell: dict[str, Any]) -> str:
        if cell["status"] == "failed":
            checks = cell.get("checks") or []
            return f"FAILED {checks[0]}" + (f" +{len(checks) - 1}" if len(checks) > 1 else "") if checks else "FAILED"
        return cell["status"].upper() if cell["status"] == "held" else "not run"

    texts = [short(doc["cells"][m][s]) for m in modes for s in services] + list(modes)
    col = max(9, min(width, max(len(t) for t in texts)))

    name_w = max(len("service"), *(len(s) for s in services), len("(the run)"))
    lines = [f"{'service':<{name_w}}  " + "  ".join(f"{m[:col]:<{col}}" for m in modes)]
    for s in services:
        lines.append(f"{s:<{name_w}}  " + "  ".join(f"{short(doc['cells'][m][s]):<{col}}" for m in modes))
    def run_cell(mode: str) -> str:
        failed = doc["runs"][mode].get("run_failed") or []
        return ("FAILED " + ",".join(failed))[:col] if failed else "-"

    lines.append(f"{'(the run)':<{name_w}}  " + "  ".join(f"{run_cell(m):<{col}}" for m in modes))
    lines.append("")
    for m in modes:
        run = doc["runs"][m]
        failed = {s: c["checks"] for s, c in doc["cells"][m].items() if c["status"] == "failed"}
        if failed or run.get("run_failed"):
            lines.append(f"{m}: " + "; ".join([f"{s} failed {', '.join(c)}" for s, c in failed.items()]
                                             + ([f"the run failed {', '.join(run['run_failed'])}"]
                                                if run.get("run_failed") else [])))
        elif run.get("verdict") in UNJUDGED:
            lines.append(f"{m}: not run: {(run.get('reasons') or ['?'])[0]}")
        elif run.get("verdict") != "PASS":
            lines.append(f"{m}: {run.get('verdict')}: {'; '.join(run.get('reasons') or [])}")
    lines.append(f"{len(modes)} modes in {doc.get('wall_seconds', 0):.0f} s")
    return "\n".join(lines)


@click.command("scorecard", epilog="""\b
Examples:
  chaosext scorecard                                   # every mode against the running lab (or TARGET_FILE)
  chaosext scorecard --modes slow,empty-keys --outage-seconds 30
  FAULT_VIA=envoy FAULT_TARGET=http://127.0.0.1:9901 chaosext scorecard --json scorecard.json
""")
@click.option("--modes", default="all", show_default=True,
              help=f"comma list of JWKS_FAILURE modes: {', '.join(JWKS_FAILURES)}")
@click.option("--outage-seconds", type=click.IntRange(min=1), default=None,
              help="OUTAGE_SECONDS of every run (shorter outages are allowed) [default: OUTAGE_SECONDS]")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE",
              help="a setting for every run, as its environment variable (repeatable), e.g. --var FAULT_MODE=reject")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="scorecard", show_default=True,
              help="directory for each mode's journal and logs")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default="",
              help="write the scorecard as JSON here [default: <out>/scorecard.json]")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default="",
              help="write the scorecard's HTML report here [default: <out>/scorecard.html]")
@click.option("--experiment", type=click.Path(exists=True, dir_okay=False), default=str(EXPERIMENT),
              show_default="experiments/jwks-outage.json", help="the experiment each mode runs")
@click.option("--settle-max", type=click.FloatRange(min=0), default=360.0, show_default=True,
              help="seconds to wait between runs for the expiry alerts to clear")
def scorecard(modes: str, outage_seconds: int | None, variables: tuple[str, ...], out_dir: str, json_path: str,
              html_path: str, experiment: str, settle_max: float) -> None:
    """Run every JWKS failure mode against one target in sequence and print services × modes.

    \b
    Each mode is a full run (baseline, outage, recovery) with every rule of a run: lock, approval, dead-man switch,
    restore. A mode the driver cannot make is "not run" with why; a failed mode does not stop the rest.
    Exit 0 every mode that ran passed, 1 something failed, 3 a mode not run or not judged completely.
    """
    env: dict[str, str] = {}
    for item in variables:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--var")
        env[key.strip().upper()] = value
    if outage_seconds:
        env["OUTAGE_SECONDS"] = str(outage_seconds)
    chosen = parse_modes(modes)
    try:
        _mode_config(env, "unreachable")  # the settings must at least parse before anything runs
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    out = Path(out_dir)
    doc = run_scorecard(chosen, out, env, Path(experiment), settle_max,
                        echo=lambda line: click.echo(line, err=True))
    json_file = Path(json_path) if json_path else out / "scorecard.json"
    html_file = Path(html_path) if html_path else out / "scorecard.html"
    json_file = safefs.write_output(json_file, json.dumps(doc, indent=1, sort_keys=True) + "\n")  # root-safe
    html_file = safefs.write_output(html_file, render_scorecard_html(doc))
    click.echo(render_table(doc))
    click.echo(f"scorecard: {json_file}, {html_file}")
    sys.exit(exit_code(doc))
