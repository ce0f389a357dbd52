"""k6-operator: run the tenant load script on N pods through a ``TestRun`` (k6.io/v1alpha1) instead of a local k6.

The script is served from a ConfigMap (``spec.script.configMap``); ``spec.parallelism`` splits the arrival rate
between the runner pods (k6 execution segments), so K6_RATE stays the total. The objects carry the labels
``app.kubernetes.io/managed-by=chaosext`` and ``chaosext.io/run-id`` like every Kubernetes object chaosext creates.
Kubernetes access goes through the kubernetes client (``chaosk8s.create_k8s_api_client``: kubeconfig, in-pod, or
KUBERNETES_HOST/KUBERNETES_API_KEY in secrets or the environment).
"""
import secrets as _secrets
from typing import Any

__all__ = ["GROUP", "VERSION", "PLURAL", "build_testrun", "build_configmap", "submit_testrun", "delete_testrun",
           "testrun_status", "api_client"]

GROUP, VERSION, PLURAL = "k6.io", "v1alpha1", "testruns"
MANAGED_BY = {"app.kubernetes.io/managed-by": "chaosext"}
#: seconds each Kubernetes API call may take
API_TIMEOUT = 15


def _labels(run_id: str) -> dict[str, str]:
    return {**MANAGED_BY, "chaosext.io/run-id": run_id}


def build_testrun(name: str, namespace: str, parallelism: int, configmap: str, script_file: str,
                  env: dict[str, str], run_id: str, arguments: str = "--quiet") -> dict[str, Any]:
    """The TestRun object (plain dict) for the k6-operator. Raises ValueError on bad input."""
    if parallelism < 1:
        raise ValueError(f"parallelism={parallelism}: give the number of k6 runner pods (>= 1)")
    if not name or not namespace or not configmap or not script_file:
        raise ValueError("name, namespace, configmap and script_file must all be non-empty")
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TestRun",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(run_id)},
        "spec": {
            "parallelism": parallelism,
            "script": {"configMap": {"name": configmap, "file": script_file}},
            "arguments": arguments,
            "runner": {"env": [{"name": k, "value": str(v)} for k, v in sorted(env.items())],
                       "metadata": {"labels": _labels(run_id)}},
        },
    }


def build_configmap(name: str, namespace: str, script_file: str, script_text: str, run_id: str) -> dict[str, Any]:
    """The ConfigMap holding the script (plain dict)."""
    if len(script_text.encode()) > 1_000_000:
        raise ValueError("the script is larger than a ConfigMap can hold (1 MiB); use a volumeClaim instead")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": _labels(run_id)},
            "data": {script_file: script_text}}


def api_client(secrets: dict = None) -> Any:
    """A kubernetes ApiClient configured like chaostoolkit-kubernetes does."""
    from chaosk8s import create_k8s_api_client

    return create_k8s_api_client(secrets)


def submit_testrun(name: str, namespace: str, parallelism: int, configmap: str, script_file: str,
                   env: dict[str, str], script_text: str = "", secrets: dict = None) -> dict[str, Any]:
    """Create (or replace) the script ConfigMap when ``script_text`` is given, then create the TestRun.

    An existing TestRun of the same name is an error (the operator does not restart a finished one): delete it first.
    """
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    run_id = _secrets.token_hex(4)
    testrun = build_testrun(name, namespace, parallelism, configmap, script_file, env, run_id)
    api = api_client(secrets)
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    configmap_action = "kept"
    if script_text:
        body = build_configmap(configmap, namespace, script_file, script_text, run_id)
        try:
            core.create_namespaced_config_map(namespace, body, _request_timeout=API_TIMEOUT)
            configmap_action = "created"
        except ApiException as exc:
            if exc.status != 409:
                raise RuntimeError(f"creating ConfigMap {namespace}/{configmap} failed: {exc.status} {exc.reason}")
            core.replace_namespaced_config_map(configmap, namespace, body, _request_timeout=API_TIMEOUT)
            configmap_action = "replaced"
    try:
        created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, testrun,
                                                         _request_timeout=API_TIMEOUT)
    except ApiException as exc:
        hint = {404: "is the k6-operator installed (CRD testruns.k6.io)?",
                409: f"a TestRun {name} exists already; delete it (stop_k6_testrun) first"}.get(exc.status, "")
        raise RuntimeError(f"creating TestRun {namespace}/{name} failed: {exc.status} {exc.reason}. {hint}".strip())
    return {"name": name, "namespace": namespace, "run_id": run_id, "parallelism": parallelism,
            "configmap": configmap_action, "uid": created.get("metadata", {}).get("uid", ""),
            "rate": env.get("K6_RATE", "")}


def delete_testrun(name: str, namespace: str, secrets: dict = None) -> dict[str, Any]:
    """Delete the TestRun (foreground: its jobs and pods go with it); an absent one counts as deleted."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    custom = client.CustomObjectsApi(api_client(secrets))
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                               body=client.V1DeleteOptions(propagation_policy="Foreground"),
                                               _request_timeout=API_TIMEOUT)
        return {"name": name, "namespace": namespace, "deleted": True, "existed": True}
    except ApiException as exc:
        if exc.status == 404:
            return {"name": name, "namespace": namespace, "deleted": True, "existed": False}
        raise RuntimeError(f"deleting TestRun {namespace}/{name} failed: {exc.status} {exc.reason}")


def testrun_status(name: str, namespace: str, secrets: dict = None) -> dict[str, Any]:
    """The TestRun's ``status.stage`` (initialization, initialized, created, started, stopped, finished, error)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    custom = client.CustomObjectsApi(api_client(secrets))
    try:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                  _request_timeout=API_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return {"name": name, "namespace": namespace, "exists": False, "stage": "", "finished": False}
        raise RuntimeError(f"reading TestRun {namespace}/{name} failed: {exc.status} {exc.reason}")
    stage = (obj.get("status") or {}).get("stage", "")
    return {"name": name, "namespace": namespace, "exists": True, "stage": stage,
            "finished": stage in ("finished", "error"), "parallelism": obj.get("spec", {}).get("parallelism")}
