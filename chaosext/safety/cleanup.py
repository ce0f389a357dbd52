"""Make sure THIS run's fault is gone and THIS run's k6 is stopped, whatever happened to the run.

Calls the egress domain's restore and the load domain's stop for the run's own id only (docs/architecture.md,
"Runs"): a run that applied nothing restores nothing, and the faults and k6 processes of other runs are never
touched. Never raises: returns what happened, errors included.
"""
from __future__ import annotations

import logging
from typing import Any

from chaosext.egress.actions import restore_run
from chaosext.load.actions import stop
from chaosext.run.context import RunContext

__all__ = ["restore_fault", "stop_load"]

logger = logging.getLogger("chaostoolkit")


def restore_fault(ctx: RunContext, reason: str = "") -> dict[str, Any]:
    """Remove the JWKS egress fault of this run; never raises."""
    try:
        return {"restored": True, "result": restore_run(ctx, reason=reason)}
    except Exception as exc:
        logger.error("restoring JWKS egress of run %s failed: %s -- run `chaosext restore --run-id %s`", ctx.run_id,
                     exc, ctx.run_id)
        return {"restored": False, "error": f"{type(exc).__name__}: {exc}"}


def stop_load(ctx: RunContext) -> dict[str, Any]:
    """Stop this run's background k6; never raises."""
    try:
        return {"stopped": True, "result": stop(ctx, owner_run_id=ctx.run_id)}
    except Exception as exc:
        logger.error("stopping k6 of run %s failed: %s", ctx.run_id, exc)
        return {"stopped": False, "error": f"{type(exc).__name__}: {exc}"}
