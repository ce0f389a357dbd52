"""Checks before anything changes: is everything a run needs reachable (network and tools)?

``check_reachable`` is run by the safety control after the static validation (``chaosext.core.config.validate``)
and by ``chaosext doctor``; each problem is a sentence that says what to do.
"""
from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

import requests

from chaosext.core import backends
from chaosext.core.config import ExperimentConfig
from chaosext.core.settings import Configuration
from chaosext.egress.actions import target_problem
from chaosext.load.k6 import K6NotFoundError, find_k6

__all__ = ["check_reachable"]


def _tcp_reachable(url: str, timeout: float = 3.0) -> bool:
    p = urlparse(url)
    port = p.port or (443 if p.scheme == "https" else 80)
    try:
        with socket.create_connection((p.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_reachable(cfg: ExperimentConfig, configuration: Configuration = None, need_k6: bool = True) -> list[str]:
    """Network / environment problems before the fault (the fault's target, Prometheus, Alertmanager, services, JWKS,
    k6); [] when everything a run needs answers. ``configuration`` carries the driver settings (ENVOY_ADMIN_URL ...)."""
    problems: list[str] = []
    if target := target_problem(cfg.fault_via, cfg.fault_target, configuration):
        problems.append(target)
    if need_k6:
        try:
            find_k6()
        except K6NotFoundError as exc:
            problems.append(str(exc))
    for name, url, path in (("PROMETHEUS_URL", cfg.prometheus_url, "/-/ready"),
                            ("ALERTMANAGER_URL", cfg.alertmanager_url, "/-/ready")):
        try:  # with the backend's credentials (chaosext.core.backends)
            backends.get(name.split("_")[0].lower(), url + path, timeout=5)
        except backends.BackendError as exc:
            problems.append(f"{name}={url}: {exc}")
        except requests.RequestException as exc:
            problems.append(f"{name}={url} is unreachable ({type(exc).__name__}); start it (chaosext lab up) or "
                            f"point {name} at a running one")
    for svc, url in cfg.services.items():
        if not _tcp_reachable(url):
            problems.append(f"service {svc} at {url} is unreachable; start the lab (chaosext lab up) or fix "
                            f"SERVICE_URLS")
    try:
        r = requests.get(cfg.jwks_url, timeout=5)
        if r.status_code != 200 or "keys" not in r.json():
            problems.append(f"JWKS_URL={cfg.jwks_url} did not return a JWKS (status {r.status_code}); before the "
                            f"fault it must be reachable, or the experiment proves nothing")
    except (requests.RequestException, ValueError) as exc:
        problems.append(f"JWKS_URL={cfg.jwks_url} is unreachable before the fault ({type(exc).__name__}); is an "
                        f"old fault still active? run `chaosext restore --all`")
    if cfg.audit_kind == "file":
        parent = Path(cfg.audit_location).parent
        if not parent.is_dir():
            problems.append(f"AUDIT_SOURCE file directory {parent} does not exist; is the lab running?")
    return problems
