"""The safety control for the JWKS outage experiment (a Chaos Toolkit control module).

Declared in the experiment's ``controls`` block::

    {"name": "chaosext-safety", "provider": {"type": "python", "module": "chaosext.safety.controls"}}

- before the experiment: resolve the settings once (``load_config``), run the static half of the one pre-flight
  (``chaosext.safety.preflight``: values, limits, the fault target's form, approval for non-lab targets), take the
  per-target lock (one run per target at a time), run the live half (the fault's target and tools, k6, the JWKS, the
  IdP and a token for every tenant, the services, Prometheus / Alertmanager, the audit source: exactly what
  ``chaosext doctor`` checks), then — only when all of that holds — start the run: its directory (0700) and record
  holding the resolved settings (every activity's ``run_context`` reads them there), the heartbeat the dead-man switch
  watches, and k6, which then warms the baseline window up until it holds BASELINE_MIN_REQUESTS. Any problem raises
  ``InterruptExecution`` before anything was changed (or after undoing what this run started). Under ``chaos run
  --dry ...`` it prints the planned timeline and the exact fault commands instead, and starts nothing.
- after every activity: a SIGTERM (which Chaos Toolkit would swallow inside an activity) interrupts the run; a fault
  that could not be applied or verified ends the run at once ("fault not applied"); an outage the abort guard cut
  short is restored right away by the method's restore step (the watch only decides, it never changes the system).
- after the experiment (completed, failed, interrupted): restore THIS run's fault and stop THIS run's k6, whatever
  the rollbacks did, then stop the heartbeat and release the lock. A run that started nothing restores nothing.
"""
import logging
import time
from typing import Any

import requests
from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration, Experiment, Journal, Secrets, Settings

from chaosext.core import signals
from chaosext.core.config import load_config
from chaosext.core.errors import ConfigError
from chaosext.core.findings import Finding
from chaosext.core.poll import retry_until
from chaosext.egress.actions import block
from chaosext.load.actions import start
from chaosext.metrics import prom
from chaosext.outage.evidence import save_run_evidence
from chaosext.run.context import (
    DRY_RUN_KEY,
    RUN_BASE_KEY,
    RUN_ID_KEY,
    RunContext,
    create_run,
    new_run_context,
    run_context,
)
from chaosext.run.heartbeat import Heartbeat
from chaosext.run.memory import forget
from chaosext.run.record import Baseline, FaultInfo, K6Info
from chaosext.run.store import new_run_id
from chaosext.safety import lock as locks
from chaosext.safety.approval import approval_problem
from chaosext.safety.cleanup import restore_fault, stop_load
from chaosext.safety.preflight import live_findings, refusals, static_findings

__all__ = ["configure_control", "before_experiment_control", "after_activity_control", "after_experiment_control",
           "approval_problem"]

logger = logging.getLogger("chaostoolkit")


def configure_control(experiment: Experiment = None, configuration: Configuration = None, secrets: Secrets = None,
                      settings: Settings = None, **kwargs: Any) -> None:
    """Wrap the SIGTERM handler (chaostoolkit-lib installed its own just before)."""
    signals.reset()
    signals.install()


def _is_dry(context: Any) -> str:
    """The ``chaos run --dry`` mode ('' when not a dry run)."""
    dry = (context or {}).get("dry") if isinstance(context, dict) else None
    return str(getattr(dry, "value", dry) or "")


def _refuse(findings: list[Finding], what: str = "not starting, nothing was changed") -> InterruptExecution:
    for f in findings:
        logger.error("pre-flight: %s", f.sentence())
    return InterruptExecution(f"chaosext safety: {what}. " + "; ".join(f.sentence() for f in findings))


