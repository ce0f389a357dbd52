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
from pathlib import Path
from typing import Any

import requests
from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration, Experiment, Journal, Secrets, Settings

from chaosext.core import journal_record, signals
from chaosext.core.config import load_config
from chaosext.core.errors import ConfigError
from chaosext.core.findings import Finding
from chaosext.core.names import RUN_ID_RE
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
from chaosext.run.record import Baseline, Closed, FaultInfo, K6Info, load_run
from chaosext.run.store import new_run_id
from chaosext.safety import lock as locks
from chaosext.safety.approval import approval_problem
from chaosext.safety.cleanup import restore_fault, stop_load
from chaosext.safety.preflight import live_findings, refusals, static_findings, warnings

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
             f"t+~{cfg.baseline_seconds}s  baseline judged; then make the JWKS fail ({cfg.jwks_failure}) with "
             f"{cfg.fault_via} on {cfg.fault_target} (mode {cfg.fault_mode}):"]
    lines += [f"            {c}" for c in planned.get("commands", [])]
    lines += [f"            the fault's own deadline: outage + {cfg.deadline_seconds - cfg.outage_seconds} s "
              f"(kernel/watchdog); dead-man switch: heartbeat lost for {cfg.heartbeat_grace:.0f} s",
              f"t+outage  watch {cfg.outage_seconds}s, then restore and judge the outage",
              f"t+end     recovery within {cfg.recovery_seconds}s; stop k6"]
    return lines


def _wait_for_baseline_traffic(ctx: RunContext) -> float:
    """Wait until the baseline window holds BASELINE_MIN_REQUESTS and traffic of every service the run drives (k6
    warming up), counted the way the baseline probe counts; returns the requests seen."""
    cfg = ctx.cfg
    p = prom.prom_of(ctx)

    def requests_in_window() -> tuple[float, bool]:
        now = time.time()
        try:
            res = prom.error_rate_between(p, now - cfg.baseline_seconds, now, tuple(cfg.services))
        except (requests.RequestException, RuntimeError, ValueError):
            return 0.0, False
        return float(res["requests"]), not res["problems"]

    seen, _ = retry_until(requests_in_window, lambda r: r[0] >= cfg.baseline_min_requests and r[1],
                          time.time() + cfg.baseline_seconds + 15, 1.0)
    return seen


def _previous_end(ctx: RunContext) -> float:
    """When the last earlier run on the same target (fault method, target, JWKS) in this run base was closed (0: none
    found)."""
    cfg = ctx.cfg
    base = Path(cfg.run_base)
    latest = 0.0
    for d in base.iterdir() if base.is_dir() else ():
        if d.name == ctx.run_id or not RUN_ID_RE.fullmatch(d.name) or d.is_symlink():
            continue
        run = load_run(d)
        same = all(run.config.get(k) == getattr(cfg, k) for k in ("fault_via", "fault_target", "jwks_url"))
        if same and run.closed is not None:
            latest = max(latest, run.closed.at)
    return latest


def _cool_down(ctx: RunContext) -> None:
    """The baseline window must not hold the previous run on this target (its outage, its recovery): wait until
    BASELINE_SECONDS have passed since it was closed."""
    wait = _previous_end(ctx) + ctx.cfg.baseline_seconds - time.time()
    if wait <= 0:
        return
    logger.info("chaosext safety: cool-down %.0fs: the previous run on this target ended %.0fs ago and the baseline "
                "window (%ss) must not hold it", wait, ctx.cfg.baseline_seconds - wait, ctx.cfg.baseline_seconds)
    end = time.time() + wait
    while time.time() < end:
        if signals.terminating():
            raise InterruptExecution("SIGTERM received during the cool-down: nothing was changed")
        time.sleep(min(1.0, max(0.0, end - time.time())))


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
        if ctx.run_dir is not None:
            journal_record.new_key(ctx.run_dir)  # seals this run's journal at the end (chaosext verdict checks it)
        lock = ctx.memory.lock
        renew = getattr(lock, "renew", None)  # the cluster Lease is renewed with every beat
        ctx.memory.heartbeat = Heartbeat(ctx.heartbeat_file, on_beat=renew).start()
        duration = cfg.baseline_seconds + cfg.deadline_seconds + cfg.recovery_seconds + cfg.alert_wait_seconds + 120
        k6 = start(ctx, duration=f"{duration}s")
        with ctx.edit() as run:
            run.k6 = K6Info.from_json(k6)
        _cool_down(ctx)
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
    """Run the pre-flight and refuse to start (InterruptExecution) before any change; then start the run.

    chaoslib logs and IGNORES any other exception a control raises and runs the experiment anyway, without this
    control's lock, approval, heartbeat and restore: so every unexpected error here becomes an InterruptExecution."""
    try:
        _before_experiment(context, configuration, secrets)
    except InterruptExecution:
        raise
    except Exception as exc:
        logger.error("chaosext safety: internal error before the run: %s", exc, exc_info=True)
        raise InterruptExecution(f"chaosext safety: not starting: the safety control failed ({type(exc).__name__}: "
                                 f"{exc}); nothing was injected") from exc


