"""The safety control for the JWKS outage experiment (a Chaos Toolkit control module).

Declared in the experiment's ``controls`` block::

    {"name": "chaosext-safety", "provider": {"type": "python", "module": "chaosext.safety.controls"}}

- before the experiment: parse and validate the whole configuration (values, the outage plus its deadline margin
  within the cap, unique service names, the fault target exists, approval for non-lab targets), check Prometheus /
  Alertmanager / services / JWKS / k6, then — only when all of that holds — start the run: a run id, the per-target
  lock (one run per target at a time), the run directory (0700), the heartbeat the dead-man switch watches, the probe
  tokens (kept in memory), and k6, which then warms the baseline window up until it holds BASELINE_MIN_REQUESTS. Any
  problem raises ``InterruptExecution`` before anything was changed (or after undoing what this run started). Under
  ``chaos run --dry ...`` it prints the planned timeline and the exact fault commands instead, and starts nothing.
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

from chaosext.auth import keyserver
from chaosext.auth.forgery import parse_skip
from chaosext.auth.probes import ensure_tokens
from chaosext.core import backends, kube, labid, runfile, signals
from chaosext.core.config import ExperimentConfig, load_config, validate
from chaosext.core.heartbeat import Heartbeat
from chaosext.core.judging import retry_until
from chaosext.core.limits import deadline_seconds
from chaosext.egress.actions import block_jwks_egress
from chaosext.egress.base import FaultError, split_targets
from chaosext.load.actions import start_k6
from chaosext.metrics import contract, prom
from chaosext.outage.evidence import save_run_evidence
from chaosext.safety import lock as locks
from chaosext.safety.cleanup import restore_fault, stop_load
from chaosext.safety.preflight import check_reachable

__all__ = ["configure_control", "before_experiment_control", "after_activity_control", "after_experiment_control",
           "check_configuration", "approval_problem"]

logger = logging.getLogger("chaostoolkit")

#: what this process started for the current run (lock, heartbeat), released after the experiment
_RUN: dict[str, Any] = {}


def approval_problem(cfg: Any) -> str:
    """'' when the target is the local lab or CHAOSEXT_APPROVE names it; else what to do."""
    if cfg.is_lab_target:
        return ""

    approved = {a.strip() for a in cfg.approve.split(",") if a.strip()}
    try:
        approved |= set(split_targets(cfg.approve))  # "netns:a,b" approves netns:a and netns:b
    except FaultError:
        pass  # host names etc.: the plain comma list above
    if cfg.target_name in approved:
        return ""
    if cfg.fault_via == "iptables" and cfg.fault_target != "local":
        try:
            if set(split_targets(cfg.fault_target)) <= approved:  # every target of a list is approved
                return ""
        except FaultError:
            pass
    return (f"target {cfg.target_name!r} (FAULT_VIA={cfg.fault_via}, FAULT_TARGET={cfg.fault_target}) is not the "
            f"local lab; to inject the fault there, set CHAOSEXT_APPROVE={cfg.target_name}")


def check_configuration(configuration: Configuration = None, network: bool = True) -> list[str]:
    """Every problem with the configuration (parse, values, approval, then reachability); [] when ready."""
    try:
        cfg = load_config(configuration)
    except ValueError as exc:
        return [str(exc)]
    problems = validate(cfg)
    try:
        parse_skip(cfg.forgery_skip)
    except ValueError as exc:
        problems.append(str(exc))
    if gate := approval_problem(cfg):
        problems.append(gate)
    problems += labid.token_transport_problems(cfg, configuration)  # tokens only over https outside the lab
    problems += keyserver.config_problems(configuration)  # FORGERY_KEY_URL / FORGERY_KEY_LISTEN
    if not problems and network:
        problems = check_reachable(cfg, configuration)
    return problems


def configure_control(experiment: Experiment = None, configuration: Configuration = None, secrets: Secrets = None,
                      settings: Settings = None, **kwargs: Any) -> None:
    """Wrap the SIGTERM handler (chaostoolkit-lib installed its own just before)."""
    signals.reset()
    signals.install()


def _is_dry(context: Any) -> str:
    """The ``chaos run --dry`` mode ('' when not a dry run)."""
    dry = (context or {}).get("dry") if isinstance(context, dict) else None
    return str(getattr(dry, "value", dry) or "")


def _plan(cfg: ExperimentConfig, configuration: Configuration = None) -> list[str]:
    """The planned timeline and the exact fault commands / API calls (dry run)."""
    planned = block_jwks_egress(jwks_url=cfg.jwks_url, via=cfg.fault_via, target=cfg.fault_target,
                                mode=cfg.fault_mode, duration_seconds=deadline_seconds(cfg.outage_seconds),
                                dry_run=True, max_duration_seconds=cfg.max_outage_seconds,
                                configuration={**(configuration or {}), **_resolved(cfg)})  # + ENVOY_ADMIN_URL ...
    lines = [f"t+0s      start k6 ({cfg.k6_rate} req/s over {len(cfg.tenants)} tenants) and warm up the baseline "
             f"window ({cfg.baseline_seconds}s, >= {cfg.baseline_min_requests} requests)",
             f"t+~{cfg.baseline_seconds}s  baseline judged; then block the JWKS ({cfg.fault_via} on "
             f"{cfg.fault_target}, mode {cfg.fault_mode}):"]
    lines += [f"            {c}" for c in planned.get("commands", [])]
    margin = deadline_seconds(cfg.outage_seconds) - cfg.outage_seconds
    lines += [f"            the fault's own deadline: outage + {margin} s "
              f"(kernel/watchdog); dead-man switch: heartbeat lost for {cfg.heartbeat_grace:.0f} s",
              f"t+outage  watch {cfg.outage_seconds}s, then restore and judge the outage",
              f"t+end     recovery within {cfg.recovery_seconds}s; stop k6"]
    return lines


def _resolved(cfg: ExperimentConfig) -> dict[str, Any]:
    """Resolved values for ``${...}`` substitution in the activities (empty settings mean "the lab's value")."""
    return {
        "jwks_url": cfg.jwks_url, "authority_url": cfg.authority_url, "prometheus_url": cfg.prometheus_url,
        "alertmanager_url": cfg.alertmanager_url, "audit_source": cfg.audit_source,
        "service_urls": ",".join(f"{k}={v}" for k, v in cfg.services.items()),
        "chaosext_run_dir": cfg.run_base, "fault_deadline_seconds": deadline_seconds(cfg.outage_seconds),
        "max_outage_seconds": cfg.max_outage_seconds,
    }


def _wait_for_baseline_traffic(cfg: ExperimentConfig) -> float:
    """Wait until the baseline window holds BASELINE_MIN_REQUESTS (k6 warming up); returns the requests seen."""
    def requests_in_window() -> float:
        now = time.time()
        try:
            return float(prom.error_rate_between(cfg.prometheus_url, now - cfg.baseline_seconds, now)["requests"])
        except (requests.RequestException, RuntimeError, ValueError):
            return 0.0

    return retry_until(requests_in_window, lambda seen: seen >= cfg.baseline_min_requests,
                       time.time() + cfg.baseline_seconds + 15, 1.0)


def _take_lock(cfg: ExperimentConfig, run_id: str) -> None:
    """One run per target at a time: take the target's lock or refuse, naming the running one (changes nothing)."""
    ends_at = time.time() + cfg.baseline_seconds + deadline_seconds(cfg.outage_seconds) \
        + cfg.recovery_seconds
    key = locks.lock_key(cfg.fault_via, cfg.fault_target, cfg.jwks_url)
    try:
        _RUN["lock"] = locks.acquire(key, run_id, {"ends_at": ends_at, "outage_seconds": cfg.outage_seconds})
    except locks.LockHeld as exc:
        logger.error("pre-flight: %s", exc)
        raise InterruptExecution(f"chaosext safety: not starting, nothing was changed. {exc}") from None
    if _RUN["lock"].took_over:
        logger.warning("chaosext safety: %s", _RUN["lock"].message)


