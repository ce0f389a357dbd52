"""`chaosext doctor`: check that this machine can run the JWKS-outage experiment against a target.

Each check says what it looked at, whether it passed, and — when it did not — the exact fix. Required checks that fail
make the command exit 1, so CI and game-day operators stop before any fault is injected.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

import click
import requests

__all__ = ["Check", "parse_target", "run_checks", "doctor", "VIAS"]

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
    try:
        resp = requests.get(full, timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        return Check(name, False, f"{full} ({source}) unreachable: {type(exc).__name__}",
                     f"start it, or point {env} (or --{name}-url) at a running {name}")
    if resp.status_code >= 300:
        return Check(name, False, f"{full} ({source}) answered HTTP {resp.status_code}",
                     f"wait until {name} is ready, or point {env} at a healthy one")
    return Check(name, True, f"{full} ({source}) ready")


def _kube_client() -> tuple[Any, str]:
    """(ApiClient, context name) from kubeconfig or the in-cluster service account."""
    from kubernetes import client, config

    try:
        config.load_kube_config()
        _, active = config.list_kube_config_contexts()
        return client.ApiClient(), (active or {}).get("name", "?")
    except (config.ConfigException, OSError, TypeError):
        config.load_incluster_config()
        return client.ApiClient(), "in-cluster"


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


def check_kube(namespace: str, via: str, api_client: Any = None) -> list[Check]:
    """A kube context loads and SelfSubjectAccessReview allows what the fault needs in ``namespace``."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    context = "given client"
    if api_client is None:
        try:
            api_client, context = _kube_client()
        except Exception as exc:  # noqa: BLE001 - kubernetes raises several types here
            return [Check("kube context", False, f"no kubeconfig and not in a pod: {exc}",
                          "set KUBECONFIG or `kubectl config use-context <ctx>` (kind: `kind get kubeconfig`)")]
    checks = [Check("kube context", True, f"context {context}")]
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
        except (ApiException, OSError, Exception) as exc:  # noqa: BLE001 - urllib3 errors vary
            checks.append(Check(f"k8s: {what}", False, f"access review failed: {str(exc).splitlines()[0]}",
                                "check the API server is reachable from here (`kubectl cluster-info`)"))
            continue
        allowed = bool(review.status and review.status.allowed)
        reason = (review.status.reason if review.status else "") or ("allowed" if allowed else "denied")
        checks.append(Check(f"k8s: {what}", allowed, reason,
                            "" if allowed else f"grant it, e.g. a Role with verbs [{verb}] on {resource} "
                                               f"(apiGroup '{group}') bound to your user in {namespace}"))
    return checks


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

    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if str(node.get("@type", "")).endswith("fault.v3.HTTPFault"):
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dump)
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


def _lab_urls(state_dir: str) -> dict[str, str]:
    try:
        from chaosext.lab.state import load_state
    except ImportError:
        return {}
    try:
        state = load_state(state_dir or None) or {}
    except ValueError:
        return {}
    return {k: state.get(k, "") for k in ("prometheus_url", "alertmanager_url")}


def run_checks(target: str = "local", via: str = "", prometheus_url: str = "", alertmanager_url: str = "",
               state_dir: str = "", kube_client: Any = None) -> list[Check]:
    """Every check the target and fault method need, in the order a person would fix them."""
    kind, value = parse_target(target)
    via = via or DEFAULT_VIA[kind]
    if via not in VIAS:
        raise ValueError(f"unknown fault method {via!r}: use one of {', '.join(VIAS)}")
    checks: list[Check] = []
    if via == "iptables":
        if kind == "envoy":
            raise ValueError(f"--via iptables works on {VIAS['iptables']}, not {target}")
        if kind == "k8s-pod":  # rules go into the pod's network namespace through the API server
            checks += check_kube(value.split("/", 1)[0] if "/" in value else "default", "iptables-in-pod",
                                 kube_client)
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
        checks += check_kube(value.split("/", 1)[0] if "/" in value else "default", via, kube_client)
    checks.append(check_k6())
    lab = _lab_urls(state_dir)
    for name, flag in (("prometheus", prometheus_url), ("alertmanager", alertmanager_url)):
        env = os.environ.get(name.upper() + "_URL", "")
        url, source = ((flag, "flag") if flag else (env, "env") if env else (lab.get(f"{name}_url", ""), "lab state"))
        checks.append(check_http(name, url, "/-/ready", source))
    return checks


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
@click.option("--target", default=lambda: os.environ.get("FAULT_TARGET", "local"), show_default="$FAULT_TARGET or local",
              help="where the fault goes: local, netns:<name>, pid:<pid>, k8s-pod:<ns>/<pod>, <ns>/<selector>, "
                   "envoy:<admin-url>")
@click.option("--via", type=click.Choice(list(VIAS)), default=lambda: os.environ.get("FAULT_VIA") or None,
              show_default="$FAULT_VIA or derived from --target", help="fault method")
@click.option("--prometheus-url", default="", help="default: $PROMETHEUS_URL, else the running lab's")
@click.option("--alertmanager-url", default="", help="default: $ALERTMANAGER_URL, else the running lab's")
@click.option("--state-dir", default="", help="lab state directory (default: $CHAOSEXT_LAB_DIR or ./.chaosext-lab)")
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

