"""`chaosext lab up | down | status`: the embedded lab on loopback (see docs/lab.md)."""
from __future__ import annotations

import dataclasses
import sys
import time
import typing
from typing import Any

import click

from chaosext.core.labstate import STATE_DIR_ENV, StateError, resolve_state_dir
from chaosext.lab import supervisor
from chaosext.lab.plan import HOLES, SERVICE_KNOBS, SERVICES, LabConfig, LabError

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


def _service_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    bad = [n for n in names if n not in (*SERVICES, "all")]
    if bad:
        raise click.BadParameter(f"{','.join(bad)} unknown; give a comma list from {','.join(SERVICES)}, or all")
    return names


def _comma_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


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


def _lab_options(command: Any) -> Any:
    """One click option per :class:`LabConfig` field (``x_y`` -> ``--x-y``), from the field's own default and help:
    the settings are declared once, in LabConfig."""
    hints = typing.get_type_hints(LabConfig)
    for f in reversed(dataclasses.fields(LabConfig)):
        meta, name = f.metadata, "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        kw: dict[str, Any] = {"help": meta.get("help") or None, "show_default": meta.get("show_default", True)}
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if f.name == "state_dir":
            command = click.option(name, envvar=STATE_DIR_ENV, default=None, show_envvar=True, help=kw["help"])(command)
            continue
        if kind is bool:
            command = click.option(name, is_flag=True, help=kw["help"])(command)
            continue
        if typing.get_origin(kind) is tuple:
            callback = {"services": _services, "holes": _holes, **dict.fromkeys(SERVICE_KNOBS, _service_list)}.get(
                f.name, _comma_list)
            command = click.option(name, default=",".join(f.default), callback=callback, **kw)(command)
            continue
        if meta.get("choices"):
            kw["type"] = click.Choice(meta["choices"])
        elif kind in (int, float) and (meta.get("min") is not None or meta.get("max") is not None):
            rng = click.IntRange if kind is int else click.FloatRange
            kw["type"] = rng(min=meta.get("min"), max=meta.get("max"))
        else:
            kw["type"] = kind
        command = click.option(name, default=f.default, **kw)(command)
    return command


@lab.command(epilog="""\b
Examples:
  chaosext lab up
  chaosext lab up --state-dir ~/lab2 --policy-port 9451 --vuln-port 9452 --notify-port 9453 \\
      --ops-port 9441 --prometheus-port 9590 --alertmanager-port 9593 --authority-port 9440
  chaosext lab up --no-prometheus --fail-open       # no Prometheus; the security bug on purpose
  chaosext lab up --holes accept-alg-none,ignore-exp # JWT validation holes the forgery catalogue must catch
""")
@_lab_options
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
