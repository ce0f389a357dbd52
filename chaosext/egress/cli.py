"""``chaosext restore``: the panic button, and the ``python3 -m chaosext.egress`` command group behind
``ops/devops/tenant/jwks-chaos.sh`` (block / restore / status / run)."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from chaosext.core.config import load_config
from chaosext.core.errors import ChaosextError
from chaosext.core.names import FAULT_MODES, RUN_ID_RE
from chaosext.egress.actions import FaultSettings, block_jwks_egress, fault_settings
from chaosext.egress.actions import restore as restore_faults
from chaosext.egress.base import VIAS, FaultError, load_records
from chaosext.run.context import RunContext

__all__ = ["restore", "egress"]

_via = click.option("--via", type=click.Choice(VIAS), default=None, help="driver (default: iptables, or $FAULT_VIA)")
_target = click.option("--target", default=None, help="local | netns:<name|glob> | pid:<pid> | k8s-pod:<ns>/<sel>, "
                       "comma-separated for several; envoy: "
                       "admin URL; k8s-networkpolicy/istio: <ns>/<selector> (default: local, or $FAULT_TARGET)")
_kube = [
    click.option("--envoy-admin-url", default="", help="Envoy admin URL (envoy driver; default $ENVOY_ADMIN_URL)"),
    click.option("--kube-api-url", default="", help="Kubernetes API URL without auth, e.g. from `kubectl proxy` "
                 "(default $KUBE_API_URL; else KUBECONFIG / KUBERNETES_HOST + KUBERNETES_API_KEY / in-pod)"),
    click.option("--kube-context", default="", help="kubeconfig context (default $KUBE_CONTEXT, else "
                 "$KUBERNETES_CONTEXT, else the current one)"),
]


def _kube_opts(f: Any) -> Any:
    for opt in reversed(_kube):
        f = opt(f)
    return f


def _stop_orphaned_k6(k6_dir: str, dry_run: bool) -> list[dict[str, Any]]:
    """Stop (or, dry run, list) the k6 runs whose owner process is gone or whose heartbeat is stale: those under
    ``k6_dir`` (or $CHAOSEXT_K6_DIR), else under every experiment run's directory of the run base
    (``<run base>/<run id>/k6``) and the base's own ``k6``."""
    from chaosext.load import k6

    cfg = load_config()
    if k6_dir or os.environ.get("CHAOSEXT_K6_DIR"):
        bases = [k6.runs_dir(k6_dir)]
    else:
        root = Path(cfg.run_base)
        bases = [root / "k6", *sorted(p / "k6" for p in root.iterdir() if RUN_ID_RE.fullmatch(p.name))] \
            if root.is_dir() else []
    return [item for base in bases for item in k6.stop_orphans(base, grace=cfg.heartbeat_grace, dry_run=dry_run)]


def _settings(via: str | None, target: str | None, envoy_admin_url: str = "", kube_api_url: str = "",
              kube_context: str = "") -> FaultSettings:
    """The command's options over the settings from the environment (and the running lab)."""
    return fault_settings(RunContext(load_config()), "", via or "", target or "", envoy_admin_url=envoy_admin_url,
                          kube_api_url=kube_api_url, kube_context=kube_context)


def _panic(via: str | None, target: str | None, run_id: str, all_: bool, dry_run: bool, envoy_admin_url: str,
           kube_api_url: str, kube_context: str, as_json: bool, k6_dir: str = "") -> int:
    s = _settings(via, target, envoy_admin_url, kube_api_url, kube_context)
    try:
        out = restore_faults(s.via, s.target, run_id=run_id, all_on_target=all_, dry_run=dry_run, verify=False,
                             options=s.options)
    except ChaosextError as exc:  # FaultError, an unsafe state directory, a run id that is not one
        click.echo(f"restore: {exc}", err=True)
        return 2
    if all_:
        try:
            out["k6"] = _stop_orphaned_k6(k6_dir, dry_run)
        except ChaosextError as exc:  # an unsafe k6 runs dir: nothing in it is signalled
            click.echo(f"restore: k6 runs not swept: {exc}", err=True)
            return 2
    if as_json:
        click.echo(json.dumps(out, indent=1))
    else:
        for item in out.get("k6", []):
            click.echo(f"{'would stop' if dry_run else 'stopped'} orphaned k6 run {item['run_id']} (pid {item['pid']}, "
                       f"experiment run {item['owner_run_id'] or '?'}): {item['orphan_reason']}")
        for item in out["restored"]:
            verb = "would remove" if dry_run else "removed"
            where = f"{item.get('via', s.via)} on {item.get('target', s.target)}"
            click.echo(f"{verb} fault {item['run_id']} ({where})")
            for line in item.get("commands", []) + item.get("removed", []):
                click.echo(f"  {line}")
        if not out["restored"]:
            hint = "" if all_ else "; --all also searches by tags"
            click.echo(f"nothing to restore ({s.via} on {s.target}{hint})")
        for item in out["left"]:
            click.echo(f"STILL PRESENT: {item}", err=True)
    return 1 if out["left"] else 0