def _before_experiment(context: Experiment, configuration: Configuration, secrets: Secrets) -> None:
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
    static = static_findings(ctx)
    if failed := refusals(static):
        raise _refuse(failed)
    for f in warnings(static):
        logger.warning("pre-flight: %s", f.sentence())
    if dry:
        for line in _plan(ctx):
            logger.info("[dry run] %s", line)
        configuration[DRY_RUN_KEY] = dry
        return
    ctx = new_run_context(cfg, new_run_id(), secrets)
    _take_lock(ctx)
    try:
        live = live_findings(ctx)
    except BaseException:
        _finish(ctx)  # the lock is held: give it back whatever went wrong
        raise
    if failed := refusals(live):
        _finish(ctx)
        raise _refuse(failed)
    for f in warnings(live):
        logger.warning("pre-flight: %s", f.sentence())
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
        egress, load = out.get("egress", {}), out.get("load", {})
        closed = Closed(at=time.time(), fault_restored=bool(egress.get("restored")),
                        error=str(egress.get("error") or ""), k6_stopped=bool(load.get("stopped")))
        try:
            with ctx.edit() as run:
                run.closed = closed
        except OSError as exc:
            logger.warning("chaosext safety: could not record the run's end: %s", exc)
        evidence = save_run_evidence(ctx)  # the same file judge-outage named, now with the recovery window
        if not evidence.get("ok"):
            logger.warning("chaosext safety: evidence for the report not saved: %s", evidence.get("error"))
        logger.info("chaosext safety: after run %s: egress %s, k6 %s", ctx.run_id,
                    "restored" if egress.get("restored") else f"NOT restored ({egress.get('error')})",
                    "stopped" if load.get("stopped") else f"not stopped ({load.get('error')})")
        if isinstance(state, dict):  # the journal Chaos Toolkit writes after this hook: the verdict reads it
            _record_journal(ctx, state, closed)
        forget(ctx.run_id)
    signals.uninstall()


def _record_journal(ctx: RunContext, journal: dict[str, Any], closed: Closed) -> None:
    """Name the run in the journal with how it was closed (its ``chaosext`` extension entry), then keep the
    journal's judged view, that entry's ``closed`` included, sealed with this run's key, in the run record
    (``chaosext verdict`` cross-checks one against the other: chaosext.core.journal_record). Never raises: a journal
    that could not be sealed still says how the run was closed, and will not pass."""
    entry = {"name": journal_record.EXTENSION, "run_id": ctx.run_id,
             "run_dir": str(ctx.run_dir.resolve()) if ctx.run_dir is not None else "", "closed": closed.to_json()}
    others = [e for e in journal.get("extensions") or []
              if not (isinstance(e, dict) and e.get("name") == journal_record.EXTENSION)]
    journal["extensions"] = [*others, entry]
    if ctx.run_dir is None:
        return
    try:
        key = journal_record.read_key(ctx.run_dir)
        view = journal_record.judged_view(journal)
        with ctx.edit() as run:
            run.journal_record = {"view": view, "hmac": journal_record.seal(key, ctx.run_id, view)}
    except (OSError, ValueError) as exc:
        logger.warning("chaosext safety: the journal of run %s could not be recorded (%s): its verdict cannot be "
                       "cross-checked and will not pass", ctx.run_id, exc)
