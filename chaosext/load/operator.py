"""k6-operator: run the tenant load script on N pods through a ``TestRun`` (k6.io/v1alpha1) instead of a local k6.

The script is served from a ConfigMap (``spec.script.configMap``), with the load plan (``k6-load-plan.json``,
``chaosext.load.plan``) beside it: the operator mounts the whole ConfigMap at ``/test`` in the runner pods, where the
script opens the plan by its name (``TARGET_JSON``, relative to the script); ``spec.parallelism`` splits the arrival
rate between the runner pods (k6 execution segments), so K6_RATE stays the total. The OAuth2 client credentials the
script needs for its tokens (``TOKEN_CLIENT_ID`` / ``TOKEN_CLIENT_SECRET`` / ``TOKEN_CLIENTS``) go into a Secret
``<name>-token-client`` created with the TestRun and read by the runner pods through ``env[].valueFrom.secretKeyRef``:
never in the TestRun, the ConfigMap or an argument. The Secret is owned by the TestRun (``ownerReferences``, so the
cluster deletes it with it) and :func:`delete_testrun` deletes it too. Every object carries the labels
``app.kubernetes.io/managed-by=chaosext`` and ``chaosext.io/run-id`` like every Kubernetes object chaosext creates.
Kubernetes access goes through chaosext's one client (:func:`chaosext.core.kube.api_client`: KUBE_API_URL,
kubeconfig and KUBERNETES_CONTEXT, in-pod, or KUBERNETES_HOST/KUBERNETES_API_KEY in secrets or the environment).
"""
from __future__ import annotations

import secrets as _secrets
from collections.abc import Mapping
from typing import Any

from chaosext.core import kube
from chaosext.core.errors import ChaosextError, ConfigError
from chaosext.core.kube import KubeOptions
from chaosext.core.settings import Secrets

__all__ = ["GROUP", "VERSION", "PLURAL", "OperatorError", "build_testrun", "build_configmap", "build_secret",
           "secret_name", "submit_testrun", "delete_testrun", "testrun_status", "api_client"]

GROUP, VERSION, PLURAL = "k6.io", "v1alpha1", "testruns"
MANAGED_BY = {"app.kubernetes.io/managed-by": "chaosext"}
#: seconds each Kubernetes API call may take
API_TIMEOUT = 15


class OperatorError(ChaosextError, RuntimeError):
    """The Kubernetes API refused a k6-operator object; the message says what to do."""


def _labels(run_id: str) -> dict[str, str]:
    return {**MANAGED_BY, "chaosext.io/run-id": run_id}


def secret_name(name: str) -> str:
    """The Secret holding a TestRun's client credentials."""
    return f"{name}-token-client"


def build_testrun(name: str, namespace: str, parallelism: int, configmap: str, script_file: str,
                  env: Mapping[str, str], run_id: str, arguments: str = "--quiet",
                  secret_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The TestRun object (plain dict) for the k6-operator: ``env`` as plain values, ``secret_keys`` read from the
    Secret :func:`secret_name` (``valueFrom.secretKeyRef``). Raises ValueError on bad input."""
    if parallelism < 1:
        raise ConfigError(f"parallelism={parallelism}: give the number of k6 runner pods (>= 1)")
    if not name or not namespace or not configmap or not script_file:
        raise ConfigError("name, namespace, configmap and script_file must all be non-empty")
    clash = sorted(set(env) & set(secret_keys))
    if clash:
        raise ConfigError(f"{', '.join(clash)} must come from the credentials Secret, not from env")
    plain: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in sorted(env.items())]
    from_secret: list[dict[str, Any]] = [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name(name), "key": k}}} for k in sorted(secret_keys)]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TestRun",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(run_id)},
        "spec": {
            "parallelism": parallelism,
            "script": {"configMap": {"name": configmap, "file": script_file}},
            "arguments": arguments,
            "runner": {"env": plain + from_secret, "metadata": {"labels": _labels(run_id)}},
        },
    }


def build_configmap(name: str, namespace: str, script_file: str, script_text: str, run_id: str,
                    files: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ConfigMap holding the script and ``files`` beside it (the load plan), as a plain dict."""
    data = {**(files or {}), script_file: script_text}
    if sum(len(k.encode()) + len(v.encode()) for k, v in data.items()) > 1_000_000:
        raise ConfigError("the script and the load plan are larger than a ConfigMap can hold (1 MiB); use a "
                          "volumeClaim instead")
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": _labels(run_id)},
            "data": data}


def build_secret(testrun: str, namespace: str, values: Mapping[str, str], run_id: str) -> dict[str, Any]:
    """The Opaque Secret with the runner pods' client credentials (``stringData``, write-only in the API)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": secret_name(testrun), "namespace": namespace, "labels": _labels(run_id)},
            "stringData": {k: str(v) for k, v in values.items()}}


def api_client(options: KubeOptions = None, secrets: Secrets = None) -> Any:
    """chaosext's one Kubernetes client (:func:`chaosext.core.kube.api_client`)."""
    return kube.api_client(options, secrets)


def _failed(what: str, exc: Any, hint: str = "") -> OperatorError:
    return OperatorError(f"{what} failed: {getattr(exc, 'status', '')} {getattr(exc, 'reason', exc)}. {hint}".strip())