def _plan(ctx: RunContext) -> list[str]:
    """The planned timeline and the exact fault commands / API calls (dry run)."""
    cfg = ctx.cfg
    planned = block(ctx, dry_run=True)
    lines = [f"t+0s      start k6 ({cfg.k6_rate} req/s over {len(cfg.tenants)} tenants) and warm up the baseline "
             f"window ({cfg.baseline_seconds}s, >= {cfg.baseline_min_requests} requests)",
             f"t+~{cfg.baseline_seconds}s  baseline judged; then block the JWKS ({cfg.fault_via} on "
             f"{cfg.fault_target}, mode {cfg.fault_mode}):"]
    lines += [f"            {c}" for c in planned.get("commands", [])]
    lines += [f"            the fault's own deadline: outage + {cfg.deadline_seconds - cfg.outage_seconds} s "
              f"(kernel/watchdog); dead-man switch: heartbeat lost for {cfg.heartbeat_grace:.0f} s",
              f"t+outage  watch {cfg.outage_seconds}s, then restore and judge the outage",
              f"t+end     recovery within {cfg.recovery_seconds}s; stop k6"]
    return lines


def _wait_for_baseline_traffic(ctx: RunContext) -> float:
    """Wait until the baseline window holds BASELINE_MIN_REQUESTS (k6 warming up); returns the requests seen."""
    cfg = ctx.cfg
    p = prom.prom_of(ctx)

    def requests_in_window() -> float:
        now = time.time()
        try:
            return float(prom.error_rate_between(p, now - cfg.baseline_seconds, now)["requests"])
        except (requests.RequestException, RuntimeError, ValueError):
            return 0.0

    return retry_until(requests_in_window, lambda seen: seen >= cfg.baseline_min_requests,
                       time.time() + cfg.baseline_seconds + 15, 1.0)


def _take_lock(ctx: RunContext) -> None:
    """One run per target at a time: take the target's lock (and a cluster target's Lease) or refuse, naming the
    running one (changes nothing)."""
    cfg = ctx.cfg
    ends_at = time.time() + cfg.baseline_seconds + cfg.deadline_seconds + cfg.recovery_seconds
    key = locks.lock_key(cfg.fault_via, cfg.fault_target, cfg.jwks_url)
    try:
        lease = locks.cluster_lease(cfg.fault_via, cfg.fault_target, key,
                                    {"kube_api_url": cfg.kube_api_url, "kube_context": cfg.kube_context}, ctx.secrets)
        held = locks.acquire(key, ctx.run_id, {"ends_at": ends_at, "outage_seconds": cfg.outage_seconds},
                             lease=lease)
    except locks.LockHeld as exc:
        logger.error("pre-flight: %s", exc)
        raise InterruptExecution(f"chaosext safety: not starting, nothing was changed. {exc}") from None
    ctx.memory.lock = held
    if held.took_over:
        logger.warning("chaosext safety: %s", held.message)


def _start_run(ctx: RunContext) -> dict[str, Any]:
    """Create the run, start the heartbeat, start k6 and warm the baseline up. Undoes itself on failure (the lock
    is already held; the tokens are already in the run's memory)."""
    cfg = ctx.cfg
    try:
        create_run(ctx)
        lock = ctx.memory.lock
        renew = getattr(lock, "renew", None)  # the cluster Lease is renewed with every beat
        ctx.memory.heartbeat = Heartbeat(ctx.heartbeat_file, on_beat=renew).start()
        duration = cfg.baseline_seconds + cfg.deadline_seconds + cfg.recovery_seconds + cfg.alert_wait_seconds + 120
        k6 = start(ctx, duration=f"{duration}s")
        with ctx.edit() as run:
            run.k6 = K6Info.from_json(k6)
        seen = _wait_for_baseline_traffic(ctx)
        with ctx.edit() as run:
            run.baseline = Baseline(judged_at=time.time(), window_seconds=cfg.baseline_seconds, requests=seen)
    except InterruptExecution:
        _finish(ctx)
        raise
    except Exception as exc:
        _finish(ctx)
        raise InterruptExecution(f"chaosext safety: could not start the run ({type(exc).__name__}: {exc}); "
                                 f"nothing was left changed") from exc
    return {"k6": k6.get("run_id"), "baseline_requests": seen}


