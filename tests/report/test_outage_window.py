"""The report's outage window from a journal alone (chaosext.report.collect.outage_window): the block action's start
to the restore's end; without a restore (a run cut short), the block's start plus the fault's lifetime it reported."""
from __future__ import annotations

import time
from typing import Any

from chaosext.report.collect import outage_window

START = 1_764_450_000.0


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


def journal(block_output: dict[str, Any], restore: bool) -> dict[str, Any]:
    run = [{"activity": {"name": "block-jwks-egress", "type": "action",
                         "provider": {"type": "python", "module": "chaosext.egress.actions",
                                      "func": "block_jwks_egress"}},
            "output": block_output, "status": "succeeded", "start": iso(START), "end": iso(START + 1)}]
    if restore:
        run.append({"activity": {"name": "restore-jwks-egress", "type": "action",
                                 "provider": {"type": "python", "module": "chaosext.egress.actions",
                                              "func": "restore_jwks_egress"}},
                    "output": {}, "status": "succeeded", "start": iso(START + 30), "end": iso(START + 31)})
    return {"start": iso(START - 60), "end": iso(START + 600), "run": run, "rollbacks": [],
            "steady_states": {}}


def test_the_window_ends_with_the_restore() -> None:
    assert outage_window(journal({"deadline_seconds": 135}, restore=True)) == (START, START + 31)


def test_a_journal_of_an_older_chaosext_without_a_restore_ends_at_the_faults_lifetime() -> None:
    assert outage_window(journal({"duration_seconds": 135}, restore=False)) == (START, START + 135)


def test_without_a_restore_the_window_ends_at_the_deadline_block_jwks_egress_reported() -> None:
    assert outage_window(journal({"deadline_seconds": 135}, restore=False)) == (START, START + 135)
