"""Make sure the fault is gone and k6 is stopped, whatever happened to the run.

Calls the egress domain's ``restore_jwks_egress`` and the load domain's ``stop_k6`` with the experiment's settings
(only the arguments each function accepts). Never raises: returns what happened, errors included.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

from chaosext.config import ExperimentConfig

__all__ = ["restore_fault", "stop_load", "call_with"]

logger = logging.getLogger("chaostoolkit")


def call_with(func: Callable[..., Any], candidates: dict[str, Any]) -> Any:
    """Call ``func`` with the subset of ``candidates`` its signature accepts."""
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return func(**candidates)
    return func(**{k: v for k, v in candidates.items() if k in params})


def _configuration(cfg: ExperimentConfig) -> dict[str, Any]:
    d = cfg.as_dict()
    d["service_urls"] = ",".join(f"{k}={v}" for k, v in cfg.services.items())
    d["chaosext_run_dir"] = cfg.run_dir
    d["chaosext_lab_dir"] = cfg.lab_dir
    return d


def restore_fault(cfg: ExperimentConfig) -> dict[str, Any]:
    """Remove the JWKS egress block this experiment made (``restore_jwks_egress``); never raises."""
    try:
        from chaosext.egress.actions import restore_jwks_egress
    except ImportError as exc:
        return {"restored": False, "error": f"egress module unavailable: {exc}"}
    try:
        result = call_with(restore_jwks_egress, {
            "jwks_url": cfg.jwks_url, "via": cfg.fault_via, "target": cfg.fault_target, "mode": cfg.fault_mode,
            "configuration": _configuration(cfg), "secrets": None})
        return {"restored": True, "result": result}
    except Exception as exc:  # noqa: BLE001 - report, never raise from cleanup
        logger.error("restoring JWKS egress failed: %s -- run `chaosext restore --all`", exc)
        return {"restored": False, "error": f"{type(exc).__name__}: {exc}"}


def stop_load(cfg: ExperimentConfig) -> dict[str, Any]:
    """Stop the background k6 run (``stop_k6``); never raises."""
    try:
        from chaosext.load.actions import stop_k6
    except ImportError as exc:
        return {"stopped": False, "error": f"load module unavailable: {exc}"}
    try:
        return {"stopped": True, "result": call_with(stop_k6, {"configuration": _configuration(cfg),
                                                              "secrets": None})}
    except Exception as exc:  # noqa: BLE001
        logger.error("stopping k6 failed: %s", exc)
        return {"stopped": False, "error": f"{type(exc).__name__}: {exc}"}