def before_experiment_control(context: Experiment = None, configuration: Configuration = None,
                              secrets: Secrets = None, **kwargs: Any) -> None:
    """Run the pre-flight and refuse to start (InterruptExecution) before any change; then start the run."""
    signals.install()
    if not isinstance(configuration, dict):
        raise InterruptExecution("chaosext safety: not starting, nothing was changed. the experiment has no "
                                 "configuration block")
    try:
        cfg = load_config(configuration)  # once per run: every activity reads the run's record from here on
    except ConfigError as exc:
        logger.error("configuration: %s", exc)
        raise InterruptExecution(f"chaosext safety: not starting, nothing was changed. {exc}") from None
    dry = _is_dry(context)
    ctx = RunContext(cfg, secrets, dry)
    if failed := refusals(static_findings(ctx)):
        raise _refuse(failed)
    if dry:
        for line in _plan(ctx):
            logger.info("[dry run] %s", line)
        configuration[DRY_RUN_KEY] = dry
        return
    ctx = new_run_context(cfg, new_run_id(), secrets)
    _take_lock(ctx)
    if failed := refusals(live_findings(ctx)):
        _finish(ctx)
        raise _refuse(failed)
    configuration.update({RUN_ID_KEY: ctx.run_id, RUN_BASE_KEY: cfg.run_base})
    started = _start_run(ctx)
    logger.info("chaosext safety: run %s started (target %s%s, outage %ss, services %s, k6 %s, baseline window "
                "holds %d requests)", ctx.run_id, cfg.target_name, " = lab" if cfg.is_lab_target else ", approved",
                cfg.outage_seconds, ",".join(cfg.services), started["k6"], started["baseline_requests"])


def after_activity_control(context: dict[str, Any] | None = None, state: Any = None,
                           configuration: Configuration = None, secrets: Secrets = None, **kwargs: Any) -> None:
    """Stop the run on SIGTERM, or at once when the fault could not be applied and verified."""
    if signals.terminating():
        raise InterruptExecution("SIGTERM received: stopping the experiment; restoring JWKS egress and stopping k6")
    name = (context or {}).get("name") if isinstance(context, dict) else None
    if name == "block-jwks-egress" and isinstance(state, dict) and state.get("status") != "succeeded":
        why = "".join(state.get("exception") or []).strip().splitlines()[-1:] or ["no output"]
        try:
            with run_context(configuration, secrets).edit() as run:
                run.fault = FaultInfo(applied=False, error=why[0])
        except (ValueError, OSError):
            pass
        raise InterruptExecution(f"fault not applied: {why[0]} -- nothing to watch; ending the run")


def _finish(ctx: RunContext) -> dict[str, Any]:
    """Undo what this run started: its fault, its k6, its heartbeat and its lock (each step never raises)."""
    out: dict[str, Any] = {"egress": restore_fault(ctx), "load": stop_load(ctx)}
    mem = ctx.memory
    if mem.heartbeat is not None:
        mem.heartbeat.stop()
        mem.heartbeat = None
    if mem.key_server is not None:  # the run's one jku/x5u key listener
        mem.key_server.close()
        mem.key_server = None
    if mem.lock is not None:
        try:
            mem.lock.release()
        except OSError as exc:
            logger.warning("could not release the target lock: %s", exc)
        mem.lock = None
    return out


def after_experiment_control(context: Experiment = None, state: Journal = None, configuration: Configuration = None,
                             secrets: Secrets = None, **kwargs: Any) -> None:
    """Always: restore this run's fault and stop this run's k6, even after an interruption; then release the run."""
    try:
        ctx = run_context(configuration, secrets)
    except ValueError:
        signals.uninstall()
        return  # the run never started anything (the configuration did not even parse)
    if ctx.run_id:
        out = _finish(ctx)  # restore first: nothing may delay lifting the fault
        evidence = save_run_evidence(ctx)  # the same file judge-outage named, now with the recovery window
        if not evidence.get("ok"):
            logger.warning("chaosext safety: evidence for the report not saved: %s", evidence.get("error"))
        egress, load = out.get("egress", {}), out.get("load", {})
        logger.info("chaosext safety: after run %s: egress %s, k6 %s", ctx.run_id,
                    "restored" if egress.get("restored") else f"NOT restored ({egress.get('error')})",
                    "stopped" if load.get("stopped") else f"not stopped ({load.get('error')})")
        forget(ctx.run_id)
    signals.uninstall()