def _start_run(cfg: ExperimentConfig, configuration: dict[str, Any], secrets: Secrets = None) -> dict[str, Any]:
    """Create the run, start the heartbeat, fetch tokens, start k6 and warm the baseline up. Undoes itself on
    failure (the lock is already held)."""
    run_id = cfg.run_id
    try:
        runfile.new_run(cfg.run_base, run_id)
        _RUN["heartbeat"] = Heartbeat(str(runfile.run_directory(cfg.run_base, run_id) / "heartbeat"))
        _RUN["heartbeat"].start()
        tenants = sorted(ensure_tokens(cfg, secrets, configuration))
        duration = cfg.baseline_seconds + deadline_seconds(cfg.outage_seconds) \
            + cfg.recovery_seconds + cfg.alert_wait_seconds + 120
        k6 = start_k6(duration=f"{duration}s", owner_run_id=run_id, configuration=configuration, secrets=secrets)
        with runfile.edit_run(cfg.run_dir) as run:
            run.k6 = runfile.K6Info.from_json(k6)
        seen = _wait_for_baseline_traffic(cfg)
        with runfile.edit_run(cfg.run_dir) as run:
            run.baseline = runfile.Baseline(judged_at=time.time(), window_seconds=cfg.baseline_seconds, requests=seen)
    except InterruptExecution:
        _finish(cfg)
        raise
    except Exception as exc:
        _finish(cfg)
        raise InterruptExecution(f"chaosext safety: could not start the run ({type(exc).__name__}: {exc}); "
                                 f"nothing was left changed") from exc
    return {"run_id": run_id, "tenants": tenants, "k6": k6.get("run_id"), "baseline_requests": seen}


