"""What `chaos discover chaosext` shows of every entry point, read in this process with chaoslib's own discovery (the
real `chaos discover` run is tests/experiment/test_discover.py): each action and probe has its docstring, and no
argument is typed "object" — `chaos init` and the experiment editors only know the plain types (DESIGN.md, "Chaos
Toolkit facts": ``X | None``, ``Mapping`` and string annotations all become "object")."""
from __future__ import annotations

import chaosext


def _activities() -> list[dict]:
    return chaosext.discover(discover_system=False)["activities"]


def test_every_entry_point_is_discovered_with_its_docstring() -> None:
    found = {(a["mod"], a["name"]) for a in _activities() if a.get("doc")}
    assert ("chaosext.outage.hypothesis", "jwks_caches_fresh") in found
    assert ("chaosext.egress.actions", "block_jwks_egress") in found
    assert len(found) == len(_activities())


def test_plain_arguments_keep_their_types() -> None:
    block = next(a for a in _activities() if a["name"] == "block_jwks_egress")
    types = {arg["name"]: arg.get("type") for arg in block["arguments"]}
    assert types["deadline_seconds"] == "integer" and types["via"] == "string" and types["dry_run"] == "boolean"
    assert types["driver_options"] == "mapping"


def test_no_argument_of_any_entry_point_is_typed_object() -> None:
    objects = {(a["name"], arg["name"]) for a in _activities() for arg in a.get("arguments", [])
               if arg.get("type") == "object"}
    assert objects == set()
