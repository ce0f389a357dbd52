"""Chaos Toolkit actions: block the services' egress to the JWKS endpoint, and restore it.

Each argument left empty falls back to the one resolver (``chaosext.core.settings``: the experiment configuration's
lower-case key, then the environment variable) for ``JWKS_URL``, ``FAULT_VIA``, ``FAULT_TARGET``, ``FAULT_MODE``,
``OUTAGE_SECONDS``, ``MAX_OUTAGE_SECONDS``, ``ENVOY_ADMIN_URL``, ``KUBE_API_URL``, ``KUBE_CONTEXT``,
``FAULT_PARALLELISM``, then to the lab defaults. The same functions back ``chaosext restore`` and
``ops/devops/tenant/jwks-chaos.sh``.
"""
import time
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosext.core import ids, kube
from chaosext.core.config import load_config
from chaosext.core.errors import ActivityMapping, ActivityResult, ConfigError, activity
from chaosext.core.procs import proc_start_time
from chaosext.core.runfile import load_run
from chaosext.core.settings import argument_or_setting, is_unset
from chaosext.egress import build_driver, watchdog
from chaosext.egress.base import (
    DEFAULT_JWKS_URL,
    MAX_OUTAGE_SECONDS,
    Driver,
    FaultError,
    FaultRecord,
    FaultSpec,
    delete_record,
    load_records,
    make_spec,
    parse_jwks_url,
    resolve_addresses,
    save_record,
)
from chaosext.egress.iptables import runner_for
from chaosext.load.k6 import runs_dir

__all__ = ["block_jwks_egress", "restore_jwks_egress"]


