"""A pre-flight finding: one line of ``chaosext doctor`` and one reason the safety control may refuse a run.

Each domain owns the checks of what it needs from the target (``chaosext.<domain>.checks``); the one pre-flight list
(``chaosext.safety.preflight``) runs them for both, so doctor refuses exactly what a run would.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Finding", "HTTP_TIMEOUT"]

#: seconds a pre-flight HTTP request may take
HTTP_TIMEOUT = 3.0


@dataclass
class Finding:
    """What one check looked at, whether it passed, and — when it did not — the exact fix. A failed ``required``
    finding refuses the run; a failed optional one is a warning."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    @property
    def status(self) -> str:
        """``ok``, ``MISSING`` (required, failed) or ``warn`` (optional, failed)."""
        if self.ok:
            return "ok"
        return "MISSING" if self.required else "warn"

    @property
    def refuses(self) -> bool:
        """True when this finding stops a run."""
        return self.required and not self.ok

    def sentence(self) -> str:
        """The finding as one sentence for a log or an error: what is wrong and what to do."""
        return f"{self.name}: {self.detail}" + (f"; fix: {self.fix}" if self.fix else "")
