"""Audit events: one JSON object a line, appended with O_APPEND and one write() a line.

Several processes (policy, vuln, notify) append to the same file; O_APPEND plus a single write of a short line keeps
lines whole. Fields, exactly: timestamp, service, tenant, subject, action, resource, result, traceId.

Request-level events (``auth.rejected``, ``tenant.mismatch``) go through a token bucket so a flood of bad tokens
cannot fill the disk; service-level events (``auth.degraded``, ``auth.recovered``, ``auth.expired``) are never
dropped.
"""
import json
import logging
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from chaosext.core import safefs
from chaosext.lab.tenancy import RateLimiter

__all__ = ["AuditLog", "trace_id_from", "utc_timestamp", "SYSTEM_TENANT", "SYSTEM_SUBJECT"]

log = logging.getLogger("chaosext.lab.audit")

SYSTEM_TENANT = "*"
SYSTEM_SUBJECT = "system"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_MAX_FIELD = 256


def trace_id_from(traceparent: str | None) -> str:
    """The trace id of a W3C ``traceparent`` header, or a new random one (32 lowercase hex)."""
    if traceparent:
        m = _TRACEPARENT.match(traceparent.strip().lower())
        if m and m.group(1) != "0" * 32:
            return m.group(1)
    return os.urandom(16).hex()


def utc_timestamp(t: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds and a ``Z``: ``2026-11-29T21:40:00.123Z``."""
    dt = datetime.fromtimestamp(time.time() if t is None else t, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class AuditLog:
    """Append-only JSONL audit writer for one service."""

    def __init__(
        self,
        path: str,
        service: str,
        enabled: bool = True,
        rate: float = 20.0,
        burst: float = 200.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.service = service
        self.enabled = enabled
        self._flood = RateLimiter(rate, burst, now)  # one bucket for all request-level events
        self.suppressed = 0
        self._fd: int | None = None
        if enabled:
            self._fd = safefs.open_append(path, 0o640)  # root-safe: no symlink, a file of ours in a safe directory

    def _write(self, tenant: str, subject: str, action: str, resource: str, result: str, trace_id: str) -> None:
        if self._fd is None:
            return
        record = {
            "timestamp": utc_timestamp(),
            "service": self.service,
            "tenant": tenant[:_MAX_FIELD],
            "subject": subject[:_MAX_FIELD],
            "action": action,
            "resource": resource[:_MAX_FIELD],
            "result": result[:_MAX_FIELD],
            "traceId": trace_id,
        }
        line = (json.dumps(record, ensure_ascii=True, separators=(", ", ": ")) + "\n").encode()
        try:
            os.write(self._fd, line)
        except OSError as exc:  # disk full etc.: the service keeps serving, the log says why
            log.error("audit write to %s failed: %s", self.path, exc)

    def system(self, action: str, result: str, resource: str) -> None:
        """A service-level event (tenant ``*``, subject ``system``); never rate-limited."""
        self._write(SYSTEM_TENANT, SYSTEM_SUBJECT, action, resource, result, trace_id_from(None))

    def request(
        self, action: str, tenant: str, subject: str | Callable[[], str], resource: str, result: str,
        traceparent: str | None = None,
    ) -> bool:
        """A request-level event; False if the flood limit dropped it (counted in ``suppressed``).

        ``subject`` may be a callable, evaluated only when the event is written (keeps floods cheap)."""
        if self._fd is None:
            return False
        if not self._flood.allow("request-events"):
            self.suppressed += 1
            if self.suppressed == 1 or self.suppressed % 1000 == 0:
                log.warning("audit flood limit: %d request events suppressed so far", self.suppressed)
            return False
        if callable(subject):
            subject = subject()
        self._write(tenant, subject, action, resource, result, trace_id_from(traceparent))
        return True

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
