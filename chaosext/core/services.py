"""The tenant services' HTTP surface as chaosext uses it (docs/architecture.md, "Tenant service HTTP surface").

Two calls, shared by the probes, the outage watch and ``chaosext doctor``: an authenticated GET of a service's read
route with a tenant's token (:func:`call`), and the ``jwks`` block of its ``/healthz`` (:func:`health`). Neither
raises: a service that does not answer is a status 0 / an empty dict, for the caller to judge.
"""
from __future__ import annotations

from typing import Any

import requests

from chaosext.core import urls
from chaosext.core.config import ExperimentConfig

__all__ = ["READ_PATHS", "read_path", "call", "health"]

#: read route per lab service
READ_PATHS = {"policy": "/api/v1/policies", "vuln": "/api/v1/findings", "notify": "/api/v1/notifications"}


def read_path(service: str) -> str:
    """The authenticated read route probed on ``service`` (``/`` for services the lab does not know)."""
    return READ_PATHS.get(service, "/")


def call(cfg: ExperimentConfig, service: str, url: str, token: str, tenant: str, timeout: float = 3.0) -> int:
    """GET the service's read route with ``token`` for ``tenant``: the HTTP status, or 0 when it did not answer. A
    redirect to another origin is not followed (the token stays with the service: chaosext.core.urls)."""
    try:
        with urls.session() as s:
            r = s.get(url + read_path(service), timeout=timeout,
                      headers={"Authorization": f"Bearer {token}", cfg.tenant_header: tenant})
        return r.status_code
    except requests.RequestException:
        return 0


def health(url: str, timeout: float = 3.0) -> dict[str, Any]:
    """The service's ``/healthz`` ``jwks`` block ({"state": ..., "age_seconds": ...}); {} when unavailable."""
    try:
        r = requests.get(url + "/healthz", timeout=timeout)
        return dict(r.json().get("jwks") or {})
    except (requests.RequestException, ValueError, AttributeError):
        return {}