def settings(
    jwks_url: str = "",
    via: str = "",
    target: str = "",
    mode: str = "",
    duration_seconds: int | str | None = None,
    max_duration_seconds: int | str | None = None,
    verify_timeout_seconds: float = 1.0,
    envoy_admin_url: str = "",
    kube_api_url: str = "",
    kube_context: str = "",
    driver_options: dict[str, Any] | None = None,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Arguments merged with the configuration fallbacks and defaults (no side effects)."""
    c = configuration or {}
    options = {
        "verify_timeout": float(verify_timeout_seconds),
        "envoy_admin_url": argument_or_setting(envoy_admin_url, c, "ENVOY_ADMIN_URL", ""),
        "kube_api_url": argument_or_setting(kube_api_url, c, "KUBE_API_URL", ""),
        "kube_context": argument_or_setting(kube_context, c, "KUBE_CONTEXT", ""),
        "parallelism": argument_or_setting(None, c, "FAULT_PARALLELISM", ""),
        **(driver_options or {}),
    }
    return {
        "jwks_url": argument_or_setting(jwks_url, c, "JWKS_URL", DEFAULT_JWKS_URL),
        "via": argument_or_setting(via, c, "FAULT_VIA", "iptables"),
        "target": argument_or_setting(target, c, "FAULT_TARGET", "local"),
        "mode": argument_or_setting(mode, c, "FAULT_MODE", "drop"),
        "duration_seconds": argument_or_setting(duration_seconds, c, "OUTAGE_SECONDS", 300),
        "max_duration_seconds": argument_or_setting(max_duration_seconds, c, "MAX_OUTAGE_SECONDS",
                                                    MAX_OUTAGE_SECONDS),
        "options": {k: v for k, v in options.items() if v not in ("", None)},
    }


def _active_record(via: str, target: str, jwks_url: str) -> FaultRecord | None:
    now = time.time()
    for rec in load_records():
        s = rec["spec"]
        if (s["via"], s["target"], s["jwks_url"]) == (via, target, jwks_url) and s["expires_at"] > now:
            return rec
    return None


def _config_str(configuration: Configuration, key: str) -> str:
    """A string value the run put into the configuration ('' when absent or an unresolved ``${...}``)."""
    value = (configuration or {}).get(key)
    return "" if not isinstance(value, str) or is_unset(value) else value


def run_fault_id(configuration: Configuration) -> str:
    """The run id this experiment run's fault carries: the safety control's run id, else the id of a fault
    ``block_jwks_egress`` applied earlier in this same run ('' when the run applied none)."""
    return _config_str(configuration, "chaosext_run_id") or _config_str(configuration, "chaosext_fault_run_id")


def fault_record(run_id: str) -> FaultRecord | None:
    """The fault record of ``run_id`` on this machine, or None."""
    for rec in load_records():
        if rec["spec"]["run_id"] == run_id:
            return rec
    return None


def _heartbeat_settings(heartbeat_file: str, grace_seconds: Any, configuration: Configuration) -> tuple[str, float]:
    """The heartbeat file and HEARTBEAT_GRACE (argument, else configuration, else 10 s), checked before any change."""
    heartbeat = str(argument_or_setting(heartbeat_file, configuration, "chaosext_heartbeat_file", ""))
    value = argument_or_setting(grace_seconds or "", configuration, "heartbeat_grace", watchdog.HEARTBEAT_GRACE)
    try:
        grace = float(value)
    except (TypeError, ValueError):
        grace = -1.0
    if grace <= 0:
        raise FaultError(f"HEARTBEAT_GRACE={value!r}: give the seconds without a heartbeat after which the fault is "
                         f"lifted (> 0, default 10)")
    return heartbeat, grace


@activity
def block_jwks_egress(
    jwks_url: str = "",
    via: str = "iptables",
    target: str = "local",
    mode: str = "drop",
    duration_seconds: int = 300,
    dry_run: bool = False,
    max_duration_seconds: int = 3600,
    verify: bool = True,
    verify_timeout_seconds: float = 1.0,
    use_watchdog: bool = True,
    run_id: str = "",
    envoy_admin_url: str = "",
    kube_api_url: str = "",
    kube_context: str = "",
    driver_options: ActivityMapping = None,
    heartbeat_file: str = "",
    heartbeat_grace_seconds: float = 0,
    k6_dir: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> ActivityResult:
    """Make the JWKS endpoint unreachable from the target until restored or ``duration_seconds`` pass.

    jwks_url: the JWKS URL (host and port are blocked; every A/AAAA record). Empty: configuration ``JWKS_URL``,
    else ``http://127.0.0.2:8440/.well-known/jwks.json``. via: ``iptables`` | ``envoy`` | ``k8s-networkpolicy`` |
    ``istio``. target: iptables ``local`` | ``netns:<name|glob>`` | ``pid:<pid>`` | ``k8s-pod:<ns>/<pod|selector>``,
    or several comma-separated (applied in parallel, ``FAULT_PARALLELISM`` at once, all or none);
    envoy: the admin URL; k8s-networkpolicy / istio: ``<namespace>/<label selector>``. mode: ``drop`` (timeouts,
    like an unreachable network) or ``reject`` (refused at once, like a dead host). duration_seconds: the deadline,
    enforced by the kernel (iptables ``-m time --datestop``) and by a detached watchdog (``use_watchdog``), capped
    by ``max_duration_seconds``. dry_run: return the exact commands / API calls without making them. verify: check
    from inside the target that the fault bites the way ``mode`` says, and undo it if it does not.
    run_id: the fault's id (default: the experiment run's ``chaosext_run_id``, else the active fault's on this target
    and endpoint, else a new one). Blocking again with the same run id reuses the fault (one rule set); a fault of
    ANOTHER run on the same target and endpoint is refused.
    heartbeat_file (default: the experiment run's ``chaosext_heartbeat_file``): the run's heartbeat; the watchdog
    lifts the fault, and stops the k6 runs of this run id (in ``k6_dir``, default the run's), once it is
    ``heartbeat_grace_seconds`` old (0: the configuration's HEARTBEAT_GRACE, else 10): the dead-man switch. Returns
    what was done, incl. ``run_id``.
    """
    s = settings(jwks_url, via, target, mode, duration_seconds, max_duration_seconds, verify_timeout_seconds,
                 envoy_admin_url, kube_api_url, kube_context, driver_options, configuration)
    run_id = run_id or _config_str(configuration, "chaosext_run_id")
    existing = _active_record(s["via"], s["target"], s["jwks_url"])
    if existing and not run_id:
        run_id = existing["spec"]["run_id"]  # no run of our own named: blocking again reuses the active fault
    if existing and existing["spec"]["run_id"] != run_id:
        raise FaultError(f"fault {existing['spec']['run_id']} of another run is already active on {s['target']} for "
                         f"{s['jwks_url']}; one run per target at a time (let it end, or `chaosext restore --run-id "
                         f"{existing['spec']['run_id']}`)")
    if existing and existing["spec"]["mode"] != s["mode"]:
        raise FaultError(f"a {existing['spec']['mode']} fault {existing['spec']['run_id']} is already active on "
                         f"{s['target']}; restore it first (chaosext restore --target {s['target']})")
    spec = make_spec(s["jwks_url"], s["via"], s["target"], s["mode"], s["duration_seconds"],
                     s["max_duration_seconds"], options=s["options"],
                     run_id=run_id,
                     expires_at=existing["spec"]["expires_at"] if existing else 0.0,
                     resolve=s["via"] in ("iptables", "k8s-networkpolicy"))
    heartbeat, grace = _heartbeat_settings(heartbeat_file, heartbeat_grace_seconds, configuration)
    if heartbeat and not k6_dir:
        k6_dir = str(runs_dir("", configuration))
    driver = build_driver(spec.via, spec.options, secrets)
    result: dict[str, Any] = {"run_id": spec.run_id, "via": spec.via, "target": spec.target, "mode": spec.mode,
                              "jwks_url": spec.jwks_url, "host": spec.host, "port": spec.port,
                              "addresses": list(spec.addresses), "duration_seconds": spec.duration_seconds,
                              "expires_at": spec.expires_at, "reused": bool(existing), "dry_run": bool(dry_run)}
    if dry_run:
        result["commands"] = driver.describe(spec)
        return result
    save_record(spec, status="applying")
    try:
        result["applied"] = driver.apply(spec)
    except BaseException:
        delete_record(spec.run_id)
        raise
    if isinstance(configuration, dict):
        configuration["chaosext_fault_run_id"] = spec.run_id  # this run's restore finds its own fault
    pid = 0
    if use_watchdog and not (existing and watchdog.find(spec.run_id)):
        # the watchdog reverts with the same Kubernetes credentials: in its environment, never its argv or a file
        pid = watchdog.spawn(spec, heartbeat=heartbeat, grace=grace, k6_dir=k6_dir, env=kube.credential_env(secrets))
    result["watchdog_pid"] = pid or (watchdog.find(spec.run_id) or [0])[0]
    save_record(spec, status="active", watchdog_pid=result["watchdog_pid"],
                watchdog_start_time=proc_start_time(result["watchdog_pid"]) if result["watchdog_pid"] else "")
    if verify:
        check = driver.verify(spec)
        result["verification"] = check
        if not check.get("blocked"):
            _undo(driver, spec)
            raise FaultError(f"the fault did not take effect from the target's point of view, so it was removed: "
                             f"{check}")
    return result


def target_problem(via: str, target: str, configuration: Configuration = None, secrets: Secrets = None) -> str:
    """'' when the fault's target exists and is reachable for the driver; else what to do. Changes nothing."""
    s = settings("", via, target, configuration=configuration)
    try:
        driver = build_driver(s["via"], s["options"], secrets)
        if s["via"] == "iptables":
            runner_for(s["target"], s["options"], secrets=secrets)
        else:
            driver.find_orphans(s["target"])  # reads the admin API / the Kubernetes API: reachable and allowed
    except FaultError as exc:
        return f"FAULT_TARGET={target!r} ({via}): {exc}"
    return ""


def _undo(driver: Driver, spec: FaultSpec) -> dict[str, Any]:
    out = driver.revert(spec)
    watchdog.stop(spec.run_id)
    delete_record(spec.run_id)
    return out


def _endpoints(jwks_url: str) -> set[str]:
    """Every ``addr:port`` the JWKS URL resolves to (empty if it does not resolve: then nothing narrows a sweep)."""
    host, port = parse_jwks_url(jwks_url)
    try:
        return {f"{a}:{port}" for a in resolve_addresses(host, port)}
    except FaultError:
        return set()


def _in_scope(orphan: dict[str, Any], scope: set[str]) -> bool:
    """An orphan is swept when no scope is set, or when it blocks one of the scope's endpoints. Drivers that cannot
    tell which endpoint a fault blocks (no ``endpoints`` key) are always in scope."""
    endpoints = orphan.get("endpoints")
    return not scope or endpoints is None or bool(scope & set(endpoints))


def restore(
    via: str,
    target: str,
    run_id: str = "",
    jwks_url: str = "",
    all_on_target: bool = False,
    dry_run: bool = False,
    verify: bool = True,
    options: dict[str, Any] | None = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Remove recorded faults matching via/target (or ``run_id``); with none recorded, every chaosext fault found on
    the target by its tags that blocks this ``jwks_url`` (every one when no URL is given or ``all_on_target``: the
    panic button). Tolerant: nothing to remove is success. ``secrets``: the Kubernetes drivers' credentials.
    ``run_id`` must be a run id (FaultError otherwise: it is never matched loosely nor turned into a path)."""
    if run_id:
        try:
            ids.check_run_id(run_id)
        except ConfigError as exc:
            raise FaultError(str(exc)) from None

    def wanted(rec: FaultRecord) -> bool:
        s = FaultSpec.from_dict(rec["spec"])
        if run_id:
            return s.run_id == run_id
        return s.via == via and s.target == target and (not jwks_url or s.jwks_url == jwks_url)

    records = [r for r in load_records() if wanted(r)]
    removed: list[dict[str, Any]] = []
    for rec in records:
        spec = FaultSpec.from_dict(rec["spec"])
        driver = build_driver(spec.via, spec.options, secrets)
        if dry_run:
            removed.append({"run_id": spec.run_id, "via": spec.via, "target": spec.target,
                            "commands": driver.describe_revert(spec)})
            continue
        out = _undo(driver, spec)
        entry: dict[str, Any] = {"run_id": spec.run_id, "via": spec.via, "target": spec.target,
                                 "removed": out.get("removed", []), "spread": out.get("spread")}
        if verify:
            entry["verification"] = driver.verify(spec)
        removed.append(entry)
    left: list[dict[str, Any]] = []
    if run_id and not records and not dry_run:
        # no record (deleted, or made on another machine): find this run's rules by their tags alone
        driver = build_driver(via, options or {}, secrets)
        for orphan in driver.find_orphans(target):
            if orphan["run_id"] == run_id:
                removed.append({**orphan, "removed": driver.remove_orphan(target, run_id)})
                watchdog.stop(run_id)
        left = [o for o in driver.find_orphans(target) if o["run_id"] == run_id]
    if (all_on_target or not records) and not run_id:
        driver = build_driver(via, options or {}, secrets)
        scope = set() if all_on_target or not jwks_url else _endpoints(jwks_url)
        for orphan in driver.find_orphans(target):
            if not _in_scope(orphan, scope):
                continue
            if dry_run:
                removed.append({**orphan, "commands": [f"remove every object tagged chaosext:{orphan['run_id']}"]})
                continue
            gone = driver.remove_orphan(target, orphan["run_id"])
            watchdog.stop(orphan["run_id"])
            delete_record(orphan["run_id"])
            removed.append({**orphan, "removed": gone})
        if not dry_run:
            left = [o for o in driver.find_orphans(target) if _in_scope(o, scope)]
    return {"restored": removed, "left": left, "nothing_to_restore": not removed, "dry_run": bool(dry_run)}


@activity
def restore_jwks_egress(
    jwks_url: str = "",
    via: str = "iptables",
    target: str = "local",
    run_id: str = "",
    reason: str = "",
    dry_run: bool = False,
    verify: bool = True,
    envoy_admin_url: str = "",
    kube_api_url: str = "",
    kube_context: str = "",
    driver_options: ActivityMapping = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> ActivityResult:
    """Undo THIS run's JWKS egress fault, and only that one.

    run_id: the fault to remove; default the experiment run's (``chaosext_run_id``, or the id ``block_jwks_egress``
    returned earlier in this run). In an experiment run (a configuration with ``chaosext_*`` keys) a run that applied
    no fault restores nothing, so a refused or failed run can never lift another run's outage; faults of other runs
    stay. Called outside a run (no such configuration), it removes what is recorded for via/target, else the faults
    found on the target by their tags that block this JWKS endpoint. ``chaosext restore`` is the manual way and
    ``chaosext restore --all`` the panic button that sweeps everything. Restoring twice succeeds. reason: why this
    restore happens now (e.g. the abort guard), recorded in the result and the journal. With verify, reports (from the
    target) that the endpoint answers again. Fails only if a rule/object of this run could not be removed.
    """
    run_id = run_id if run_id and not run_id.startswith("${") else run_fault_id(configuration)
    in_run = isinstance(configuration, dict) and any(str(k).startswith("chaosext_") for k in configuration)
    if not run_id and in_run:
        return {"restored": [], "left": [], "nothing_to_restore": True, "dry_run": bool(dry_run),
                "note": "this run applied no fault: nothing to restore"}
    s = settings(jwks_url, via, target, "", None, None, 1.0, envoy_admin_url, kube_api_url, kube_context,
                 driver_options, configuration)
    # outside an experiment run (no chaosext_* configuration): what is recorded for via/target, else what the tags show
    out = restore(s["via"], s["target"], run_id=run_id, jwks_url="" if run_id or not jwks_url else s["jwks_url"],
                  dry_run=dry_run, verify=verify, options=s["options"], secrets=secrets)
    out["run_id"] = run_id
    out["reason"] = reason or _outage_reason(configuration)
    if out["left"]:
        raise FaultError(f"chaosext faults left on {s['target']} after restore: {out['left']}; remove them with "
                         f"`chaosext restore --all --via {s['via']} --target {s['target']}`")
    return out


def _outage_reason(configuration: Configuration) -> str:
    """Why the outage ended, from the run file the watch step wrote ('' outside an experiment run)."""
    if not _config_str(configuration, "chaosext_run_id"):
        return ""
    try:
        outage = load_run(load_config(configuration).run_dir).outage
    except ValueError:
        return ""
    if outage is None:
        return ""
    return outage.reason or ("planned end of the outage" if outage.end is not None else "")