def before_experiment_control(context: Experiment = None, configuration: Configuration = None,
                              secrets: Secrets = None, **kwargs: Any) -> None:
    """Validate everything and refuse to start (InterruptExecution) before any change; then start the run."""
    signals.install()

    try:
        backends.register(configuration, secrets)  # backend credentials for every probe of this run (never logged)
        kube.register(secrets)  # KUBERNETES_* credentials for the steps not handed the secrets (watch, restore)
        contract.register(configuration)  # the METRIC_* names every probe reads from Prometheus
    except (backends.BackendError, contract.ContractError) as exc:
        raise InterruptExecution(f"chaosext safety: not starting, nothing was changed. {exc}") from None
    _RUN.clear()
    problems = check_configuration(configuration, network=False)
    if not problems and not isinstance(configuration, dict):
        problems = ["the experiment has no configuration block"]
    if problems:
        for p in problems:
            logger.error("configuration: %s", p)
        raise InterruptExecution("chaosext safety: not starting, nothing was changed. " + "; ".join(problems))
    cfg = load_config(configuration)
    if dry := _is_dry(context):
        for line in _plan(cfg, configuration):
            logger.info("[dry run] %s", line)
        configuration.update(_resolved(cfg), chaosext_dry_run=dry)
        return
    run_id = runfile.new_run_id()
    _take_lock(cfg, run_id)
    problems = check_reachable(cfg)
    if problems:
        _finish(cfg)
        for p in problems:
            logger.error("pre-flight: %s", p)
        raise InterruptExecution("chaosext safety: not starting, nothing was changed. " + "; ".join(problems))
    configuration.update(_resolved(cfg), chaosext_run_id=run_id, chaosext_heartbeat_file=str(
        runfile.run_directory(cfg.run_base, run_id) / "heartbeat"))
    cfg = load_config(configuration)
    started = _start_run(cfg, configuration, secrets)
    logger.info("chaosext safety: run %s started (target %s%s, outage %ss, services %s, tokens for %s, k6 %s, "
                "baseline window holds %d requests)", run_id, cfg.target_name,
                " = lab" if cfg.is_lab_target else ", approved", cfg.outage_seconds, ",".join(cfg.services),
                ",".join(started["tenants"]), started["k6"], started["baseline_requests"])


def after_activity_control(context: dict[str, Any] | None = None, state: Any = None,
                           configuration: Configuration = None, secrets: Secrets = None, **kwargs: Any) -> None:
    """Stop the run on SIGTERM, or at once when the fault could not be applied and verified."""
    if signals.terminating():
        raise InterruptExecution("SIGTERM received: stopping the experiment; restoring JWKS egress and stopping k6")
    name = (context or {}).get("name") if isinstance(context, dict) else None
    if name == "block-jwks-egress" and isinstance(state, dict) and state.get("status") != "succeeded":
        why = "".join(state.get("exception") or []).strip().splitlines()[-1:] or ["no output"]
        try:
            cfg = load_config(configuration)
            with runfile.edit_run(cfg.run_dir) as run:
                run.fault = runfile.FaultInfo(applied=False, error=why[0])
        except (ValueError, OSError):
            pass
        raise InterruptExecution(f"fault not applied: {why[0]} -- nothing to watch; ending the run")


def _finish(cfg: ExperimentConfig) -> dict[str, Any]:
    """Undo what this run started: its fault, its k6, its heartbeat and its lock (each step never raises)."""
    out: dict[str, Any] = {}
    if cfg.run_id:
        out["egress"] = restore_fault(cfg)
        out["load"] = stop_load(cfg)
    hb = _RUN.pop("heartbeat", None)
    if hb is not None:
        hb.stop()
    keyserver.close_all()  # the run's one jku/x5u key listener
    held = _RUN.pop("lock", None)
    if held is not None:
        try:
            held.release()
        except OSError as exc:
            logger.warning("could not release the target lock: %s", exc)
    return out


def after_experiment_control(context: Experiment = None, state: Journal = None, configuration: Configuration = None,
                             secrets: Secrets = None, **kwargs: Any) -> None:
    """Always: restore this run's fault and stop this run's k6, even after an interruption; then release the run."""
    try:
        cfg = load_config(configuration)
    except ValueError:
        signals.uninstall()
        return  # the run never started anything (the configuration did not even parse)
    if cfg.run_id:
        out = _finish(cfg)  # restore first: nothing may delay lifting the fault
        evidence = save_run_evidence(cfg)  # the same file judge-outage named, now with the recovery window
        if not evidence.get("ok"):
            logger.warning("chaosext safety: evidence for the report not saved: %s", evidence.get("error"))
        egress, load = out.get("egress", {}), out.get("load", {})
        logger.info("chaosext safety: after run %s: egress %s, k6 %s", cfg.run_id,
                    "restored" if egress.get("restored") else f"NOT restored ({egress.get('error')})",
                    "stopped" if load.get("stopped") else f"not stopped ({load.get('error')})")
    signals.uninstall()
