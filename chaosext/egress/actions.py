"""Chaos Toolkit actions: block the services' egress to the JWKS endpoint, and restore it.

Every argument defaults to "unset" and then comes from the run's settings (``chaosext.run.context``: ``JWKS_URL``,
``FAULT_VIA``, ``FAULT_TARGET``, ``FAULT_MODE``, ``OUTAGE_SECONDS`` and its deadline, ``MAX_OUTAGE_SECONDS``,
``ENVOY_ADMIN_URL``, ``KUBE_API_URL``, ``KUBE_CONTEXT``, ``FAULT_PARALLELISM``), so the experiment's steps need no
arguments. The same functions back ``chaosext restore`` and ``ops/devops/tenant/jwks-chaos.sh``.

A fault belongs to a run: in an experiment run it carries the run's id; outside one (an experiment without the
safety control, a Python caller) a fault record names the process that applied it, and that process's restore finds
it again (:func:`restore_jwks_egress`).
"""
import time
from dataclasses import dataclass, field
from typing import Any

from chaosext.core import kube
from chaosext.core.errors import ActivityMapping, ActivityResult, ConfigError
from chaosext.core.failures import ANSWER_MODES, UNREACHABLE, failure_problem
from chaosext.core.limits import max_deadline_seconds
from chaosext.core.names import check_run_id
from chaosext.core.procs import proc_start_time
from chaosext.core.settings import Configuration, Secrets, is_unset
from chaosext.egress import build_driver, watchdog
from chaosext.egress.base import (
    Driver,
    FaultError,
    FaultRecord,
    FaultSpec,
    delete_record,
    load_records,
    make_spec,
    owned_by_this_process,
    parse_jwks_url,
    resolve_addresses,
    save_record,
)
from chaosext.egress.iptables import runner_for
from chaosext.load.k6 import runs_dir
from chaosext.run.context import RunContext, run_context

#: the Chaos Toolkit actions; ``block`` / ``restore_run`` are the same for a run context (the safety control, the CLI)
__all__ = ["block_jwks_egress", "restore_jwks_egress"]


@dataclass(frozen=True)
class FaultSettings:
    """Where and how the fault goes: the activity's arguments over the run's settings."""

    jwks_url: str
    via: str
    target: str
    mode: str
    options: dict[str, Any] = field(default_factory=dict)


def fault_settings(ctx: RunContext, jwks_url: str = "", via: str = "", target: str = "", mode: str = "",
                   envoy_admin_url: str = "", kube_api_url: str = "", kube_context: str = "",
                   driver_options: dict[str, Any] | None = None, verify_timeout_seconds: float = 1.0) -> FaultSettings:
    """The arguments that are set, else the run's settings (no side effects)."""
    cfg = ctx.cfg

    def given(value: Any, default: Any) -> Any:
        return default if is_unset(value) else value

    options = {
        "verify_timeout": float(verify_timeout_seconds),
        "envoy_admin_url": given(envoy_admin_url, cfg.envoy_admin_url),
        "kube_api_url": given(kube_api_url, cfg.kube_api_url),
        "kube_context": given(kube_context, cfg.kube_context),
        "parallelism": cfg.fault_parallelism,
        **(driver_options or {}),
    }
    return FaultSettings(jwks_url=given(jwks_url, cfg.jwks_url), via=given(via, cfg.fault_via),
                         target=given(target, cfg.fault_target), mode=given(mode, cfg.fault_mode),
                         options={k: v for k, v in options.items() if v not in ("", None)})


def failure_options(ctx: RunContext, failure: str, via: str) -> dict[str, Any]:
    """What the driver needs to make ``failure`` (JWKS_FAILURE), kept in the fault's spec options: the mode and the
    answer's parameters; rotation-during-outage on iptables lets chaosext's own marked connections through (its
    new-key tokens)."""
    cfg = ctx.cfg
    options: dict[str, Any] = {"jwks_failure": failure}
    if failure in ANSWER_MODES:
        options["answer"] = {"slow_seconds": cfg.jwks_slow_seconds, "error_status": cfg.jwks_error_status,
                             "malformed": cfg.jwks_malformed}
    if failure == "rotation-during-outage" and via == "iptables":
        options["exempt_mark"] = True
    return options