def submit_testrun(name: str, namespace: str, parallelism: int, configmap: str, script_file: str,
                   env: Mapping[str, str], script_text: str = "", secrets: Secrets = None,
                   options: KubeOptions = None, secret_env: Mapping[str, str] | None = None,
                   files: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Create (or replace) the script ConfigMap when ``script_text`` is given, with ``files`` (the load plan) beside
    the script; without ``script_text`` merge ``files`` into the existing ConfigMap (your script stays). Then the
    credentials Secret when ``secret_env`` holds any (``k6_token_env``'s secret part), then the TestRun, which becomes
    the Secret's owner.

    An existing TestRun of the same name is an error (the operator does not restart a finished one): delete it first.
    ``secrets`` / ``options``: the Kubernetes client's credentials and settings (``kube_api_url``, ``kube_context``).
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    run_id = _secrets.token_hex(4)
    creds = {k: v for k, v in (secret_env or {}).items() if v}
    testrun = build_testrun(name, namespace, parallelism, configmap, script_file, env, run_id,
                            secret_keys=tuple(creds))
    api = api_client(options, secrets)
    core: Any = client.CoreV1Api(api)  # plain dict bodies, as the API takes them
    custom: Any = client.CustomObjectsApi(api)
    configmap_action = "kept"
    if script_text:
        body = build_configmap(configmap, namespace, script_file, script_text, run_id, files)
        try:
            core.create_namespaced_config_map(namespace, body, _request_timeout=API_TIMEOUT)
            configmap_action = "created"
        except ApiException as exc:
            if exc.status != 409:
                raise _failed(f"creating ConfigMap {namespace}/{configmap}", exc) from None
            core.replace_namespaced_config_map(configmap, namespace, body, _request_timeout=API_TIMEOUT)
            configmap_action = "replaced"
    elif files:
        try:  # the user's own script stays; the run's plan goes in beside it
            core.patch_namespaced_config_map(configmap, namespace, {"data": dict(files)},
                                             _request_timeout=API_TIMEOUT)
            configmap_action = f"kept, {', '.join(files)} added"
        except ApiException as exc:
            raise _failed(f"adding {', '.join(files)} to ConfigMap {namespace}/{configmap}", exc,
                          "create the ConfigMap with the script first, or pass create_configmap=true") from None
    secret_action = "none (no client credentials)"
    if creds:
        secret = build_secret(name, namespace, creds, run_id)
        try:
            core.create_namespaced_secret(namespace, secret, _request_timeout=API_TIMEOUT)
            secret_action = "created"
        except ApiException as exc:
            if exc.status != 409:
                raise _failed(f"creating Secret {namespace}/{secret_name(name)}", exc,
                              "grant this identity create on secrets in the namespace") from None
            core.replace_namespaced_secret(secret_name(name), namespace, secret, _request_timeout=API_TIMEOUT)
            secret_action = "replaced"
    try:
        created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, testrun,
                                                         _request_timeout=API_TIMEOUT)
    except ApiException as exc:
        if creds:
            _delete_secret(core, name, namespace)  # no credentials left behind without their TestRun
        hint = {404: "is the k6-operator installed (CRD testruns.k6.io)?",
                409: f"a TestRun {name} exists already; delete it (stop_k6_testrun) first"}.get(exc.status or 0, "")
        raise _failed(f"creating TestRun {namespace}/{name}", exc, hint) from None
    uid = created.get("metadata", {}).get("uid", "")
    if creds and uid:
        owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TestRun", "name": name, "uid": uid}
        try:  # the cluster deletes the Secret with its TestRun, whoever deletes that
            core.patch_namespaced_secret(secret_name(name), namespace, {"metadata": {"ownerReferences": [owner]}},
                                         _request_timeout=API_TIMEOUT)
        except ApiException:
            pass  # delete_testrun still deletes it by name
    return {"name": name, "namespace": namespace, "run_id": run_id, "parallelism": parallelism,
            "configmap": configmap_action, "secret": secret_action, "uid": uid, "rate": env.get("K6_RATE", "")}


def _delete_secret(core: Any, name: str, namespace: str) -> bool:
    """Delete the TestRun's credentials Secret; False when there was none."""
    from kubernetes.client.exceptions import ApiException

    try:
        core.delete_namespaced_secret(secret_name(name), namespace, _request_timeout=API_TIMEOUT)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise _failed(f"deleting Secret {namespace}/{secret_name(name)}", exc) from None


def delete_testrun(name: str, namespace: str, secrets: Secrets = None,
                   options: KubeOptions = None) -> dict[str, Any]:
    """Delete the TestRun (foreground: its jobs and pods go with it) and its credentials Secret; an absent one
    counts as deleted."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = api_client(options, secrets)
    custom: Any = client.CustomObjectsApi(api)
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                               body=client.V1DeleteOptions(propagation_policy="Foreground"),
                                               _request_timeout=API_TIMEOUT)
        existed = True
    except ApiException as exc:
        if exc.status != 404:
            raise _failed(f"deleting TestRun {namespace}/{name}", exc) from None
        existed = False
    out: dict[str, Any] = {"name": name, "namespace": namespace, "deleted": True, "existed": existed}
    if _delete_secret(client.CoreV1Api(api), name, namespace):
        out["secret_deleted"] = secret_name(name)
    return out


def testrun_status(name: str, namespace: str, secrets: Secrets = None,
                   options: KubeOptions = None) -> dict[str, Any]:
    """The TestRun's ``status.stage`` (initialization, initialized, created, started, stopped, finished, error)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom: Any = client.CustomObjectsApi(api_client(options, secrets))
    try:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                  _request_timeout=API_TIMEOUT)
    except ApiException as exc:
        if exc.status == 404:
            return {"name": name, "namespace": namespace, "exists": False, "stage": "", "finished": False}
        raise _failed(f"reading TestRun {namespace}/{name}", exc) from None
    stage = (obj.get("status") or {}).get("stage", "")
    return {"name": name, "namespace": namespace, "exists": True, "stage": stage,
            "finished": stage in ("finished", "error"), "parallelism": obj.get("spec", {}).get("parallelism")}
