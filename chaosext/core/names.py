"""Names shared by the extension and the lab, each defined once.

The lab and the extension meet only over the network and through these documented names (docs/architecture.md).
"""
from __future__ import annotations

import re

from chaosext.core.errors import ConfigError

__all__ = ["FAULT_VIAS", "FAULT_MODES", "UNAUTHENTICATED_TENANT", "ENVOY_RUNTIME_PREFIX",
           "ENVOY_STAT_PREFIX", "JWKS_CACHE_MODES", "RUN_ID_RE", "check_run_id", "SOCKET_MARK"]

#: how the fault is injected (``FAULT_VIA``)
FAULT_VIAS = ("iptables", "envoy", "k8s-networkpolicy", "istio")
#: how blocked packets fail (``FAULT_MODE``): drop = timeouts, reject = refused
FAULT_MODES = ("drop", "reject")
#: the tenant label of a request whose token never authenticated (D1: not a tenant's error)
UNAUTHENTICATED_TENANT = "__unauthenticated__"
#: Envoy runtime keys the fault sets (``<prefix>.abort_percent`` ...) and the stat prefix of the JWKS cluster's
#: fault filter, shared by the Envoy driver and the lab's Envoy config
ENVOY_RUNTIME_PREFIX = "chaosext.jwks"
ENVOY_STAT_PREFIX = "jwks_egress"
#: the lab services' JWKS cache modes: last-known-good, hard TTL, no cache
JWKS_CACHE_MODES = ("lkg", "hard-ttl", "none")
#: the SO_MARK of chaosext's own connections that a run's iptables fault lets through when its spec says so
#: (rotation-during-outage: chaosext asks the IdP for new tokens while the services cannot reach it; only a process
#: with CAP_NET_ADMIN can set a mark)
SOCKET_MARK = 0xC4A05E
#: a chaosext run id: 8 lower-case hex digits; it names the run directory, the fault's chain, tags and labels
RUN_ID_RE = re.compile(r"[0-9a-f]{8}")


def check_run_id(run_id: object, what: str = "run id") -> str:
    """``run_id`` when it is a chaosext run id, else ConfigError naming ``what`` (an id names directories, chains,
    labels and iptables-restore input: it is checked wherever one comes in, issue 27)."""
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        raise ConfigError(f"{what}={run_id!r} is not a chaosext run id (8 lower-case hex digits, e.g. 1a2b3c4d)")
    return run_id