def _active_record(via: str, target: str, jwks_url: str) -> FaultRecord | None:
    now = time.time()
    for rec in load_records():
        s = rec["spec"]
        if (s["via"], s["target"], s["jwks_url"]) == (via, target, jwks_url) and s["expires_at"] > now:
            return rec
    return None


def fault_record(run_id: str) -> FaultRecord | None:
    """The fault record of ``run_id`` on this machine, or None."""
    for rec in load_records():
        if rec["spec"]["run_id"] == run_id:
            return rec
    return None


def run_fault(ctx: RunContext) -> FaultSpec | None:
    """The fault this run applied: the run id's, else (outside a run) the last one this very process applied."""
    if ctx.run_id:
        rec = fault_record(ctx.run_id)
    else:
        own = [r for r in load_records() if owned_by_this_process(r)]
        rec = max(own, key=lambda r: r["recorded_at"]) if own else None
    return FaultSpec.from_dict(rec["spec"]) if rec else None


def _grace(ctx: RunContext, grace_seconds: float) -> float:
    """HEARTBEAT_GRACE (the argument when > 0, else the run's), checked before any change."""
    grace = float(grace_seconds) if grace_seconds else ctx.cfg.heartbeat_grace
    if grace <= 0:
        raise FaultError(f"HEARTBEAT_GRACE={grace!r}: give the seconds without a heartbeat after which the fault is "
                         f"lifted (> 0, default 10)")
    return grace


