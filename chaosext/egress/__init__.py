"""chaosext.egress: block and restore the services' egress to the JWKS endpoint (the fault), and undo it.

Drivers (one a file) implement :class:`chaosext.egress.base.Driver`; :func:`build_driver` picks one by ``via``.
Chaos Toolkit entry points live in :mod:`chaosext.egress.actions` and :mod:`chaosext.egress.probes`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chaosext.egress.base import VIAS, Driver, FaultError

__all__ = ["build_driver"]


def build_driver(via: str, options: dict[str, Any] | None = None, secrets: Mapping[str, Any] | None = None) -> Driver:
    """The driver for ``via`` (iptables, envoy, k8s-networkpolicy, istio), configured with ``options``; ``secrets``
    (the activity's, never recorded) carry the Kubernetes credentials of the drivers that call the API.

    Each driver's module is imported only when it is picked: the Kubernetes client alone takes a second to import."""
    if via == "iptables":  # every JWKS_FAILURE: the plain fault, or the redirect to the run's impostor
        from chaosext.egress.redirect import RedirectingDriver

        return RedirectingDriver(options, secrets=secrets)
    if via == "envoy":
        from chaosext.egress.envoy import EnvoyDriver

        return EnvoyDriver(options)
    if via == "k8s-networkpolicy":
        from chaosext.egress.kubernetes import NetworkPolicyDriver

        return NetworkPolicyDriver(options, secrets=secrets)
    if via == "istio":
        from chaosext.egress.kubernetes import IstioDriver

        return IstioDriver(options, secrets=secrets)
    raise FaultError(f"unknown via {via!r}: use one of {', '.join(VIAS)}")
