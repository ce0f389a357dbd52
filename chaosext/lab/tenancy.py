"""Per-tenant rate limiting and the tenant-label cardinality cap."""
import time
from collections.abc import Callable

from chaosext.core.names import UNAUTHENTICATED_TENANT

__all__ = ["OVERFLOW", "UNAUTHENTICATED", "RateLimiter", "TenantLabels"]

OVERFLOW = "__overflow__"
UNAUTHENTICATED = UNAUTHENTICATED_TENANT


class RateLimiter:
    """One token bucket per tenant: ``rate`` tokens a second, at most ``burst`` banked."""

    def __init__(self, rate: float, burst: float, now: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._now = now
        self._buckets: dict[str, list[float]] = {}

    def allow(self, tenant: str) -> bool:
        """Take one token from ``tenant``'s bucket; False when it is empty."""
        now = self._now()
        b = self._buckets.get(tenant)
        if b is None:
            self._buckets[tenant] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if tokens < 1.0:
            b[0] = tokens
            return False
        b[0] = tokens - 1.0
        return True


class TenantLabels:
    """Caps distinct tenant label values: the first ``cap`` tenants keep their name, later ones fold into
    ``__overflow__`` (and ``on_overflow`` is called once per folded request)."""

    def __init__(self, cap: int, on_overflow: Callable[[], None] | None = None) -> None:
        if cap < 1:
            raise ValueError("cap must be >= 1")
        self.cap = cap
        self._known: set[str] = set()
        self._on_overflow = on_overflow or (lambda: None)

    def __len__(self) -> int:
        return len(self._known)

    def label(self, tenant: str) -> str:
        """The label value for an authenticated tenant (may admit it)."""
        if tenant in self._known:
            return tenant
        if len(self._known) < self.cap:
            self._known.add(tenant)
            return tenant
        self._on_overflow()
        return OVERFLOW

    def known_or(self, tenant: str, default: str = UNAUTHENTICATED) -> str:
        """The label for an unauthenticated claim of ``tenant``: its own label only if already admitted, so bad
        requests cannot spend the cap."""
        return tenant if tenant in self._known else default