def block_jwks_egress(
    jwks_url: str = "",
    via: str = "",
    target: str = "",
    mode: str = "",
    deadline_seconds: int = 0,
    dry_run: bool = False,
    max_outage_seconds: int = 0,
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
    jwks_failure: str = "",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> ActivityResult:
    """Make the JWKS endpoint fail the way JWKS_FAILURE says (default: unreachable) from the target, until restored
    or its deadline passes.

    Every argument left unset comes from the run's settings. jwks_url: the JWKS URL (its host and port are blocked;
    every A/AAAA record). via: ``iptables`` | ``envoy`` | ``k8s-networkpolicy`` | ``istio``. target: iptables
    ``local`` | ``netns:<name|glob>`` | ``pid:<pid>`` | ``k8s-pod:<ns>/<pod|selector>``, or several comma-separated
    (applied in parallel, ``FAULT_PARALLELISM`` at once, all or none); envoy: the admin URL; k8s-networkpolicy /
    istio: ``<namespace>/<label selector>``. mode: ``drop`` (timeouts, like an unreachable network) or ``reject``
    (refused at once, like a dead host). deadline_seconds: how long the fault may live at most (default: the run's
    OUTAGE_SECONDS plus its safety margin), enforced by the kernel (iptables ``-m time --datestop``) and by a detached
    watchdog (``use_watchdog``); it may not exceed the deadline of MAX_OUTAGE_SECONDS (``max_outage_seconds``).
    dry_run: return the exact commands / API calls without making them. verify: check from inside the target that
    the fault bites the way ``mode`` says, and undo it if it does not.
    run_id: the fault's id (default: the experiment run's, else the active fault's on this target and endpoint, else
    a new one). Blocking again with the same run id reuses the fault (one rule set); a fault of ANOTHER run on the
    same target and endpoint is refused.
    heartbeat_file (default: the experiment run's heartbeat): the watchdog lifts the fault, and stops the k6 runs of
    this run id (in ``k6_dir``, default the run's), once it is ``heartbeat_grace_seconds`` old (0: the run's
    HEARTBEAT_GRACE, default 10): the dead-man switch. jwks_failure (default: the run's JWKS_FAILURE): unreachable
    (``mode`` says how), slow, http-error, empty-keys, malformed, rotated, tls-untrusted, rotation-during-outage,
    cold-start-during-outage (docs/failure-modes.md); one the driver cannot make is refused before any change, naming
    what it can make. Returns what was done, incl. ``run_id``.
    """
    return block(run_context(configuration, secrets), jwks_url, via, target, mode, deadline_seconds, dry_run,
                 max_outage_seconds, verify, verify_timeout_seconds, use_watchdog, run_id, envoy_admin_url,
                 kube_api_url, kube_context, driver_options, heartbeat_file, heartbeat_grace_seconds, k6_dir,
                 jwks_failure)


def block(ctx: RunContext, jwks_url: str = "", via: str = "", target: str = "", mode: str = "",
          deadline_seconds: int = 0, dry_run: bool = False, max_outage_seconds: int = 0, verify: bool = True,
          verify_timeout_seconds: float = 1.0, use_watchdog: bool = True, run_id: str = "", envoy_admin_url: str = "",
          kube_api_url: str = "", kube_context: str = "", driver_options: dict[str, Any] | None = None,
          heartbeat_file: str = "", heartbeat_grace_seconds: float = 0, k6_dir: str = "",
          jwks_failure: str = "") -> dict[str, Any]:
    """:func:`block_jwks_egress` for a run context (the safety control's dry-run plan, the ``egress`` CLI)."""
    secrets = ctx.secrets
    s = fault_settings(ctx, jwks_url, via, target, mode, envoy_admin_url, kube_api_url, kube_context,
                       driver_options, verify_timeout_seconds)
    failure = ctx.cfg.jwks_failure if is_unset(jwks_failure) else jwks_failure
    if problem := failure_problem(failure, s.via, s.target, s.jwks_url):
        raise FaultError(problem)  # before anything changes, naming what the driver can make
    cap = max_deadline_seconds(max_outage_seconds or ctx.cfg.max_outage_seconds)
    deadline = deadline_seconds or ctx.cfg.deadline_seconds
    run_id = run_id or ctx.run_id
    existing = _active_record(s.via, s.target, s.jwks_url)
    if existing and not run_id:
        run_id = existing["spec"]["run_id"]  # no run of our own named: blocking again reuses the active fault
    if existing and existing["spec"]["run_id"] != run_id:
        raise FaultError(f"fault {existing['spec']['run_id']} of another run is already active on {s.target} for "
                         f"{s.jwks_url}; one run per target at a time (let it end, or `chaosext restore --run-id "
                         f"{existing['spec']['run_id']}`)")
    if existing and (existing["spec"]["mode"], existing["spec"].get("options", {}).get("jwks_failure", UNREACHABLE)) \
            != (s.mode, failure):
        raise FaultError(f"a {existing['spec']['mode']} fault {existing['spec']['run_id']} is already active on "
                         f"{s.target}; restore it first (chaosext restore --target {s.target})")
    options = {**s.options, **failure_options(ctx, failure, s.via)}
    spec = make_spec(s.jwks_url, s.via, s.target, s.mode, deadline, cap, options=options, run_id=run_id,
                     expires_at=existing["spec"]["expires_at"] if existing else 0.0,
                     resolve=s.via in ("iptables", "k8s-networkpolicy"))
    heartbeat = heartbeat_file or ctx.heartbeat_file
    grace = _grace(ctx, heartbeat_grace_seconds)
    if heartbeat and not k6_dir and ctx.run_dir is not None:
        k6_dir = str(runs_dir(str(ctx.run_dir / "k6")))
    driver = build_driver(spec.via, spec.options, secrets)
    result: dict[str, Any] = {"run_id": spec.run_id, "via": spec.via, "target": spec.target, "mode": spec.mode,
                              "jwks_failure": failure, "jwks_url": spec.jwks_url, "host": spec.host, "port": spec.port,
                              "addresses": list(spec.addresses), "deadline_seconds": spec.duration_seconds,
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


def target_problem(ctx: RunContext) -> str:
    """'' when the run's fault target exists and is reachable for its driver; else what to do. Changes nothing."""
    s = fault_settings(ctx)
    try:
        driver = build_driver(s.via, s.options, ctx.secrets)
        if s.via == "iptables":
            runner_for(s.target, s.options, secrets=ctx.secrets)
        else:
            driver.find_orphans(s.target)  # reads the admin API / the Kubernetes API: reachable and allowed
    except FaultError as exc:
        return f"FAULT_TARGET={s.target!r} ({s.via}): {exc}"
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
            check_run_id(run_id, "run id")
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


def restore_jwks_egress(
    jwks_url: str = "",
    via: str = "",
    target: str = "",
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

    run_id: the fault to remove; default the experiment run's. Outside a run (no run id: an experiment without the
    safety control, a Python caller) the faults this very process applied on via/target; a process that applied
    none restores nothing when it runs an experiment (a refused or failed run can never lift another run's outage),
    and, called from Python without an experiment's configuration, what is recorded for via/target, else the faults
    found on the target by their tags that block this JWKS endpoint. ``chaosext restore`` is the manual way and
    ``chaosext restore --all`` the panic button that sweeps everything. Restoring twice succeeds. reason: why this
    restore happens now (default: why the run's outage ended, e.g. the abort guard), recorded in the result and the
    journal. With verify, reports (from the target) that the endpoint answers again. Fails only if a rule/object of
    this run could not be removed.
    """
    experiment = any(str(k).startswith("chaosext_") for k in (configuration or {}))
    return restore_run(run_context(configuration, secrets), jwks_url, via, target, run_id, reason, dry_run, verify,
                       envoy_admin_url, kube_api_url, kube_context, driver_options, experiment)


def restore_run(ctx: RunContext, jwks_url: str = "", via: str = "", target: str = "", run_id: str = "",
                reason: str = "", dry_run: bool = False, verify: bool = True, envoy_admin_url: str = "",
                kube_api_url: str = "", kube_context: str = "", driver_options: dict[str, Any] | None = None,
                experiment: bool = True) -> dict[str, Any]:
    """:func:`restore_jwks_egress` for a run context (the safety control's always-restore)."""
    secrets = ctx.secrets
    s = fault_settings(ctx, jwks_url, via, target, "", envoy_admin_url, kube_api_url, kube_context, driver_options)
    run_ids = [run_id] if run_id and not is_unset(run_id) else [ctx.run_id] if ctx.run_id else [
        r["spec"]["run_id"] for r in load_records()
        if owned_by_this_process(r) and (r["spec"]["via"], r["spec"]["target"]) == (s.via, s.target)]
    if not run_ids and experiment:
        return {"restored": [], "left": [], "nothing_to_restore": True, "dry_run": bool(dry_run),
                "run_id": "", "note": "this run applied no fault: nothing to restore"}
    outs = [restore(s.via, s.target, run_id=rid, dry_run=dry_run, verify=verify, options=s.options,
                    secrets=secrets) for rid in run_ids] or [
        restore(s.via, s.target, jwks_url="" if not jwks_url else s.jwks_url, dry_run=dry_run, verify=verify,
                options=s.options, secrets=secrets)]
    out: dict[str, Any] = {"restored": [r for o in outs for r in o["restored"]],
                           "left": [r for o in outs for r in o["left"]], "dry_run": bool(dry_run)}
    out["nothing_to_restore"] = not out["restored"]
    out["run_id"] = ",".join(run_ids)
    outage = ctx.record().outage
    out["reason"] = reason or (outage.reason or ("planned end of the outage" if outage.end is not None else "")
                               if outage is not None else "")
    if out["left"]:
        raise FaultError(f"chaosext faults left on {s.target} after restore: {out['left']}; remove them with "
                         f"`chaosext restore --all --via {s.via} --target {s.target}`")
    return out
