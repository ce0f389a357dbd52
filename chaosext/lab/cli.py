"""`chaosext lab up | down | status`: the embedded lab on loopback (see docs/lab.md)."""
from __future__ import annotations

import sys
import time
from typing import Any

import click

from chaosext.core.labstate import STATE_DIR_ENV, StateError, resolve_state_dir
from chaosext.lab import supervisor
from chaosext.lab.envoy import EGRESS_MODES
from chaosext.lab.plan import CACHE_MODES, HOLES, SERVICES, LabConfig, LabError

__all__ = ["lab"]

_STATE_DIR = click.option("--state-dir", envvar=STATE_DIR_ENV, default=None, show_envvar=True,
                          help="Lab state directory (state.json, logs/, audit.jsonl, prometheus/) "
                               "[default: ./.chaosext-lab; as root /var/lib/chaosext/lab]. It must belong to you "
                               "and nobody else may write it or any directory above it")


def _services(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    bad = [n for n in names if n not in SERVICES]
    if bad or not names or len(set(names)) != len(names):
        raise click.BadParameter(f"{value!r}: give a comma list of distinct names from {','.join(SERVICES)}")
    return names


def _holes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    bad = [n for n in names if n not in HOLES]
    if bad:
        raise click.BadParameter(f"{','.join(bad)} unknown; give a comma list from {','.join(HOLES)}")
    return names


def _fail(message: str) -> None:
    click.secho(f"chaosext lab: {message}", fg="red", err=True)
    sys.exit(1)


@click.group(epilog="""\b
Examples:
  chaosext lab up                                   # defaults; prints every URL
  chaosext lab up --jwks-ttl 10 --jwks-max-stale 30 # short cache timings: a 60 s outage expires the cache
  chaosext lab up --cache-mode hard-ttl             # misbehave on purpose: the experiment must catch it
  chaosext lab status --json | jq .fault            # where the egress fault must go
  chaosext lab down
""")
def lab() -> None:
    """The embedded lab: an Authority (OIDC/JWKS/token) and tenant services, watched by Prometheus/Alertmanager.

    \b
    Layout (defaults): authority public 127.0.0.2:8440 (the egress fault's only target), authority ops
    127.0.0.1:8441, policy/vuln/notify 127.0.0.1:8451-8453, Prometheus :9490, Alertmanager :9493.
    """


@lab.command(epilog="""\b
Examples:
  chaosext lab up
  chaosext lab up --state-dir ~/lab2 --policy-port 9451 --vuln-port 9452 --notify-port 9453 \\
      --ops-port 9441 --prometheus-port 9590 --alertmanager-port 9593 --authority-port 9440
  chaosext lab up --no-prometheus --fail-open       # no Prometheus; the security bug on purpose
  chaosext lab up --holes accept-alg-none,ignore-exp # JWT validation holes the forgery catalogue must catch
""")
@_STATE_DIR
@click.option("--authority-host", default="127.0.0.2", show_default=True,
              help="Authority public listener (JWKS, token): the address the egress fault blocks")
@click.option("--authority-port", type=int, default=8440, show_default=True)
@click.option("--ops-host", default="127.0.0.1", show_default=True,
              help="Authority ops listener (/metrics, /healthz, /admin/rotate); stays reachable during the fault")
@click.option("--ops-port", type=int, default=8441, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Listen address of the services, Prometheus and Alertmanager")
@click.option("--policy-port", type=int, default=8451, show_default=True)
@click.option("--vuln-port", type=int, default=8452, show_default=True)
@click.option("--notify-port", type=int, default=8453, show_default=True)
@click.option("--prometheus-port", type=int, default=9490, show_default=True)
@click.option("--alertmanager-port", type=int, default=9493, show_default=True)
@click.option("--services", default=",".join(SERVICES), show_default=True, callback=_services,
              help="Tenant services to run")
@click.option("--audience", default="stellaops-api", show_default=True)
@click.option("--tenants", default="", help="Authority's tenant list, e.g. t01,t02 (default: the Authority's own)")
@click.option("--rotate-overlap", type=click.IntRange(min=0), default=600, show_default=True,
              help="Seconds an old signing key stays published after a rotation")
@click.option("--jwks-ttl", type=click.IntRange(min=1), default=300, show_default=True,
              help="Services' JWKS cache soft TTL, seconds")
@click.option("--jwks-max-stale", type=click.IntRange(min=1), default=3600, show_default=True,
              help="Hard limit, seconds: after it the services fail closed (401)")
@click.option("--cache-mode", type=click.Choice(CACHE_MODES), default="lkg", show_default=True,
              help="lkg = last known good (production-like); hard-ttl / none = misbehaviour knobs")
@click.option("--no-audit", is_flag=True, help="Misbehaviour knob: write no audit events")
@click.option("--fail-open", is_flag=True,
              help="Misbehaviour knob: accept tokens it cannot verify while the JWKS is unreachable (a security bug)")
@click.option("--holes", default="", callback=_holes, metavar="LIST",
              help="Misbehaviour knobs: JWT validation holes on purpose, one per forgery class family "
                   f"(comma list of {', '.join(HOLES)}); the no-fail-open check must catch each")
@click.option("--audit-drop", default="", metavar="ACTIONS",
              help="Misbehaviour knob: never audit these actions, e.g. auth.degraded,auth.recovered (a lossy pipeline)")
@click.option("--no-refetch-after-failure", is_flag=True,
              help="Misbehaviour knob: after a failed JWKS fetch never fetch again (a service that never recovers)")
@click.option("--inject-5xx", type=click.FloatRange(min=0, max=1), default=0.0, show_default=True,
              help="Misbehaviour knob: answer this fraction of authenticated requests with 503 (an unhealthy service)")
@click.option("--rate-limit", type=click.IntRange(min=1), default=500, show_default=True,
              help="Per-tenant requests/s")
@click.option("--rate-burst", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--tenant-header", default="X-StellaOps-Tenant", show_default=True)
@click.option("--tenant-cap", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Distinct tenant label values per service before folding into __overflow__")
@click.option("--alert-for", type=click.IntRange(min=0), default=10, show_default=True,
              help="Lab override: cap every alert rule's for:/keep_firing_for: at this many seconds "
                   "(a rewritten copy in <state>/prometheus/rules; production values stay in alerts.yaml)")
@click.option("--scrape-interval", type=click.IntRange(min=1), default=2, show_default=True,
              help="Prometheus scrape and rule evaluation interval, seconds")
@click.option("--rules-dir", default="", help="Prometheus rule files to load [default: the repository's "
                                              "ops/devops/tenant/]")
@click.option("--no-prometheus", is_flag=True, help="Run without Prometheus and Alertmanager")
@click.option("--prometheus-bin", default="prometheus", show_default=True)
@click.option("--promtool-bin", default="promtool", show_default=True)
@click.option("--alertmanager-bin", default="prometheus-alertmanager", show_default=True)
@click.option("--ready-timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds to wait for all components to be ready")
@click.option("--egress", type=click.Choice(EGRESS_MODES), default="iptables", show_default=True,
              help="envoy: the services fetch the JWKS through a real Envoy whose route carries the fault filter "
                   "(fault: FAULT_VIA=envoy FAULT_TARGET=<envoy admin URL>, see `lab status --json`)")
@click.option("--envoy-port", type=int, default=8444, show_default=True, help="Envoy JWKS listener (--egress envoy)")
@click.option("--envoy-admin-port", type=int, default=9901, show_default=True, help="Envoy admin (--egress envoy)")
@click.option("--envoy-bin", default="envoy", show_default=True)
@click.option("--envoy-jwt-service", default="", help="With --egress envoy: reach this service through an Envoy that "
              "validates tokens itself (jwt_authn, remote_jwks through the faulted listener, cache_duration = "
              "--jwks-ttl)")
@click.option("--envoy-jwt-port", type=int, default=8454, show_default=True, help="Envoy jwt gateway listener")
@click.option("--json", "as_json", is_flag=True, help="Print state.json instead of the summary")
def up(as_json: bool, **options: Any) -> None:
    """Start the lab in the background and wait until every component is ready (safe to run twice)."""
    cfg = LabConfig(**options)
    began = time.monotonic()
    try:
        state = supervisor.up(cfg, echo=lambda msg: click.echo(f"chaosext lab: {msg}", err=True))
    except (LabError, StateError) as exc:
        _fail(str(exc))
        return
    if as_json:
        click.echo(supervisor.to_json(state))
        return
    if state.get("already_running"):
        click.echo(f"lab already running and healthy in {state['state_dir']}")
    else:
        click.echo(f"lab up in {time.monotonic() - began:.1f}s (state: {state['state_dir']})")
    _print_summary(state)


def _print_summary(state: dict[str, Any]) -> None:
    for name, comp in state["components"].items():
        extra = f"  (ops {comp['ops_url']})" if "ops_url" in comp else ""
        mark = ""
        if "healthy" in comp:
            mark = "  ok" if comp["healthy"] else f"  DOWN: {comp['detail']}"
        click.echo(f"  {name:<13} {comp.get('url', '?'):<26} pid {comp.get('pid', '?'):<8}{extra}{mark}")
    fault = state.get("fault") or {}
    lines = [("JWKS", state.get("jwks_url")),
             ("token", state.get("token_url") and f"POST {state['token_url']}"),
             ("client", state.get("client_id") and f"{state['client_id']} (client credentials; secret: "
                                                     f"chaosext lab status --json)"),
             ("fault target", fault and f"{fault['host']}:{fault['port']} (via {fault['via']}, "
                              f"target {fault['target']})"),
             ("envoy admin", state.get("envoy_admin_url")),
             ("audit", state.get("audit_file")),
             ("logs", state.get("state_dir") and f"{state['state_dir']}/logs/")]
    for label, value in lines:
        if value:
            click.echo(f"  {label:<13} {value}")


@lab.command(epilog="""\b
Examples:
  chaosext lab down
  chaosext lab down --state-dir ~/lab2 --grace 2
""")
@_STATE_DIR
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds between SIGTERM and SIGKILL")
def down(state_dir: str | None, grace: float) -> None:
    """Stop every lab process (also with a missing or corrupt state.json) and clear state.json."""
    try:
        result = supervisor.down(state_dir, grace=grace)
    except LabError as exc:
        _fail(str(exc))
        return
    if result["left"]:
        _fail(f"processes {result['left']} of {result['state_dir']} did not stop; kill them by hand")
    if result["stopped"]:
        click.echo(f"lab down: stopped {', '.join(result['stopped'])}")
    else:
        click.echo(f"lab down: nothing was running in {result['state_dir']}")


@lab.command(epilog="""\b
Examples:
  chaosext lab status            # one line per component; exit 1 when any is down
  chaosext lab status --json     # state.json with each component's health
""")
@_STATE_DIR
@click.option("--json", "as_json", is_flag=True, help="Print state.json with each component's health")
def status(state_dir: str | None, as_json: bool) -> None:
    """Each component's health; exit 1 when any is down or no lab is running."""
    try:
        state = supervisor.status(state_dir)
    except StateError as exc:
        _fail(str(exc))
        return
    if state is None:
        _fail(f"no lab in {resolve_state_dir(state_dir)}; start one with `chaosext lab up`")
        return
    if as_json:
        click.echo(supervisor.to_json(state))
    else:
        click.echo(f"lab in {resolve_state_dir(state_dir)}: {'healthy' if state['healthy'] else 'NOT healthy'}")
        _print_summary(state)
    if not state["healthy"]:
        if not as_json:
            click.echo("  run `chaosext lab up` to restart what is down, or `chaosext lab down` to clear it", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    lab()
