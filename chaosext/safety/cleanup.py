"""Make sure THIS run's fault is gone and THIS run's k6 is stopped, whatever happened to the run.

Calls the egress domain's ``restore_jwks_egress`` and the load domain's ``stop_k6`` for the run id of the
configuration only (docs/architecture.md, D2 run ownership): a run that applied nothing restores nothing, and the
faults and k6 processes of other runs are never touched. Never raises: returns what happened, errors included.
"""
from __future__ import annotations

import logging
from typing import Any

from chaosext.core.config import ExperimentConfig

__all__ = ["restore_fault", "stop_load", "run_configuration"]

logger = logging.getLogger("chaostoolkit")


def run_configuration(cfg: ExperimentConfig) -> dict[str, Any]:
    """The Chaos Toolkit configuration that names this run (for calling entry points directly)."""
    d = cfg.as_dict()
    # the resolved backstop selector under its setting's name (as_dict's field name is the deprecated old setting,
    # which would make every run warn about a setting nobody set)
    d["metric_unverified_accepts"] = d.pop("unverified_accepts_selector") or "off"
    d["service_urls"] = ",".join(f"{k}={v}" for k, v in cfg.services.items())
    d["chaosext_run_dir"] = cfg.run_base
    d["chaosext_lab_dir"] = cfg.lab_dir
    d["chaosext_run_id"] = cfg.run_id
    return d


def restore_fault(cfg: ExperimentConfig, reason: str = "") -> dict[str, Any]:
    """Remove the JWKS egress fault of this run (``restore_jwks_egress``); never raises."""
    from chaosext.egress.actions import restore_jwks_egress

    try:
        result = restore_jwks_egress(jwks_url=cfg.jwks_url, via=cfg.fault_via, target=cfg.fault_target,
                                     run_id=cfg.run_id, reason=reason, configuration=run_configuration(cfg))
        return {"restored": True, "result": result}
    except Exception as exc:
        logger.error("restoring JWKS egress of run %s failed: %s -- run `chaosext restore --run-id %s`", cfg.run_id,
                     exc, cfg.run_id)
        return {"restored": False, "error": f"{type(exc).__name__}: {exc}"}


def stop_load(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stop this run's background k6 (``stop_k6``); never raises."""
    from chaosext.load.actions import stop_k6

    try:
        return {"stopped": True, "result": stop_k6(owner_run_id=cfg.run_id, configuration=run_configuration(cfg))}
    except Exception as exc:
        logger.error("stopping k6 of run %s failed: %s", cfg.run_id, exc)
        return {"stopped": False, "error": f"{type(exc).__name__}: {exc}"}
