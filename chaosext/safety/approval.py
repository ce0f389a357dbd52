"""The approval gate: a run may touch the local lab freely; any other target only when CHAOSEXT_APPROVE names it."""
from __future__ import annotations

from chaosext.core.config import ExperimentConfig
from chaosext.egress.base import FaultError, split_targets

__all__ = ["approval_problem"]


def approval_problem(cfg: ExperimentConfig) -> str:
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