@click.command("restore", epilog="""\b
Examples:
  chaosext restore                                   # this host's recorded faults (iptables, local)
  chaosext restore --all                             # + every chaosext rule found by its tags, no record needed
  chaosext restore --all --dry-run --target netns:lab   # show what would go
  chaosext restore --all --via k8s-networkpolicy --target tenancy/app=orders
  chaosext restore --all --via envoy --target http://127.0.0.1:9901
  chaosext restore --all --k6-dir .chaosext-run/k6   # + orphaned k6 runs recorded there
""")
@click.option("--all", "all_", is_flag=True, help="also remove every chaosext fault found on the target by its tags")
@_via
@_target
@click.option("--run-id", default="", help="only this fault")
@click.option("--dry-run", is_flag=True, help="print what would be removed, remove nothing")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--k6-dir", default="", help="k6 runs dir searched by --all for orphaned k6 (default $CHAOSEXT_K6_DIR, "
              "else every <run base>/<run id>/k6)")
@_kube_opts
def restore(all_: bool, via: str | None, target: str | None, run_id: str, dry_run: bool, as_json: bool, k6_dir: str,
                envoy_admin_url: str, kube_api_url: str, kube_context: str) -> None:
    """Panic button: remove the JWKS egress faults chaosext made on a target and say what was removed.

    Without --all: the faults recorded in $CHAOSEXT_STATE_DIR (default ~/.chaosext/faults) for that via/target,
    or, with none recorded, every fault found by tags. Exit 0 when nothing chaosext made is left.
    --all also stops orphaned k6 runs: those recorded in the k6 runs dir (--k6-dir, else $CHAOSEXT_K6_DIR, else
    every experiment run's <run base>/<run id>/k6) whose owner process is gone or whose owner's heartbeat is older
    than $HEARTBEAT_GRACE (default 10 s).
    """
    sys.exit(_panic(via, target, run_id, all_, dry_run, envoy_admin_url, kube_api_url, kube_context, as_json,
                    k6_dir))



@click.group("egress", context_settings={"help_option_names": ["-h", "--help"]})
def egress() -> None:
    """Block / restore the services' egress to the JWKS endpoint without Chaos Toolkit."""


def _block(jwks_url: str, via: str | None, target: str | None, mode: str | None, duration: int | None,
           max_duration: int | None,
           dry_run: bool, envoy_admin_url: str, kube_api_url: str, kube_context: str, heartbeat: str = "",
           heartbeat_grace: float = 0) -> dict[str, Any]:
    # an option not given is unset (0): the settings then give OUTAGE_SECONDS' deadline / MAX_OUTAGE_SECONDS
    for flag, value in (("--duration", duration), ("--max-duration", max_duration)):
        if value is not None and value <= 0:
            raise FaultError(f"{flag} {value} must be > 0 seconds (the fault needs a deadline), or leave it out for "
                             f"the settings' value")
    return block_jwks_egress(jwks_url=jwks_url, via=via or "", target=target or "", mode=mode or "", dry_run=dry_run,
                             envoy_admin_url=envoy_admin_url, kube_api_url=kube_api_url, kube_context=kube_context,
                             heartbeat_file=heartbeat, heartbeat_grace_seconds=heartbeat_grace,
                             deadline_seconds=duration or 0, max_outage_seconds=max_duration or 0)


