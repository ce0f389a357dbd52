"""`chaosext doctor`: check that this machine can run the JWKS-outage experiment against a target.

Each check says what it looked at, whether it passed, and — when it did not — the exact fix. Required checks that fail
make the command exit 1, so CI and game-day operators stop before any fault is injected. In the order a person fixes
them: the approval (CHAOSEXT_APPROVE names a non-lab target), the fault driver's prerequisites (iptables and
CAP_NET_ADMIN where the rules go; Envoy admin and the fault filter; the Kubernetes API, RBAC and the target pods), k6,
IdP discovery and a token for every tenant, every service answering a valid token on its read route, Prometheus (and
the metric contract's series), Alertmanager, and the audit source. Tokens stay in this process's memory.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any

import click
import requests

from chaosext.core import backends, kube, labid
from chaosext.core.config import load_config
from chaosext.core.settings import setting
from chaosext.core.walk import iter_dicts

__all__ = ["Check", "parse_target", "run_checks", "doctor", "VIAS", "check_approval", "check_discovery",
           "check_jwks_uri", "check_tenant_tokens", "check_services", "check_audit", "check_kube"]

#: fault methods and the targets they take (the forms `block_jwks_egress` and `chaosext restore` accept)
VIAS: dict[str, str] = {
    "iptables": "local, netns:<name>, pid:<pid> or k8s-pod:<namespace>/<pod or selector>",
    "envoy": "envoy:<admin-url> (or the bare admin URL)",
    "k8s-networkpolicy": "<namespace>/<label selector> (or k8s-pod:<namespace>/<selector>)",
    "istio": "<namespace>/<label selector> (or k8s-pod:<namespace>/<selector>)",
}
DEFAULT_VIA = {"local": "iptables", "netns": "iptables", "pid": "iptables", "k8s-pod": "k8s-networkpolicy",
               "envoy": "envoy"}
HTTP_TIMEOUT = 3.0
CMD_TIMEOUT = 10.0


@dataclass
class Check:
    """One line of the doctor's table."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    @property
    def status(self) -> str:
        """`ok`, `MISSING` (required, failed) or `warn` (optional, failed)."""
        if self.ok:
            return "ok"
        return "MISSING" if self.required else "warn"


def parse_target(target: str) -> tuple[str, str]:
    """``(kind, value)`` of a target; raise ValueError naming the accepted forms."""
    kind, _, value = target.partition(":")
    if target == "local":
        return "local", ""
    if target.startswith(("http://", "https://")):
        return "envoy", target
    if kind in ("netns", "pid", "k8s-pod", "envoy") and value:
        return kind, value
    if "/" in target and ":" not in target:
        return "k8s-pod", target  # <namespace>/<selector>, the Kubernetes drivers' own form
    raise ValueError(f"unknown target {target!r}: use local, netns:<name>, pid:<pid>, k8s-pod:<namespace>/<pod>, "
                     f"<namespace>/<selector> or envoy:<admin-url>")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False)


