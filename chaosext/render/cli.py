"""`chaosext render`: the tenancy rules, the dashboard and k6's load plan for a target, from its description.

Each reads the target exactly as a run does (``--target-file``, else ``TARGET_FILE``, else the running lab's; the
``METRIC_*``, ``SERVICE_URLS``, ``TENANTS`` ... settings over it).
"""
from __future__ import annotations

from pathlib import Path

import click

from chaosext.core import safefs
from chaosext.core.config import ExperimentConfig, load_config
from chaosext.core.errors import ChaosextError
from chaosext.load.plan import PLAN_FILE, plan_json
from chaosext.render.dashboard import DASHBOARD_FILE, dashboard_text, render_dashboard
from chaosext.render.mapping import mapping_for
from chaosext.render.rules import render_rules, write_rules

__all__ = ["render"]

_TARGET = click.option("--target-file", default="", help="the target description (default: $TARGET_FILE, else the "
                                                         "running lab's)")
_STATE = click.option("--state-dir", default="", help="lab state directory (default: $CHAOSEXT_LAB_DIR or "
                                                      "./.chaosext-lab)")


def _settings(target_file: str, state_dir: str) -> ExperimentConfig:
    configuration = {k: v for k, v in (("target_file", target_file), ("chaosext_lab_dir", state_dir)) if v}
    try:
        cfg = load_config(configuration or None)
    except ChaosextError as exc:
        raise click.ClickException(str(exc)) from exc
    if not cfg.services:
        raise click.ClickException("no target described: give --target-file (docs/target.md), set TARGET_FILE, or "
                                   "start the lab (chaosext lab up)")
    return cfg


def _what(cfg: ExperimentConfig) -> str:
    return cfg.target_file or "the target of the settings"


@click.group(epilog="""\b
Examples:
  chaosext render rules --target-file target.yaml --out rules/       # recording rules, alerts, services.yaml
  chaosext render dashboard --target-file target.yaml --out grafana/
  chaosext render load-plan --target-file target.yaml --out plan.json
""")
def render() -> None:
    """Render the tenancy rules, the dashboard or k6's load plan for a target's own names."""


@render.command("rules", epilog="""\b
Examples:
  chaosext render rules --target-file target.yaml --out rules/
  promtool check rules rules/*.yaml                                # then load all three in Prometheus
""")
@_TARGET
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="directory to write into")
@_STATE
def rules(target_file: str, out_dir: str, state_dir: str) -> None:
    """recording-rules.yaml, alerts.yaml and services.yaml for the target's metric names (load all three)."""
    cfg = _settings(target_file, state_dir)
    rendered = render_rules(mapping_for(cfg.metrics, cfg.services, []), _what(cfg))
    for path in write_rules(rendered, Path(out_dir)):
        click.echo(f"wrote {path}")
    for name, why in sorted(rendered.left_out.items()):
        click.echo(f"left out {name}: it reads {why}")
    for note in rendered.notes:
        click.echo(f"note: {note}")


@render.command("dashboard", epilog="""\b
Examples:
  chaosext render dashboard --target-file target.yaml --out grafana/   # import grafana/tenant-audit.json
""")
@_TARGET
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="directory to write into")
@_STATE
def dashboard(target_file: str, out_dir: str, state_dir: str) -> None:
    """The Grafana dashboard (tenant-audit.json) for the target's metric names."""
    cfg = _settings(target_file, state_dir)
    dash, left_out = render_dashboard(mapping_for(cfg.metrics, cfg.services, []))
    path = Path(out_dir) / DASHBOARD_FILE
    safefs.write_output(path, dashboard_text(dash))  # as root too: never through a link planted there
    click.echo(f"wrote {path}")
    for item in left_out:
        click.echo(f"left out {item}")


@render.command("load-plan", epilog="""\b
Examples:
  chaosext render load-plan --target-file target.yaml --out plan.json
  k6 run -e TARGET_JSON=plan.json -e K6_RATE=200 -e AUTHORITY_URL=https://idp.example k6-tenant-load.js
""")
@_TARGET
@click.option("--out", "out_file", default=PLAN_FILE, show_default=True, type=click.Path(dir_okay=False),
              help="file to write (give it to k6 as -e TARGET_JSON=<file>)")
@_STATE
def load_plan(target_file: str, out_file: str, state_dir: str) -> None:
    """k6's load plan (services, routes, tenants, tenant header) for running k6-tenant-load.js by hand."""
    cfg = _settings(target_file, state_dir)
    try:
        text = plan_json(cfg)
    except ChaosextError as exc:
        raise click.ClickException(str(exc)) from exc
    safefs.write_output(out_file, text)  # as root too: never through a link planted there
    click.echo(f"wrote {out_file}; run: k6 run -e TARGET_JSON={out_file} -e K6_RATE={cfg.k6_rate} "
               f"-e AUTHORITY_URL={cfg.authority_url or '<issuer>'} ops/devops/tenant/k6-tenant-load.js")
