"""`chaosext doctor`: check that this machine can run the JWKS-outage experiment against a target.

It prints the one pre-flight list (``chaosext.safety.preflight``): the very findings the safety control refuses a
run on, so doctor refuses exactly what ``chaos run`` would. Each line says what it looked at, whether it passed, and —
when it did not — the exact fix. Required findings that fail make the command exit 1, so CI and game-day operators
stop before any fault is injected. Tokens stay in this process's memory.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from chaosext.core.config import load_config
from chaosext.core.errors import ConfigError
from chaosext.core.faulttarget import VIA_FORMS, default_via
from chaosext.core.findings import Finding
from chaosext.core.settings import raw_setting
from chaosext.run.context import RunContext
from chaosext.safety.preflight import preflight

__all__ = ["run_checks", "render_table", "doctor"]


def run_checks(target: str = "", via: str = "", prometheus_url: str = "", alertmanager_url: str = "",
               state_dir: str = "") -> list[Finding]:
    """Every pre-flight finding for this target and fault method (options over the settings from the environment and
    the running lab, resolved exactly as a run resolves them), in the order a person would fix them. Only a
    ``--target`` given here without ``--via`` (and no FAULT_VIA) picks its method from its form (an Envoy URL: envoy,
    ``<ns>/<selector>``: k8s-networkpolicy). ConfigError when a setting cannot even be parsed."""
    configuration: dict[str, Any] = {}
    if target and not via and not raw_setting(None, "fault_via", ""):
        via = default_via(target)
    for key, value in (("fault_target", target), ("fault_via", via), ("prometheus_url", prometheus_url),
                       ("alertmanager_url", alertmanager_url), ("chaosext_lab_dir", state_dir)):
        if value:
            configuration[key] = value
    return preflight(RunContext(load_config(configuration)))


def render_table(checks: list[Finding]) -> str:
    """A fixed-width table: status, check, detail, and the fix under each failed line."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'STATUS':8} {'CHECK':{width}}  DETAIL"]
    for c in checks:
        lines.append(f"{c.status:8} {c.name:{width}}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"{'':8} {'':{width}}  fix: {c.fix}")
    return "\n".join(lines)


@click.command(epilog="""\b
Examples:
  chaosext doctor                                   # local iptables fault, lab's Prometheus/Alertmanager
  chaosext doctor --target netns:chaosext-lab
  chaosext doctor --target chaosext-lab/app.kubernetes.io/component=tenant-service --via k8s-networkpolicy
  chaosext doctor --target envoy:http://127.0.0.1:9901
  PROMETHEUS_URL=http://prom:9090 ALERTMANAGER_URL=http://am:9093 chaosext doctor --json
""")
@click.option("--target", default="", show_default="$FAULT_TARGET or local",
              help="where the fault goes: " + "; ".join(f"{v}: {f}" for v, f in VIA_FORMS.items()))
@click.option("--via", type=click.Choice(list(VIA_FORMS)), default=None,
              show_default="$FAULT_VIA or derived from --target", help="fault method")
@click.option("--prometheus-url", default="", help="default: $PROMETHEUS_URL, else the running lab's")
@click.option("--alertmanager-url", default="", help="default: $ALERTMANAGER_URL, else the running lab's")
@click.option("--state-dir", default="", help="lab state directory (default: $CHAOSEXT_LAB_DIR, else "
              "./.chaosext-lab; as root /var/lib/chaosext/lab)")
@click.option("--json", "as_json", is_flag=True, help="print the checks as JSON instead of a table")
def doctor(target: str, via: str | None, prometheus_url: str, alertmanager_url: str, state_dir: str,
           as_json: bool) -> None:
    """Check this machine can run the experiment against TARGET; exit 1 if something required is missing (exactly
    what `chaos run` would refuse)."""
    try:
        checks = run_checks(target, via or "", prometheus_url, alertmanager_url, state_dir)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    missing = [c for c in checks if c.status == "MISSING"]
    if as_json:
        click.echo(json.dumps({"ok": not missing, "checks": [asdict(c) | {"status": c.status} for c in checks]},
                              indent=2))
    else:
        click.echo(render_table(checks))
        click.echo(f"\n{len(missing)} required check(s) missing: fix them before `chaos run`." if missing
                   else "\nall required checks passed.")
    raise SystemExit(1 if missing else 0)
