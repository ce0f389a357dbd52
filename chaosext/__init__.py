"""chaosext: a Chaos Toolkit extension that proves multi-tenant APIs survive a JWKS outage.

`chaos discover chaosext` lists every action and probe of the modules in ``ACTIVITY_MODULES``.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "discover", "ACTIVITY_MODULES"]

#: Modules whose ``__all__`` holds Chaos Toolkit actions and probes.
ACTIVITY_MODULES: dict[str, tuple[str, ...]] = {
    "actions": ("chaosext.egress.actions", "chaosext.load.actions"),
    "probes": (
        "chaosext.egress.probes",
        "chaosext.load.probes",
        "chaosext.outage.hypothesis",
        "chaosext.outage.drill",
        "chaosext.outage.watch",
        "chaosext.outage.judge",
    ),
}


def discover(discover_system: bool = True) -> dict[str, Any]:
    """Describe this extension's activities for `chaos discover chaosext`."""
    # imported here, not at the top: every ``import chaosext.*`` (the lab's servers too) runs this module
    from chaoslib.discovery import discover_actions, discover_probes, initialize_discovery_result

    result: dict[str, Any] = initialize_discovery_result("chaosext", __version__, "jwks-outage")
    for kind, finder in (("actions", discover_actions), ("probes", discover_probes)):
        for mod in ACTIVITY_MODULES[kind]:
            importlib.import_module(mod)  # an import error must surface, not shorten the list
            result["activities"].extend(finder(mod))
    return result
