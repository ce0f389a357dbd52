"""The safety control for the JWKS outage experiment (a Chaos Toolkit control module).

Declared in the experiment's ``controls`` block::

    {"name": "chaosext-safety", "provider": {"type": "python", "module": "chaosext.safety.controls"}}

- before the experiment: parse and validate the whole configuration, check Prometheus / Alertmanager / services /
  JWKS are reachable and k6 is installed, refuse any non-lab target unless ``CHAOSEXT_APPROVE`` names it, fetch the
  probe tokens, start a fresh run file. Any problem raises ``InterruptExecution``: the run stops before any fault
  (chaostoolkit-lib swallows exceptions from ``configure_control``, so the checks live in
  ``before_experiment_control``).
- after every activity: if SIGTERM arrived (chaostoolkit-lib turns it into a mere activity failure inside an
  activity), interrupt the run so the rollbacks restore at once.
- after the experiment (completed, failed, interrupted by SIGINT/SIGTERM): restore the JWKS egress and stop k6
  again, whatever the rollbacks did.

The abort guard itself runs inside the watch step (``chaosext.metrics.probes.watch_outage``), the only code running
during the outage.
"""
import logging
from typing import Any

from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration, Experiment, Journal, Secrets, Settings

from chaosext.config import check_reachable, load_config, validate
from chaosext.safety import runstate, signals
from chaosext.safety.cleanup import restore_fault, stop_load

__all__ = ["configure_control", "before_experiment_control", "after_activity_control", "after_experiment_control",
           "check_configuration", "approval_problem"]

logger = logging.getLogger("chaostoolkit")


def approval_problem(cfg: Any) -> str:
    """'' when the target is the local lab or CHAOSEXT_APPROVE names it; else what to do."""
    if cfg.is_lab_target:
        return ""
    approved = {a.strip() for a in cfg.approve.split(",") if a.strip()}
    if cfg.target_name in approved:
        return ""
    return (f"target {cfg.target_name!r} (FAULT_VIA={cfg.fault_via}, FAULT_TARGET={cfg.fault_target}) is not the "
            f"local lab; to inject the fault there, set CHAOSEXT_APPROVE={cfg.target_name}")


def check_configuration(configuration: Configuration = None, network: bool = True) -> list:
    """Every problem with the configuration (parse, values, approval, then reachability); [] when ready."""
    try:
        cfg = load_config(configuration)
    except ValueError as exc:
        return [str(exc)]
    problems = validate(cfg)
    if gate := approval_problem(cfg):
        problems.append(gate)
    if not problems and network:
        problems = check_reachable(cfg)
    return problems


def configure_control(experiment: Experiment = None, configuration: Configuration = None, secrets: Secrets = None,
                      settings: Settings = None, **kwargs: Any) -> None:
    """Wrap the SIGTERM handler (chaostoolkit-lib installed its own just before)."""
    signals.reset()
    signals.install()


def before_experiment_control(context: Experiment = None, configuration: Configuration = None,
                              secrets: Secrets = None, **kwargs: Any) -> None:
    """Validate everything and refuse to start (InterruptExecution) before any fault; start a fresh run file."""
    signals.install()
    from chaosext import backends

    from chaosext.metrics import contract

    try:
        backends.register(configuration, secrets)  # backend credentials for every probe of this run (never logged)
        contract.register(configuration)  # the METRIC_* names every probe reads from Prometheus
    except (backends.BackendError, contract.ContractError) as exc:
        raise InterruptExecution(f"chaosext safety: not starting, nothing was changed. {exc}") from None
    problems = check_configuration(configuration)
    if problems:
        for p in problems:
            logger.error("configuration: %s", p)
        raise InterruptExecution("chaosext safety: not starting, nothing was changed. " + "; ".join(problems))
    cfg = load_config(configuration)
    runstate.new_run(cfg.run_dir)
    from chaosext.auth.probes import ensure_tokens

    try:
        tenants = sorted(ensure_tokens(cfg, secrets, configuration))
    except Exception as exc:  # noqa: BLE001 - any failure here must stop the run before the fault
        raise InterruptExecution(f"chaosext safety: cannot get probe tokens before the fault ({exc}); nothing "
                                 f"was changed") from exc
    if isinstance(configuration, dict):
        # resolved values for ${...} substitution in the activities (empty settings mean "the lab's value")
        configuration.update({
            "jwks_url": cfg.jwks_url, "authority_url": cfg.authority_url, "prometheus_url": cfg.prometheus_url,
            "alertmanager_url": cfg.alertmanager_url, "audit_source": cfg.audit_source,
            "service_urls": ",".join(f"{k}={v}" for k, v in cfg.services.items()),
            "chaosext_run_dir": cfg.run_dir, "fault_deadline_seconds": cfg.outage_seconds + 120,
        })
    logger.info("chaosext safety: configuration ok (target %s%s, outage %ss, services %s, tokens for %s)",
                cfg.target_name, " = lab" if cfg.is_lab_target else ", approved", cfg.outage_seconds,
                ",".join(cfg.services), ",".join(tenants))


def after_activity_control(context: dict = None, state: Any = None, configuration: Configuration = None,
                           secrets: Secrets = None, **kwargs: Any) -> None:
    """Interrupt the run once SIGTERM was received (rollbacks and the after-experiment control then restore)."""
    if signals.terminating():
        raise InterruptExecution("SIGTERM received: stopping the experiment; restoring JWKS egress and stopping k6")


def after_experiment_control(context: Experiment = None, state: Journal = None, configuration: Configuration = None,
                             secrets: Secrets = None, **kwargs: Any) -> None:
    """Always: make sure the JWKS egress is restored and k6 is stopped, even after an interruption."""
    try:
        cfg = load_config(configuration)
    except ValueError:
        return  # the run never started anything (the configuration did not even parse)
    if (state or {}).get("run") is not None:  # the method started: something may need undoing
        egress = restore_fault(cfg)
        load = stop_load(cfg)
        logger.info("chaosext safety: after the experiment: egress %s, k6 %s",
                    "restored" if egress.get("restored") else f"NOT restored ({egress.get('error')})",
                    "stopped" if load.get("stopped") else f"not stopped ({load.get('error')})")
    signals.uninstall()
