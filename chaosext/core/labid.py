"""Is a target the running lab? Decided by identity, never by address.

Every target that is not the embedded lab needs ``CHAOSEXT_APPROVE``. "Loopback" is not "the lab": a ``kubectl
port-forward`` to a production Envoy admin API or service is loopback too, and ``127.0.0.2:8440`` in another team's
network namespace is someone else's server. So a configuration targets the lab only when the running lab's state
file (``chaosext.core.labstate``, a root-safe file of the user chaosext runs as, see :mod:`chaosext.core.safefs`)
names that very target:

- a lab runs: ``state.json`` is there and its authority process is alive (pid + start time);
- this process runs in the lab's network namespace (``netns`` in the state file; ``FAULT_TARGET=netns:<name>`` must
  name that namespace), so loopback addresses mean the same servers here as there;
- ``JWKS_URL`` and ``AUTHORITY_URL`` are the lab's, and every service of ``SERVICE_URLS`` is one of the lab's
  (compared as requests sends them: :func:`chaosext.core.urls.parse`);
- the fault goes where the lab's state says: iptables on ``local`` (this process's namespace, the lab's), or the
  lab's own Envoy admin URL with ``FAULT_VIA=envoy``; any other target (``netns:...``, ``pid:...``, a cluster) needs
  approval even when it happens to be the lab.
"""
from __future__ import annotations

import os
from typing import Any, Protocol

from chaosext.core.labstate import load_state
from chaosext.core.procs import netns_id, process_alive
from chaosext.core.urls import UrlError, check_transport, parse


class Target(Protocol):
    """What of an ``ExperimentConfig`` (chaosext.core.config) decides whether it targets the lab."""

    @property
    def lab_dir(self) -> str: ...
    @property
    def fault_via(self) -> str: ...
    @property
    def fault_target(self) -> str: ...
    @property
    def jwks_url(self) -> str: ...
    @property
    def authority_url(self) -> str: ...
    @property
    def service_urls(self) -> dict[str, str]: ...
    @property
    def allow_http(self) -> bool: ...

__all__ = ["running_lab", "same_url", "lab_urls", "is_lab_url", "lab_problem", "is_lab_target",
           "token_transport_problems"]


def running_lab(lab_dir: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """The state of the lab running in ``lab_dir`` (its authority process alive), else None. StateError when the
    state file exists but is broken or unsafe."""
    state = load_state(lab_dir)
    if not state:
        return None
    authority = (state.get("components") or {}).get("authority") or {}
    pid = authority.get("pid")
    if not isinstance(pid, int) or not process_alive(pid, authority.get("start_ticks")):
        return None
    return state


def _key(url: Any) -> str:
    try:
        u = parse(url)
    except UrlError:
        return ""
    return u.origin + "/" + u.path.strip("/")


def same_url(a: Any, b: Any) -> bool:
    """True when both URLs parse and name the same origin and path (trailing slashes aside)."""
    ka, kb = _key(a), _key(b)
    return bool(ka) and ka == kb


def lab_urls(state: dict[str, Any]) -> list[str]:
    """Every URL the lab's state names (JWKS, authority, token, services, Prometheus, Alertmanager, Envoy admin)."""
    urls = [state.get(k) for k in ("jwks_url", "authority_url", "token_url", "prometheus_url", "alertmanager_url",
                                   "envoy_admin_url")]
    urls += list((state.get("service_urls") or {}).values())
    return [u for u in urls if isinstance(u, str) and u]


def _in_lab_netns(state: dict[str, Any]) -> bool:
    ns = state.get("netns")
    return isinstance(ns, str) and bool(ns) and ns == netns_id()


def _origin(url: Any) -> str:
    try:
        return parse(url).origin
    except UrlError:
        return ""


def is_lab_url(url: str, state: dict[str, Any] | None) -> bool:
    """True when ``state`` is a running lab's, this process runs in its network namespace and ``url`` is on the
    origin (scheme, host, port) of one of the lab's URLs (``http://127.0.0.1:9490/-/ready`` is the lab's Prometheus)."""
    origin = _origin(url)
    return bool(origin) and bool(state) and _in_lab_netns(state or {}) \
        and any(origin == _origin(u) for u in lab_urls(state or {}))


def _fault_problem(cfg: Target, state: dict[str, Any]) -> str:
    if cfg.fault_via == "iptables":
        if cfg.fault_target == "local":
            return ""  # this process's namespace, which _in_lab_netns found to be the lab's
        return f"FAULT_TARGET={cfg.fault_target} names another target than the lab (local, in its namespace)"
    if cfg.fault_via == "envoy":
        admin = cfg.fault_target.removeprefix("envoy:")
        if state.get("envoy_admin_url") and same_url(admin, state["envoy_admin_url"]):
            return ""
        return f"FAULT_TARGET={cfg.fault_target} is not the lab's Envoy admin URL"
    return f"FAULT_VIA={cfg.fault_via} never targets the lab"


def lab_problem(cfg: Target) -> str:
    """'' when ``cfg`` targets the running lab (module docstring), else why it does not."""
    try:
        state = running_lab(cfg.lab_dir)
    except ValueError as exc:  # StateError: a broken or unsafe state file is no lab
        return str(exc)
    if state is None:
        return f"no lab runs in {cfg.lab_dir}"
    if not state.get("netns"):
        return (f"the lab state in {cfg.lab_dir} names no network namespace (an older chaosext started it): restart "
                f"the lab (chaosext lab down, then chaosext lab up)")
    if not _in_lab_netns(state):
        return "this process does not run in the lab's network namespace"
    for name, url, lab in (("JWKS_URL", cfg.jwks_url, state.get("jwks_url")),
                           ("AUTHORITY_URL", cfg.authority_url, state.get("authority_url"))):
        if not same_url(url, lab):
            return f"{name}={url} is not the lab's ({lab})"
    lab_services = list((state.get("service_urls") or {}).values())
    for svc, url in cfg.service_urls.items():
        if not any(same_url(url, u) for u in lab_services):
            return f"service {svc} at {url} is not one of the lab's services"
    return _fault_problem(cfg, state)


def is_lab_target(cfg: Target) -> bool:
    """True when ``cfg`` targets the running lab (its state file names this very target)."""
    return not lab_problem(cfg)


def token_transport_problems(cfg: Target) -> list[str]:
    """Each service URL that would get tenants' tokens over plain http outside the lab (unless CHAOSEXT_ALLOW_HTTP),
    as a sentence saying what to do; [] when none. (The token endpoint and the backends are checked where the
    credentials are sent: chaosext.core.tokens, chaosext.core.backends.)"""
    try:
        state = running_lab(cfg.lab_dir)
    except ValueError:
        state = None
    problems = []
    for svc, url in cfg.service_urls.items():
        try:
            parse(url)
        except UrlError:
            continue  # validate() says what is wrong with it
        try:
            check_transport(url, f"SERVICE_URLS[{svc}] (it gets tenants' tokens)", is_lab_url(url, state),
                            cfg.allow_http)
        except UrlError as exc:
            problems.append(str(exc))
    return problems