def check_rules(binary: str, netns: str = "", pid: str = "") -> Check:
    """The firewall tool exists and listing the OUTPUT chain works (proves CAP_NET_ADMIN in that namespace)."""
    where = f" in netns {netns}" if netns else f" in pid {pid}'s netns" if pid else ""
    name = f"{binary}{where}"
    path = shutil.which(binary)
    if not path:
        return Check(name, False, f"{binary} not found on PATH",
                     "install it: apt-get install -y iptables (or run `bash scripts/setup`)")
    argv = [binary, "-w", "5", "-S", "OUTPUT"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    elif pid:
        argv = ["nsenter", "-t", pid, "-n", *argv]
    try:
        proc = _run(argv)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(name, False, f"`{' '.join(argv)}` failed: {exc}", "run as root or with CAP_NET_ADMIN")
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        fix = "run as root (sudo) or grant CAP_NET_ADMIN to this process"
        if netns and "namespace" in " ".join(err).lower():
            fix = f"create the namespace first (`ip netns add {netns}`) or pick one from `ip netns list`"
        elif pid and not os.path.exists(f"/proc/{pid}"):
            fix = "pass the pid of a running process of the target (`pgrep -f <service>`)"
        return Check(name, False, f"cannot list rules: {err[-1] if err else proc.returncode}", fix)
    return Check(name, True, f"{path}: rules listable (CAP_NET_ADMIN usable{where})")


def _k6_version() -> tuple[str, str]:
    """(path, version) of k6, via chaosext.load.k6 (honours $K6_BIN); raises LookupError when absent."""
    try:
        from chaosext.load.k6 import K6NotFoundError, find_k6, k6_version
    except ImportError:  # the load domain not installed: look on PATH ourselves
        path = shutil.which("k6")
        if not path:
            raise LookupError("k6 not found on PATH") from None
        proc = _run([path, "version"])
        lines = (proc.stdout or proc.stderr).strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise LookupError(f"`{path} version` failed (exit {proc.returncode})") from None
        return path, lines[0]
    try:
        path = find_k6()
        return path, k6_version(path)
    except K6NotFoundError as exc:
        raise LookupError(str(exc)) from exc


def check_k6() -> Check:
    """k6 is installed and reports a version (the load generator of the experiment)."""
    try:
        path, version = _k6_version()
    except (LookupError, OSError, subprocess.TimeoutExpired) as exc:
        return Check("k6", False, str(exc),
                     "install k6 from Grafana's packages (or `bash scripts/setup` for the lab/test copy), "
                     "or set K6_BIN=/path/to/k6")
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", version)
    if not match or int(match.group(1)) < 1:
        return Check("k6", False, f"{path}: {version}", "install k6 v1.0 or newer")
    return Check("k6", True, f"{path}: {version}")


def check_http(name: str, url: str, path: str, source: str) -> Check:
    """GET url+path answers 2xx within HTTP_TIMEOUT."""
    env = name.upper() + "_URL"
    if not url:
        return Check(name, False, "no URL known",
                     f"start the lab (`chaosext lab up`) or export {env}=http://host:port")
    full = url.rstrip("/") + path

    try:  # with the backend's credentials from the environment (docs/experiment.md, authenticated backends)
        resp = backends.get(name, full, timeout=HTTP_TIMEOUT)
    except backends.BackendError as exc:
        return Check(name, False, f"{full} ({source}): {exc}",
                     f"give {name}'s credentials ({name.upper()}_BEARER_TOKEN, {name.upper()}_USERNAME/_PASSWORD, "
                     f"{name.upper()}_HEADERS) or {name.upper()}_CA_BUNDLE")
    except requests.RequestException as exc:
        return Check(name, False, f"{full} ({source}) unreachable: {type(exc).__name__}",
                     f"start it, or point {env} (or --{name}-url) at a running {name}")
    if resp.status_code >= 300:
        return Check(name, False, f"{full} ({source}) answered HTTP {resp.status_code}",
                     f"wait until {name} is ready, or point {env} at a healthy one")
    return Check(name, True, f"{full} ({source}) ready")


def _fault_options(via: str, target: str, configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fault driver's options (KUBE_API_URL, KUBE_CONTEXT, ...) resolved exactly as the fault resolves them."""
    from chaosext.egress.actions import settings

    options: dict[str, Any] = settings("", via, target, configuration=configuration)["options"]
    return options


#: (verb, group, resource) the fault needs per method
K8S_PERMISSIONS: dict[str, list[tuple[str, str, str]]] = {
    "k8s-networkpolicy": [("create", "networking.k8s.io", "networkpolicies"),
                          ("delete", "networking.k8s.io", "networkpolicies"),
                          ("list", "networking.k8s.io", "networkpolicies"),
                          ("list", "", "pods")],
    "iptables-in-pod": [("list", "", "pods"), ("create", "", "pods/exec")],
    "istio": [("create", "networking.istio.io", "virtualservices"),
              ("delete", "networking.istio.io", "virtualservices"),
              ("list", "networking.istio.io", "virtualservices"),
              ("list", "", "pods")],
}


def check_kube(namespace: str, via: str, api_client: Any = None, target: str = "",
               options: dict[str, Any] | None = None, secrets: dict[str, Any] | None = None) -> list[Check]:
    """chaosext's one Kubernetes client (:func:`chaosext.core.kube.api_client`, the one the fault drivers, the
    k6-operator and the probes use) reaches the API server, SelfSubjectAccessReview allows what the fault needs in
    ``namespace``, ``target`` (``<ns>/<selector or pod>``) selects running pods, and for iptables-in-pod the pod can
    list its rules (iptables present, NET_ADMIN)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from chaosext.egress.base import FaultError
    from chaosext.egress.kubernetes import pod_runners

    options = dict(options or {})
    context = "given client"
    tls: list[Check] = []
    if api_client is None:
        try:
            context = kube.describe(options, secrets)
            src = kube.source(options, secrets)
            api_client = kube.api_client(options, secrets)
        except kube.KubeConfigError as exc:
            return [Check("kube context", False, str(exc),
                          "set KUBECONFIG and KUBE_CONTEXT (kind: `kind get kubeconfig`), or KUBERNETES_HOST + "
                          "KUBERNETES_API_KEY, or KUBE_API_URL with `kubectl proxy`; in CI: the chaos-gameday "
                          "secret KUBECONFIG")]
        if not src.tls_verified:
            tls = [Check("kube tls", False, f"{src.where}: the server's certificate is not verified (chaostoolkit-"
                                            f"kubernetes' default for KUBERNETES_HOST), the API key goes to whoever "
                                            f"answers", "set KUBERNETES_VERIFY_SSL=true and KUBERNETES_CA_CERT_FILE "
                                                        "to the cluster's CA", required=False)]
    checks = [Check("kube context", True, f"{context}: {api_client.configuration.host}"), *tls]
    try:
        version = client.VersionApi(api_client).get_code(_request_timeout=HTTP_TIMEOUT)
        checks.append(Check("kube api", True, f"{api_client.configuration.host}: Kubernetes {version.git_version}"))
    except Exception as exc:
        checks.append(Check("kube api", False, f"GET {api_client.configuration.host}/version: "
                                               f"{str(exc).splitlines()[0][:200]}",
                            "run from where the API server is reachable (`kubectl cluster-info`; in CI a runner in "
                            "that network: CHAOSEXT_RUNS_ON), or fix KUBECONFIG / KUBE_CONTEXT / KUBERNETES_HOST / "
                            "KUBE_API_URL"))
        return checks
    authz = client.AuthorizationV1Api(api_client)
    for verb, group, resource in K8S_PERMISSIONS.get(via, K8S_PERMISSIONS["k8s-networkpolicy"]):
        what = f"{verb} {resource}{'.' + group if group else ''} in {namespace}"
        sub = ""
        if "/" in resource:
            resource, sub = resource.split("/", 1)
        body = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(namespace=namespace, verb=verb, group=group,
                                                            resource=resource, subresource=sub or None)))
        try:
            review = authz.create_self_subject_access_review(body, _request_timeout=HTTP_TIMEOUT)
        except (ApiException, OSError, Exception) as exc:
            checks.append(Check(f"k8s: {what}", False, f"access review failed: {str(exc).splitlines()[0]}",
                                "check the API server is reachable from here (`kubectl cluster-info`)"))
            continue
        allowed = bool(review.status and review.status.allowed)
        reason = (review.status.reason if review.status else "") or ("allowed" if allowed else "denied")
        checks.append(Check(f"k8s: {what}", allowed, reason,
                            "" if allowed else f"grant it, e.g. a Role with verbs [{verb}] on {resource} "
                                               f"(apiGroup '{group}') bound to your user in {namespace}"))
    if target:
        checks += _check_pods(target, via, api_client, options, pod_runners, FaultError)
    return checks


def _check_pods(target: str, via: str, api: Any, options: dict[str, Any], pod_runners: Any,
                fault_error: type[Exception]) -> list[Check]:
    """The target selects running pods (a NetworkPolicy / VirtualService selecting nothing blocks nothing), and for
    iptables-in-pod the first pod can list its OUTPUT rules."""
    namespace, _, selector = target.partition("/")
    if not selector:
        return [Check("k8s: target pods", True, f"every pod of namespace {namespace}")]
    try:
        runners = pod_runners(target, options, api)
    except fault_error as exc:  # TargetNotFound is a FaultError
        return [Check("k8s: target pods", False, str(exc),
                      f"check the namespace and selector: `kubectl get pods -n {namespace} -l {selector}` "
                      f"(or the pod name) must list running pods")]
    out = [Check("k8s: target pods", True, f"{len(runners)} running pod(s): "
                                           f"{', '.join(r.name for r in runners[:5])}")]
    if via == "iptables-in-pod":
        argv = ["iptables", "-w", "5", "-S", "OUTPUT"]
        try:
            rc, _, err = runners[0].run(argv)
        except Exception as exc:
            rc, err = -1, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        out.append(Check(f"iptables in {runners[0].label}", rc == 0,
                         f"`{runners[0].shown(argv)}`: " + ("rules listable (NET_ADMIN usable)" if rc == 0
                                                            else f"failed: {err.strip()[:200]}"),
                         "" if rc == 0 else "the container needs iptables and CAP_NET_ADMIN; or give "
                                            "driver_options.k8s_debug_image (docs/egress.md) for an ephemeral "
                                            "NET_ADMIN container"))
    return out


def check_envoy(admin_url: str) -> list[Check]:
    """Envoy admin answers /server_info, and the bootstrap has an admin runtime layer (/runtime_modify works)."""
    base = admin_url.rstrip("/")
    try:
        info = requests.get(base + "/server_info", timeout=HTTP_TIMEOUT)
        info.raise_for_status()
        version = info.json().get("version", "?")
    except (requests.RequestException, ValueError) as exc:
        return [Check("envoy admin", False, f"{base}/server_info: {type(exc).__name__}",
                      "check the admin address (envoy `admin.address`) and that it is reachable from here")]
    checks = [Check("envoy admin", True, f"{base} envoy {version}")]
    try:
        dump = requests.get(base + "/config_dump", timeout=HTTP_TIMEOUT)
        dump.raise_for_status()
        layers = _runtime_layers(dump.json())
    except (requests.RequestException, ValueError) as exc:
        checks.append(Check("envoy admin runtime layer", False, f"cannot read /config_dump: {exc}",
                            "allow GET /config_dump on the admin listener"))
        return checks
    admin_layers = [layer.get("name", "?") for layer in layers if "admin_layer" in layer]
    checks.append(Check("envoy admin runtime layer", bool(admin_layers),
                        f"admin layer {admin_layers[0]!r}" if admin_layers else
                        f"layered_runtime has no admin_layer (layers: {[x.get('name') for x in layers]})",
                        "" if admin_layers else "add `- name: admin\\n  admin_layer: {}` to the bootstrap's "
                                                "layered_runtime.layers (else /runtime_modify answers 503)"))
    checks.append(_check_fault_filter(dump.json()))
    return checks


def _check_fault_filter(dump: Any) -> Check:
    """The dedicated fault filter (HTTPFault reading chaosext's runtime keys) is in some listener: without it the
    runtime keys the driver sets change nothing."""
    from chaosext.egress.envoy import DEFAULT_PREFIX

    found = [d for d in iter_dicts(dump) if str(d.get("@type", "")).endswith("fault.v3.HTTPFault")]
    ours = [f for f in found if str(f.get("abort_percent_runtime", "")).startswith(DEFAULT_PREFIX + ".")]
    if ours:
        return Check("envoy fault filter", True, f"HTTPFault on cluster {ours[0].get('upstream_cluster', '(any)')} "
                                                 f"reading {DEFAULT_PREFIX}.*")
    return Check("envoy fault filter", False, f"no HTTPFault filter reads {DEFAULT_PREFIX}.* runtime keys "
                                              f"({len(found)} other fault filter(s))",
                 "add the dedicated fault filter of docs/egress.md (Driver envoy) before the router of the listener "
                 "the services use for the JWKS")


def _runtime_layers(dump: dict[str, Any]) -> list[dict[str, Any]]:
    """bootstrap.layered_runtime.layers from an Envoy /config_dump document."""
    for cfg in dump.get("configs", []):
        if str(cfg.get("@type", "")).endswith("BootstrapConfigDump"):
            return list(cfg.get("bootstrap", {}).get("layered_runtime", {}).get("layers", []))
    return []


def check_approval(configuration: dict[str, Any] | None) -> Check:
    """CHAOSEXT_APPROVE names the target when it is not the local lab (else the safety control refuses the run)."""
    from chaosext.safety.controls import approval_problem

    cfg = load_config(configuration)
    if cfg.is_lab_target:
        return Check("approval", True, "the local lab: no approval needed")
    if approval_problem(cfg):
        given = f"CHAOSEXT_APPROVE={cfg.approve!r} does not name" if cfg.approve else "CHAOSEXT_APPROVE is unset for"
        return Check("approval", False, f"{given} target {cfg.target_name!r} (not the local lab: "
                                        f"{labid.lab_problem(cfg)})",
                     f"export CHAOSEXT_APPROVE={cfg.target_name} once the owners agreed (in CI: the variable "
                     f"CHAOSEXT_APPROVE of the chaos-gameday environment, docs/runbook.md)")
    return Check("approval", True, f"CHAOSEXT_APPROVE names {cfg.target_name}")


def check_discovery(configuration: dict[str, Any] | None) -> Check:
    """The IdP's OIDC discovery document names a token endpoint (or TOKEN_ENDPOINT is given)."""
    from chaosext.core.tokens import TokenError, discover_token_endpoint, token_settings

    try:
        settings = token_settings(configuration)
        if settings.token_endpoint:
            return Check("idp discovery", True, f"TOKEN_ENDPOINT={settings.token_endpoint} (discovery not used)")
        endpoint = discover_token_endpoint(settings.authority_url, timeout=HTTP_TIMEOUT)
    except TokenError as exc:
        msg, _, fix = str(exc).partition("; ")
        return Check("idp discovery", False, msg, fix or "check AUTHORITY_URL (the IdP's issuer URL)")
    return Check("idp discovery", True, f"{settings.authority_url}: token_endpoint {endpoint}")


def check_jwks_uri(configuration: dict[str, Any] | None) -> Check:
    """Warn when JWKS_URL (what the fault blocks) is not the discovery document's ``jwks_uri`` host and port: then
    the fault may block an address the services never use, and the run proves nothing. Fine when the services fetch
    the keys through a proxy (e.g. Envoy) at JWKS_URL."""
    from urllib.parse import urlparse


    cfg = load_config(configuration)
    try:
        r = requests.get(cfg.authority_url + "/.well-known/openid-configuration", timeout=HTTP_TIMEOUT)
        jwks_uri = str(r.json().get("jwks_uri") or "")
    except (requests.RequestException, ValueError, AttributeError):
        jwks_uri = ""
    if not jwks_uri:
        return Check("idp jwks_uri", False, "discovery names no jwks_uri (or did not answer)",
                     "check AUTHORITY_URL; JWKS_URL must be the address the services fetch the keys from",
                     required=False)

    def where(url: str) -> tuple[str, int]:
        u = urlparse(url)
        return u.hostname or "", u.port or (443 if u.scheme == "https" else 80)

    if where(jwks_uri) == where(cfg.jwks_url):
        return Check("idp jwks_uri", True, f"JWKS_URL is discovery's jwks_uri host:port ({jwks_uri})")
    return Check("idp jwks_uri", False, f"JWKS_URL={cfg.jwks_url} but discovery's jwks_uri is {jwks_uri}",
                 "the fault blocks JWKS_URL's host:port: set it to the address the services fetch the keys from "
                 "(fine as is if they go through a proxy at JWKS_URL)", required=False)


def check_tenant_tokens(configuration: dict[str, Any] | None) -> tuple[list[Check], dict[str, str]]:
    """A token for each tenant of TENANTS, as the run will get it (client credentials, or TOKENS_FILE), valid for
    the whole run: a "tokens" summary line, then one line per tenant. Returns the checks and the tokens (memory)."""
    from chaosext.core.tokens import TokenError, token_settings, tokens_for

    default_fix = "set TOKEN_CLIENT_ID / TOKEN_CLIENT_SECRET (or TOKENS_FILE) and AUTHORITY_URL"
    try:
        cfg = load_config(configuration)
        settings = token_settings(configuration)
    except (TokenError, ValueError) as exc:
        msg, _, fix = str(exc).partition("; ")
        return [Check("tokens", False, msg, fix or default_fix)], {}
    how = "TOKENS_FILE" if settings.tokens_file and not settings.client_id else \
        f"client credentials ({settings.source or 'secrets/env'}, {settings.auth_method})"
    lines: list[Check] = []
    got: dict[str, str] = {}
    for tenant in cfg.tenants:
        try:
            got.update(tokens_for(settings, [tenant], min_valid_seconds=cfg.outage_seconds + 600,
                                  timeout=HTTP_TIMEOUT))
            lines.append(Check(f"token: {tenant}", True, f"via {how}"))
        except TokenError as exc:
            msg, _, fix = str(exc).partition("; ")
            first = next((c for c in lines if not c.ok), None)
            if first and msg.replace(tenant, "") == first.detail.replace(first.name[len("token: "):], ""):
                msg, fix = f"same error as {first.name}", f"see {first.name}"  # one cause, said once
            lines.append(Check(f"token: {tenant}", False, msg, fix or default_fix))
    failed = [c for c in lines if not c.ok]
    summary = Check("tokens", True, f"{len(got)} tenant token(s) from {settings.authority_url} via {how}") \
        if not failed else Check("tokens", False, failed[0].detail, failed[0].fix)
    return [summary, *lines], got


def check_services(configuration: dict[str, Any] | None, tokens: dict[str, str]) -> list[Check]:
    """Each service of SERVICE_URLS answers 200 to a valid tenant token on its read route (the probes' call)."""
    from chaosext.core.services import call, read_path

    cfg = load_config(configuration)
    out = []
    for i, (name, url) in enumerate(cfg.services.items()):
        where = f"GET {url}{read_path(name)}"
        if not tokens:
            out.append(Check(f"service: {name}", False, f"{where}: not called, no valid token",
                             "fix the token checks above first"))
            continue
        tenant = list(tokens)[i % len(tokens)]
        status = call(cfg, name, url, tokens[tenant], tenant, timeout=HTTP_TIMEOUT)
        fix = {0: f"start it, or fix SERVICE_URLS ({name}={url}); run from where it is reachable (in CI: "
                  f"CHAOSEXT_RUNS_ON, or a port-forward)",
               401: f"it rejects a valid token of {tenant}: it must trust AUTHORITY_URL's issuer and keys and the "
                    f"token's audience (TOKEN_AUDIENCE)",
               403: f"it refuses tenant {tenant} with its own token: check TENANT_HEADER={cfg.tenant_header} and "
                    f"the IdP's tenant claim (TOKEN_TENANT_PARAM)",
               404: f"no read route {read_path(name)} there: check the service's URL in SERVICE_URLS"}
        detail = f"{where} as {tenant}: " + ("no answer" if status == 0 else f"HTTP {status}")
        out.append(Check(f"service: {name}", status == 200, detail,
                         "" if status == 200 else fix.get(status, "it must answer 200 to a valid token; check its "
                                                                   "logs")))
    return out


def check_audit(configuration: dict[str, Any] | None) -> Check:
    """AUDIT_SOURCE is readable with the given credentials (file directory present; Loki / ClickHouse answer)."""
    from chaosext.audit.sources import read_events

    cfg = load_config(configuration)
    name = f"audit source ({cfg.audit_kind})"
    if cfg.audit_kind == "file" and not os.path.isdir(os.path.dirname(cfg.audit_location) or "."):
        return Check(name, False, f"{cfg.audit_source}: directory does not exist",
                     "start the lab, or set AUDIT_SOURCE to file:<path the services write>, loki:<url> or "
                     "clickhouse:<url>")
    now = time.time()
    try:
        events = read_events(cfg.audit_source, "auth.degraded", now - 86400, now, tuple(cfg.services), cfg.audit_sql)
    except backends.BackendError as exc:
        kind = cfg.audit_kind.upper()
        return Check(name, False, f"{cfg.audit_source}: {exc}",
                     f"give {kind}'s credentials (docs/experiment.md, 'Secrets and authenticated backends')")
    except (requests.RequestException, OSError, ValueError, RuntimeError) as exc:
        return Check(name, False, f"{cfg.audit_source}: {type(exc).__name__}: {str(exc)[:200]}",
                     "set AUDIT_SOURCE to file:<path>, loki:<url> or clickhouse:<url> reachable from here")
    return Check(name, True, f"{cfg.audit_source}: readable ({len(events)} auth.degraded event(s) in the last 24 h)")


def run_checks(target: str = "local", via: str = "", prometheus_url: str = "", alertmanager_url: str = "",
               state_dir: str = "", kube_client: Any = None) -> list[Check]:
    """Every check the target and fault method need, in the order a person would fix them."""
    kind, value = parse_target(target)
    via = via or DEFAULT_VIA[kind]
    if via not in VIAS:
        raise ValueError(f"unknown fault method {via!r}: use one of {', '.join(VIAS)}")
    configuration: dict[str, Any] = {"fault_target": target, "fault_via": via}
    if state_dir:
        configuration["chaosext_lab_dir"] = state_dir
    checks: list[Check] = [check_approval(configuration)]
    options = _fault_options(via, target, configuration)
    if via == "iptables":
        if kind == "envoy":
            raise ValueError(f"--via iptables works on {VIAS['iptables']}, not {target}")
        if kind == "k8s-pod":  # rules go into the pod's network namespace through the API server
            checks += check_kube(value.split("/", 1)[0] if "/" in value else "default", "iptables-in-pod",
                                 kube_client, value, options)
        else:
            netns, pid = (value if kind == "netns" else ""), (value if kind == "pid" else "")
            checks += [check_rules("iptables", netns, pid), check_rules("ip6tables", netns, pid)]
    elif via == "envoy":
        if kind != "envoy":
            raise ValueError(f"--via envoy needs --target {VIAS['envoy']}, not {target}")
        checks += check_envoy(value)
    else:
        if kind != "k8s-pod":
            raise ValueError(f"--via {via} needs --target {VIAS[via]}, not {target}")
        checks += check_kube(value.split("/", 1)[0] if "/" in value else "default", via, kube_client, value,
                             options)
    checks.append(check_k6())
    checks.append(check_discovery(configuration))
    checks.append(check_jwks_uri(configuration))
    token_checks, tokens = check_tenant_tokens(configuration)
    checks += token_checks
    checks += check_services(configuration, tokens)
    cfg = load_config(configuration)
    for name, flag in (("prometheus", prometheus_url), ("alertmanager", alertmanager_url)):
        given = setting(configuration, f"{name}_url")  # the one resolver: configuration, then env
        lab = getattr(cfg, f"{name}_url") if cfg.lab_running else ""
        url, source = ((flag, "flag") if flag else (given, "env") if given else (lab, "lab state"))
        checks.append(check_http(name, url, "/-/ready", source))
        if name == "prometheus" and checks[-1].ok:
            checks += check_metrics(url)
    checks.append(check_audit(configuration))
    return checks


def check_metrics(prometheus_url: str) -> list[Check]:
    """Prometheus holds series for every selector of the metric contract (METRIC_* settings). Missing series are
    warnings (a service without traffic has no request series yet); a request counter without the status or service
    label is an error (the error rate could not be judged)."""
    from chaosext.metrics import contract, prom

    try:
        c = contract.current()
    except contract.ContractError as exc:
        return [Check("metric contract", False, str(exc), "fix the METRIC_* settings named above")]
    wanted = [("metric: requests", c.total_selector(), "METRIC_REQUESTS / METRIC_TENANT_LABEL / "
               "METRIC_REQUESTS_MATCHERS"),
              ("metric: cache expired", c.cache_expired, "METRIC_CACHE_EXPIRED"),
              ("metric: cache stale", c.cache_stale, "METRIC_CACHE_STALE"),
              ("metric: cache lookups", c.cache_lookups, "METRIC_CACHE_LOOKUPS"),
              ("metric: unverified accepts", c.unverified_accepts, "METRIC_UNVERIFIED_ACCEPTS")]
    out = []
    for name, selector, named in wanted:
        if not selector:  # METRIC_UNVERIFIED_ACCEPTS=off
            out.append(Check(name, True, f"{named}=off: not checked", required=False))
            continue
        try:
            found = prom.query(prometheus_url, f"count({selector})", timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            out.append(Check(name, False, f"{selector}: {exc}", "check PROMETHEUS_URL and its credentials"))
            continue
        n = int(float(found[0]["value"][1])) if found else 0
        if n and name == "metric: requests":
            labels = {lbl for s in prom.query(prometheus_url, f"topk(1, {selector})", timeout=HTTP_TIMEOUT)
                      for lbl in s["metric"]}
            missing = [lbl for lbl in (c.status_label, c.service_label) if lbl not in labels]
            if missing:
                out.append(Check(name, False, f"{selector} has no label(s) {', '.join(missing)}",
                                 "set METRIC_STATUS_LABEL / METRIC_SERVICE_LABEL to the labels your services use"))
                continue
        # no series at all may also mean no traffic yet (a fresh lab): a warning; wrong labels on series are an error
        out.append(Check(name, bool(n), f"{selector}: {n} series" if n else
                         f"{selector}: no series in Prometheus (no traffic yet, or other metric names?)",
                         "" if n else f"set {named} to what your services export (docs/experiment.md, "
                                      f"'Adapting to your services' metrics')", required=False))
    return out


def render_table(checks: list[Check]) -> str:
    """A fixed-width table: status, check, detail, and the fix under each failed line."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'STATUS':8} {'CHECK':{width}}  DETAIL"]
    for c in checks:
        lines.append(f"{c.status:8} {c.name:{width}}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"{'':8} {'':{width}}  fix: {c.fix}")
    return "\n".join(lines)


@click.command(epilog="""\b
Examples:
  chaosext doctor                                   # local iptables fault, lab's Prometheus/Alertmanager
  chaosext doctor --target netns:chaosext-lab
  chaosext doctor --target chaosext-lab/app.kubernetes.io/component=tenant-service --via k8s-networkpolicy
  chaosext doctor --target envoy:http://127.0.0.1:9901
  PROMETHEUS_URL=http://prom:9090 ALERTMANAGER_URL=http://am:9093 chaosext doctor --json
""")
@click.option("--target", default=lambda: setting(None, "fault_target", "local"), show_default="$FAULT_TARGET or local",
              help="where the fault goes: local, netns:<name>, pid:<pid>, k8s-pod:<ns>/<pod>, <ns>/<selector>, "
                   "envoy:<admin-url>")
@click.option("--via", type=click.Choice(list(VIAS)), default=lambda: setting(None, "fault_via") or None,
              show_default="$FAULT_VIA or derived from --target", help="fault method")
@click.option("--prometheus-url", default="", help="default: $PROMETHEUS_URL, else the running lab's")
@click.option("--alertmanager-url", default="", help="default: $ALERTMANAGER_URL, else the running lab's")
@click.option("--state-dir", default="", help="lab state directory (default: $CHAOSEXT_LAB_DIR, else "
              "./.chaosext-lab; as root /var/lib/chaosext/lab)")
@click.option("--json", "as_json", is_flag=True, help="print the checks as JSON instead of a table")
def doctor(target: str, via: str | None, prometheus_url: str, alertmanager_url: str, state_dir: str,
           as_json: bool) -> None:
    """Check this machine can run the experiment against TARGET; exit 1 if something required is missing."""
    try:
        checks = run_checks(target, via or "", prometheus_url, alertmanager_url, state_dir)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    missing = [c for c in checks if c.status == "MISSING"]
    if as_json:
        click.echo(json.dumps({"ok": not missing, "checks": [asdict(c) | {"status": c.status} for c in checks]},
                              indent=2))
    else:
        click.echo(render_table(checks))
        click.echo(f"\n{len(missing)} required check(s) missing: fix them before `chaos run`." if missing
                   else "\nall required checks passed.")
    raise SystemExit(1 if missing else 0)

