"""What the fault needs from the machine and the target, checked before anything changes (``chaosext doctor`` and
the safety control's pre-flight, ``chaosext.safety.preflight``): the target exists, the driver's tools and rights
(iptables and CAP_NET_ADMIN where the rules go; the Envoy admin API, its runtime layer and the fault filter; the
Kubernetes API, RBAC and the target pods)."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import requests

from chaosext.core import kube
from chaosext.core.findings import HTTP_TIMEOUT, Finding
from chaosext.core.settings import Secrets
from chaosext.core.walk import iter_dicts
from chaosext.egress.actions import fault_settings, target_problem
from chaosext.run.context import RunContext

__all__ = ["fault_findings", "check_rules", "check_kube", "check_envoy", "K8S_PERMISSIONS"]

CMD_TIMEOUT = 10.0


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT, check=False)


def check_rules(binary: str, netns: str = "", pid: str = "") -> Finding:
    """The firewall tool exists and listing the OUTPUT chain works (proves CAP_NET_ADMIN in that namespace)."""
    where = f" in netns {netns}" if netns else f" in pid {pid}'s netns" if pid else ""
    name = f"{binary}{where}"
    path = shutil.which(binary)
    if not path:
        return Finding(name, False, f"{binary} not found on PATH",
                     "install it: apt-get install -y iptables (or run `bash scripts/setup`)")
    argv = [binary, "-w", "5", "-S", "OUTPUT"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    elif pid:
        argv = ["nsenter", "-t", pid, "-n", *argv]
    try:
        proc = _run(argv)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding(name, False, f"`{' '.join(argv)}` failed: {exc}", "run as root or with CAP_NET_ADMIN")
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        fix = "run as root (sudo) or grant CAP_NET_ADMIN to this process"
        if netns and "namespace" in " ".join(err).lower():
            fix = f"create the namespace first (`ip netns add {netns}`) or pick one from `ip netns list`"
        elif pid and not os.path.exists(f"/proc/{pid}"):
            fix = "pass the pid of a running process of the target (`pgrep -f <service>`)"
        return Finding(name, False, f"cannot list rules: {err[-1] if err else proc.returncode}", fix)
    return Finding(name, True, f"{path}: rules listable (CAP_NET_ADMIN usable{where})")


#: (verb, group, resource) the fault needs per method
#: the run's cluster lock (chaosext.safety.lock.ClusterLease), on every cluster target
_LEASE = [(verb, "coordination.k8s.io", "leases") for verb in ("get", "create", "update", "delete")]
#: the fault's cluster-side deadline (the Job that owns the NetworkPolicy / VirtualService, chaosext.egress.kubernetes)
_DEADLINE_JOB = [(verb, "batch", "jobs") for verb in ("create", "delete", "list")]
K8S_PERMISSIONS: dict[str, list[tuple[str, str, str]]] = {
    "k8s-networkpolicy": [("create", "networking.k8s.io", "networkpolicies"),
                          ("delete", "networking.k8s.io", "networkpolicies"),
                          ("list", "networking.k8s.io", "networkpolicies"),
                          ("list", "", "pods"), *_DEADLINE_JOB, *_LEASE],
    "iptables-in-pod": [("list", "", "pods"), ("create", "", "pods/exec"), *_LEASE],
    "istio": [("create", "networking.istio.io", "virtualservices"),
              ("delete", "networking.istio.io", "virtualservices"),
              ("list", "networking.istio.io", "virtualservices"),
              ("list", "", "pods"), *_DEADLINE_JOB, *_LEASE],
}


def check_kube(namespace: str, via: str, api_client: Any = None, target: str = "",
               options: dict[str, Any] | None = None, secrets: Secrets = None) -> list[Finding]:
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
    tls: list[Finding] = []
    if api_client is None:
        try:
            context = kube.describe(options, secrets)
            src = kube.source(options, secrets)
            api_client = kube.api_client(options, secrets)
        except kube.KubeConfigError as exc:
            return [Finding("kube context", False, str(exc),
                          "set KUBECONFIG and KUBE_CONTEXT (kind: `kind get kubeconfig`), or KUBERNETES_HOST + "
                          "KUBERNETES_API_KEY, or KUBE_API_URL with `kubectl proxy`; in CI: the chaos-gameday "
                          "secret KUBECONFIG")]
        if not src.tls_verified:
            tls = [Finding("kube tls", False, f"{src.where}: the server's certificate is not verified (chaostoolkit-"
                                            f"kubernetes' default for KUBERNETES_HOST), the API key goes to whoever "
                                            f"answers", "set KUBERNETES_VERIFY_SSL=true and KUBERNETES_CA_CERT_FILE "
                                                        "to the cluster's CA", required=False)]
    checks = [Finding("kube context", True, f"{context}: {api_client.configuration.host}"), *tls]
    try:
        version = client.VersionApi(api_client).get_code(_request_timeout=HTTP_TIMEOUT)
        checks.append(Finding("kube api", True, f"{api_client.configuration.host}: Kubernetes {version.git_version}"))
    except Exception as exc:
        checks.append(Finding("kube api", False, f"GET {api_client.configuration.host}/version: "
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
            checks.append(Finding(f"k8s: {what}", False, f"access review failed: {str(exc).splitlines()[0]}",
                                "check the API server is reachable from here (`kubectl cluster-info`)"))
            continue
        allowed = bool(review.status and review.status.allowed)
        reason = (review.status.reason if review.status else "") or ("allowed" if allowed else "denied")
        checks.append(Finding(f"k8s: {what}", allowed, reason,
                            "" if allowed else f"grant it, e.g. a Role with verbs [{verb}] on {resource} "
                                               f"(apiGroup '{group}') bound to your user in {namespace}"))
    if target:
        checks += _check_pods(target, via, api_client, options, pod_runners, FaultError)
    return checks


def _check_pods(target: str, via: str, api: Any, options: dict[str, Any], pod_runners: Any,
                fault_error: type[Exception]) -> list[Finding]:
    """The target selects running pods (a NetworkPolicy / VirtualService selecting nothing blocks nothing), and for
    iptables-in-pod the first pod can list its OUTPUT rules."""
    namespace, _, selector = target.partition("/")
    if not selector:
        return [Finding("k8s: target pods", True, f"every pod of namespace {namespace}")]
    try:
        runners = pod_runners(target, options, api)
    except fault_error as exc:  # TargetNotFound is a FaultError
        return [Finding("k8s: target pods", False, str(exc),
                      f"check the namespace and selector: `kubectl get pods -n {namespace} -l {selector}` "
                      f"(or the pod name) must list running pods")]
    out = [Finding("k8s: target pods", True, f"{len(runners)} running pod(s): "
                                           f"{', '.join(r.name for r in runners[:5])}")]
    if via == "iptables-in-pod":
        argv = ["iptables", "-w", "5", "-S", "OUTPUT"]
        try:
            rc, _, err = runners[0].run(argv)
        except Exception as exc:
            rc, err = -1, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        out.append(Finding(f"iptables in {runners[0].label}", rc == 0,
                         f"`{runners[0].shown(argv)}`: " + ("rules listable (NET_ADMIN usable)" if rc == 0
                                                            else f"failed: {err.strip()[:200]}"),
                         "" if rc == 0 else "the container needs iptables and CAP_NET_ADMIN; or give "
                                            "driver_options.k8s_debug_image (docs/egress.md) for an ephemeral "
                                            "NET_ADMIN container"))
    return out


def check_envoy(admin_url: str) -> list[Finding]:
    """Envoy admin answers /server_info, and the bootstrap has an admin runtime layer (/runtime_modify works)."""
    base = admin_url.rstrip("/")
    try:
        info = requests.get(base + "/server_info", timeout=HTTP_TIMEOUT)
        info.raise_for_status()
        version = info.json().get("version", "?")
    except (requests.RequestException, ValueError) as exc:
        return [Finding("envoy admin", False, f"{base}/server_info: {type(exc).__name__}",
                      "check the admin address (envoy `admin.address`) and that it is reachable from here")]
    checks = [Finding("envoy admin", True, f"{base} envoy {version}")]
    try:
        dump = requests.get(base + "/config_dump", timeout=HTTP_TIMEOUT)
        dump.raise_for_status()
        layers = _runtime_layers(dump.json())
    except (requests.RequestException, ValueError) as exc:
        checks.append(Finding("envoy admin runtime layer", False, f"cannot read /config_dump: {exc}",
                            "allow GET /config_dump on the admin listener"))
        return checks
    admin_layers = [layer.get("name", "?") for layer in layers if "admin_layer" in layer]
    checks.append(Finding("envoy admin runtime layer", bool(admin_layers),
                        f"admin layer {admin_layers[0]!r}" if admin_layers else
                        f"layered_runtime has no admin_layer (layers: {[x.get('name') for x in layers]})",
                        "" if admin_layers else "add `- name: admin\\n  admin_layer: {}` to the bootstrap's "
                                                "layered_runtime.layers (else /runtime_modify answers 503)"))
    checks.append(_check_fault_filter(dump.json()))
    return checks


def _check_fault_filter(dump: Any) -> Finding:
    """The dedicated fault filter (HTTPFault reading chaosext's runtime keys) is in some listener: without it the
    runtime keys the driver sets change nothing."""
    from chaosext.egress.envoy import DEFAULT_PREFIX  # the Envoy driver only when an Envoy is checked

    found = [d for d in iter_dicts(dump) if str(d.get("@type", "")).endswith("fault.v3.HTTPFault")]
    ours = [f for f in found if str(f.get("abort_percent_runtime", "")).startswith(DEFAULT_PREFIX + ".")]
    if ours:
        return Finding("envoy fault filter", True, f"HTTPFault on cluster {ours[0].get('upstream_cluster', '(any)')} "
                                                 f"reading {DEFAULT_PREFIX}.*")
    return Finding("envoy fault filter", False, f"no HTTPFault filter reads {DEFAULT_PREFIX}.* runtime keys "
                                              f"({len(found)} other fault filter(s))",
                 "add the dedicated fault filter of docs/egress.md (Driver envoy) before the router of the listener "
                 "the services use for the JWKS")


def _runtime_layers(dump: dict[str, Any]) -> list[dict[str, Any]]:
    """bootstrap.layered_runtime.layers from an Envoy /config_dump document."""
    for cfg in dump.get("configs", []):
        if str(cfg.get("@type", "")).endswith("BootstrapConfigDump"):
            return list(cfg.get("bootstrap", {}).get("layered_runtime", {}).get("layers", []))
    return []




def fault_findings(ctx: RunContext) -> list[Finding]:
    """Everything the run's fault needs, in the order a person fixes it (``FAULT_VIA`` / ``FAULT_TARGET`` are
    already parsed by the configuration check)."""
    cfg = ctx.cfg
    fault = cfg.fault
    options = fault_settings(ctx).options
    out: list[Finding] = []
    if fault.via == "iptables":
        items = [item.partition(":") for item in fault.items]
        for kind, _, value in items:
            if kind in ("local", "netns", "pid") and "*" not in value:
                netns, pid = (value if kind == "netns" else ""), (value if kind == "pid" else "")
                out += [check_rules("iptables", netns, pid), check_rules("ip6tables", netns, pid)]
        for _, _, value in [i for i in items if i[0] == "k8s-pod"][:1]:  # rules go into the pods' netns via the API
            out += check_kube(value.split("/", 1)[0], "iptables-in-pod", None, value, options, ctx.secrets)
    elif fault.via == "envoy":
        out += check_envoy(fault.admin_url)
    else:
        value = fault.items[0]
        out += check_kube(value.split("/", 1)[0], fault.via, None, value, options, ctx.secrets)
    problem = target_problem(ctx)
    out.append(Finding("fault target", not problem, problem or f"{fault.via} on {fault.text}: exists and reachable",
                       "" if not problem else "fix FAULT_TARGET (docs/egress.md lists each driver's targets)"))
    return out