_block_opts = [
    click.option("--jwks-url", default="", help="JWKS URL (default $JWKS_URL or the lab's)"),
    _via,
    _target,
    click.option("--mode", type=click.Choice(FAULT_MODES), default=None, help="drop = timeouts, reject = refused"),
    click.option("--duration", type=int, default=None, help="how long the fault lives, seconds (default the "
                 "deadline of $OUTAGE_SECONDS: it plus max(15 s, 5 %%))"),
    click.option("--max-duration", type=int, default=None, help="the longest outage allowed (default "
                 "$MAX_OUTAGE_SECONDS or 3600); --duration may not exceed its deadline"),
    click.option("--dry-run", is_flag=True, help="print the exact commands / API calls, change nothing"),
    click.option("--heartbeat", default="", help="heartbeat file: the watchdog lifts the fault once it is older than "
                 "--heartbeat-grace (`run` renews it itself every 2 s; with `block`, the caller must)"),
    click.option("--heartbeat-grace", type=float, default=0, help="seconds without a heartbeat (default "
                 "$HEARTBEAT_GRACE or 10)"),
]


def _block_options(f: Any) -> Any:
    for opt in reversed(_block_opts + _kube):
        f = opt(f)
    return f


@egress.command("block")
@_block_options
def block_cmd(**kw: Any) -> None:
    """Block the JWKS endpoint from the target until restored or the deadline passes."""
    try:
        out = _block(**kw)
    except FaultError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(out, indent=1))


@egress.command("status")
@click.option("--json", "as_json", is_flag=True)
@_via
@_target
@_kube_opts
def status_cmd(as_json: bool, via: str | None, target: str | None, **kw: Any) -> None:
    """Faults recorded here and faults found on the target by tags; exit 3 if a block is active."""
    from chaosext.egress import build_driver

    s = _settings(via, target, **kw)
    try:
        found = build_driver(s.via, s.options).find_orphans(s.target)
    except FaultError as exc:
        raise click.ClickException(str(exc)) from None
    recorded = [r["spec"] for r in load_records()]
    if as_json:
        click.echo(json.dumps({"active": found, "recorded": recorded}, indent=1))
    else:
        click.echo(f"{s.via} on {s.target}: {len(found)} active chaosext fault(s)")
        for f in found:
            click.echo(f"  {f}")
        for r in recorded:
            left = max(0, int(r["expires_at"] - time.time()))
            click.echo(f"recorded {r['run_id']}: {r['via']} {r['target']} {r['mode']} {r['jwks_url']} ({left}s left)")
    sys.exit(3 if found else 0)


@egress.command("restore")
@click.option("--all", "all_", is_flag=True, help="also remove every chaosext fault found on the target by tags")
@_via
@_target
@click.option("--run-id", default="")
@click.option("--dry-run", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@_kube_opts
def egress_restore_cmd(all_: bool, via: str | None, target: str | None, run_id: str, dry_run: bool, as_json: bool,
                       envoy_admin_url: str, kube_api_url: str, kube_context: str) -> None:
    """Same as `chaosext restore`."""
    sys.exit(_panic(via, target, run_id, all_, dry_run, envoy_admin_url, kube_api_url, kube_context, as_json))


@egress.command("run")
@_block_options
def run_cmd(**kw: Any) -> None:
    """Block, wait --duration seconds, restore; Ctrl-C / SIGTERM restore at once."""
    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signum)

    signal.signal(signal.SIGTERM, stop)
    pulse = None
    if kw["heartbeat"] and not kw["dry_run"]:
        from chaosext.run.heartbeat import Heartbeat

        pulse = Heartbeat(kw["heartbeat"]).start()  # dies with this process: the watchdog then lifts the fault
    try:
        out = _block(**kw)
    except FaultError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(out, indent=1))
    if kw["dry_run"]:
        return
    rc = 0
    try:
        time.sleep(max(0.0, out["expires_at"] - time.time()))
    except KeyboardInterrupt:
        click.echo("interrupted: restoring now", err=True)
        rc = 130
    finally:
        rc = _panic(out["via"], out["target"], out["run_id"], False, False, kw["envoy_admin_url"],
                    kw["kube_api_url"], kw["kube_context"], False) or rc
        if pulse is not None:
            pulse.stop()
    sys.exit(rc)
