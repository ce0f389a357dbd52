"""What the audit domain measures: which services recorded which audit actions in a time window.

Plain measurements for the judges in ``chaosext.outage``; the events are read from AUDIT_SOURCE (the lab's JSONL
file, Loki or ClickHouse: ``chaosext.audit.sources``).
"""
from __future__ import annotations

from collections.abc import Iterable

from chaosext.audit.sources import AuditEvent, read_events
from chaosext.run.context import RunContext

__all__ = ["PIPELINE_WAIT_SECONDS", "services_of", "services_recorded"]

#: seconds to wait for events still on their way through the pipeline (collector -> Loki/ClickHouse)
PIPELINE_WAIT_SECONDS = {"file": 5.0, "loki": 30.0, "clickhouse": 30.0}


def services_of(events: Iterable[AuditEvent]) -> set[str]:
    """The services that wrote ``events``."""
    return {str(e["service"]) for e in events if e.get("service")}


def services_recorded(ctx: RunContext, roles: tuple[str, ...], since: float, until: float,
                      wanted: set[str]) -> tuple[set[str], int]:
    """The services with an event of any of ``roles`` ('' = any action) in [since, until], and how many events there
    were (stops reading once every service of ``wanted`` was found)."""
    seen: set[str] = set()
    count = 0
    for role in roles:
        events = read_events(ctx, role, since, until, tuple(sorted(wanted)))
        count += len(events)
        seen |= services_of(events)
        if wanted <= seen:
            break
    return seen, count
