"""Kubernetes drivers: a deny-JWKS NetworkPolicy, an Istio VirtualService fault, and running iptables in a pod.

Target for ``k8s-networkpolicy`` and ``istio``: ``<namespace>/<label selector>`` (``k=v,k2=v2``; empty selector =
every pod of the namespace); a ``k8s:`` or ``k8s-pod:`` prefix is accepted. Every object carries the labels
``app.kubernetes.io/managed-by=chaosext`` and ``chaosext.io/run-id=<run_id>`` and the annotation
``chaosext.io/expires-at`` (UTC), is named ``chaosext-jwks-<run_id>`` and is found again by those labels alone -- and
is chaosext's only when its run id label is exactly a run id and its name exactly ``chaosext-jwks-<that run id>``
(``chaosext-deadline-<that run id>`` for the deadline Job; ``chaosext.core.ids``): another object that merely carries
the managed-by label is never deleted.

**The cluster-side deadline.** Before the NetworkPolicy / VirtualService, the driver creates in the same namespace a
Job ``chaosext-deadline-<run_id>`` (same labels, plus ``chaosext.io/role=deadline``) with ``activeDeadlineSeconds``
= the seconds left to the fault's deadline and ``ttlSecondsAfterFinished: 0``, and the fault object names that Job in
its ``metadata.ownerReferences``. At the deadline the Job controller fails the Job (``DeadlineExceeded``), the
TTL-after-finished controller deletes it, and the garbage collector deletes what it owns: the fault goes away with no
chaosext process alive anywhere (a CI runner that died, a closed laptop). The Job's pod only waits (a pause image,
option ``k8s_deadline_image``; it needs no network, no token, no privilege); the deadline holds even when the pod
cannot start, because it counts from the Job's start. Needs RBAC for ``jobs.batch`` (create, delete, list) besides
the fault's own kind; ``ownerReferences`` without ``blockOwnerDeletion`` need no more.

The client is chaosext's one Kubernetes client (:func:`chaosext.core.kube.api_client`): options ``kube_api_url`` (an
API URL without auth, e.g. ``kubectl proxy``) and ``kube_context``, else chaostoolkit-kubernetes' conventions
(kubeconfig and ``KUBERNETES_CONTEXT``, in-pod service account, ``KUBERNETES_HOST`` + ``KUBERNETES_API_KEY`` from the
experiment's secrets or the environment). Every call has ``_request_timeout``.
"""
from __future__ import annotations

import ipaddress
import json
import math
import shlex
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from chaosext.core import ids, kube
from chaosext.core.failures import BODY_MODES, answer, failure_problem
from chaosext.core.faulttarget import TargetError, k8s_namespace_selector
from chaosext.core.settings import Secrets
from chaosext.egress.base import FaultError, FaultSpec, Ran, TargetNotFound

__all__ = ["NetworkPolicyDriver", "IstioDriver", "PodRunner", "pod_runners", "parse_target", "api_client",
           "deadline_job", "MANAGED_BY", "RUN_LABEL", "ROLE_LABEL", "DEADLINE_IMAGE"]

MANAGED_BY = "app.kubernetes.io/managed-by"
RUN_LABEL = "chaosext.io/run-id"
ROLE_LABEL = "chaosext.io/role"
TIMEOUT = 10
#: the deadline Job's container: it only has to exist until the deadline (pause never exits; 65535 is its own user)
DEADLINE_IMAGE = "registry.k8s.io/pause:3.10"
JOBS_PATH = "/apis/batch/v1/namespaces/{namespace}/jobs"


def api_client(options: dict[str, Any], secrets: Secrets = None) -> Any:
    """The Kubernetes ApiClient of the fault (:func:`chaosext.core.kube.api_client`); FaultError when there is no
    usable context."""
    try:
        return kube.api_client(options, secrets)
    except kube.KubeConfigError as exc:
        raise FaultError(str(exc)) from None


def parse_target(target: str) -> tuple[str, str]:
    """``(namespace, selector or pod name)`` of a Kubernetes target (``chaosext.core.faulttarget``, the one parser),
    its errors as FaultError."""
    try:
        return k8s_namespace_selector(target)
    except TargetError as exc:
        raise FaultError(str(exc)) from None


def _labels(selector: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in selector.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key or "!" in key:
            raise FaultError(f"selector {selector!r}: only k=v[,k2=v2] label matches are supported here")
        out[key.strip()] = value.strip()
    return out


def _api_error(exc: Exception, what: str) -> FaultError:
    status = getattr(exc, "status", None)
    if status == 403:
        return FaultError(f"forbidden to {what}: grant this identity RBAC for it ({getattr(exc, 'reason', '')})")
    if status == 404:
        return FaultError(f"not found while trying to {what} (does the namespace / CRD exist?)")
    return FaultError(f"Kubernetes API error while trying to {what}: {status} {getattr(exc, 'reason', exc)}")


def _owner(job: dict[str, Any], uid: str) -> dict[str, Any]:
    """An ownerReference naming ``job`` (same namespace: garbage collection of a namespaced dependent needs that)."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": uid}


def _metadata(spec: FaultSpec, namespace: str) -> dict[str, Any]:
    return {
        "name": f"chaosext-jwks-{spec.run_id}",
        "namespace": namespace,
        "labels": {MANAGED_BY: "chaosext", RUN_LABEL: spec.run_id},
        "annotations": {"chaosext.io/expires-at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(spec.expires_at)),
                        "chaosext.io/jwks-url": spec.jwks_url},
    }


def _deadline_name(run_id: str) -> str:
    return f"chaosext-deadline-{run_id}"


def deadline_job(spec: FaultSpec, namespace: str, image: str = DEADLINE_IMAGE) -> dict[str, Any]:
    """The Job whose end removes the fault: failed by the Job controller at the fault's deadline
    (``activeDeadlineSeconds``, counted from the Job's start), deleted at once after (``ttlSecondsAfterFinished``),
    taking the objects it owns with it. Its pod runs ``image`` (a pause container) as an unprivileged user with no
    service-account token, and meets the ``restricted`` Pod Security Standard."""
    left = spec.expires_at - time.time() if spec.expires_at else float(spec.duration_seconds)
    labels = {MANAGED_BY: "chaosext", RUN_LABEL: spec.run_id, ROLE_LABEL: "deadline"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": _deadline_name(spec.run_id), "namespace": namespace, "labels": labels,
                     "annotations": {"chaosext.io/expires-at": _metadata(spec, namespace)["annotations"][
                         "chaosext.io/expires-at"], "chaosext.io/jwks-url": spec.jwks_url}},
        "spec": {
            "activeDeadlineSeconds": max(1, math.ceil(left)),
            "ttlSecondsAfterFinished": 0,
            "backoffLimit": 6,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 0,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65535, "runAsGroup": 65535,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "deadline", "image": image,
                        "resources": {"requests": {"cpu": "1m", "memory": "8Mi"},
                                      "limits": {"cpu": "10m", "memory": "16Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    }


def _exactly_ours(obj: dict[str, Any], name_of: Any) -> bool:
    """An object is chaosext's only when its run-id label is exactly a run id and its name is exactly the one
    chaosext gives that run's object (``name_of(run_id)``): the managed-by label alone proves nothing."""
    meta = obj.get("metadata") or {}
    run_id = str((meta.get("labels") or {}).get(RUN_LABEL, ""))
    return ids.is_run_id(run_id) and meta.get("name") == name_of(run_id)


class _K8sObjectDriver:
    """What NetworkPolicy and Istio share: create (409 = already there), get, delete (404 = gone), list by label;
    and the deadline Job that owns the object (module docstring)."""

    via = ""
    kind = ""

    def __init__(self, options: dict[str, Any] | None = None, api: Any = None, secrets: Secrets = None) -> None:
        self.options = dict(options or {})
        self._api = api
        self.secrets = secrets  # the activity's secrets (KUBERNETES_*), kept out of the options: those are recorded

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = api_client(self.options, self.secrets)
        return self._api

    # subclass hooks: body(spec, ns, selector), _create/_get/_delete/_list(ns, ...)

    def path(self, namespace: str, name: str = "") -> str:
        raise NotImplementedError

    def body(self, spec: FaultSpec, namespace: str, selector: str) -> dict[str, Any]:
        raise NotImplementedError

    def _create(self, ns: str, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def _get(self, ns: str, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def _delete(self, ns: str, name: str) -> None:
        raise NotImplementedError

    def _list(self, ns: str, label_selector: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def describe(self, spec: FaultSpec) -> list[str]:
        ns, selector = parse_target(spec.target)
        job = deadline_job(spec, ns, self._deadline_image())
        body = self.body(spec, ns, selector)
        body["metadata"]["ownerReferences"] = [_owner(job, "<uid of the Job created above>")]
        return [f"POST {JOBS_PATH.format(namespace=ns)} {json.dumps(job, sort_keys=True)}",
                f"POST {self.path(ns)} {json.dumps(body, sort_keys=True)}"]

    def describe_revert(self, spec: FaultSpec) -> list[str]:
        ns, _ = parse_target(spec.target)
        return [f"DELETE {self.path(ns, f'chaosext-jwks-{spec.run_id}')}",
                f"DELETE {JOBS_PATH.format(namespace=ns)}/{_deadline_name(spec.run_id)} "
                f"(propagationPolicy: Background)"]

    def _deadline_image(self) -> str:
        return str(self.options.get("k8s_deadline_image") or DEADLINE_IMAGE)

    def _batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api)

    def _ensure_deadline(self, spec: FaultSpec, ns: str) -> dict[str, Any]:
        """Create this run's deadline Job (or find it: the same run applied twice) and return it."""
        from kubernetes.client.exceptions import ApiException

        job = deadline_job(spec, ns, self._deadline_image())
        name = job["metadata"]["name"]
        try:
            created = self._batch().create_namespaced_job(ns, job, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status != 409:
                raise _api_error(exc, f"create the deadline Job {ns}/{name} (the fault's cluster-side expiry; "
                                      f"RBAC: create jobs.batch)") from None
            created = self._batch().read_namespaced_job(name, ns, _request_timeout=TIMEOUT)
        have = cast(dict[str, Any], self.api.sanitize_for_serialization(created))
        if not have.get("metadata", {}).get("uid"):
            raise FaultError(f"the API server returned the deadline Job {ns}/{name} without a uid")
        return have

    def _delete_deadline(self, ns: str, name: str) -> bool:
        """Delete a deadline Job and its pod (Background: the API's default for Jobs would orphan the pod)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._batch().delete_namespaced_job(name, ns, propagation_policy="Background", _request_timeout=TIMEOUT)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise _api_error(exc, f"delete the deadline Job {ns}/{name}") from None

    def apply(self, spec: FaultSpec) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        ns, selector = parse_target(spec.target)
        body = self.body(spec, ns, selector)
        self.preflight(spec, ns)
        job = self._ensure_deadline(spec, ns)  # first: the fault never exists without its cluster-side deadline
        body["metadata"]["ownerReferences"] = [_owner(job, job["metadata"]["uid"])]
        try:
            self._create(ns, body)
            created = True
        except ApiException as exc:
            if exc.status != 409:
                self._delete_deadline(ns, job["metadata"]["name"])
                raise _api_error(exc, f"create {self.kind} in {ns}") from None
            created = False  # same run applied twice: one object
        return {"created": created, "kind": self.kind, "namespace": ns, "name": body["metadata"]["name"],
                "deadline_job": job["metadata"]["name"],
                "active_deadline_seconds": job.get("spec", {}).get("activeDeadlineSeconds")}

    def preflight(self, spec: FaultSpec, namespace: str) -> None:
        """Refuse before creating anything (overridden)."""

    def verify(self, spec: FaultSpec) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        ns, selector = parse_target(spec.target)
        want = self.body(spec, ns, selector)["spec"]
        try:
            have = self._get(ns, f"chaosext-jwks-{spec.run_id}")
        except ApiException as exc:
            if exc.status == 404:
                return {"blocked": False, "present": False}
            raise _api_error(exc, f"read {self.kind}") from None
        owners = [o for o in (have.get("metadata", {}).get("ownerReferences") or []) if o.get("kind") == "Job"]
        return {"blocked": have.get("spec") == want, "present": True, "checked": "object in the API",
                "cluster_deadline": owners[0]["name"] if owners else "",
                "note": "enforcement depends on the CNI / mesh; check with jwks_reachable from a k8s-pod target"}

    def revert(self, spec: FaultSpec) -> dict[str, Any]:
        return {"removed": self.remove_orphan(spec.target, spec.run_id), "left": []}

    def find_orphans(self, target: str) -> list[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        ns, _ = parse_target(target)
        try:
            items = self._list(ns, f"{MANAGED_BY}=chaosext")
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise _api_error(exc, f"list {self.kind} in {ns}") from None
        found = [{"run_id": i["metadata"].get("labels", {}).get(RUN_LABEL, ""), "via": self.via, "target": target,
                  "name": i["metadata"]["name"], "namespace": ns, "kind": self.kind,
                  "expires_at": i["metadata"].get("annotations", {}).get("chaosext.io/expires-at", "")}
                 for i in items if _exactly_ours(i, ids.object_name)]
        return found + [j for j in self._deadline_jobs(target) if j["run_id"] not in {f["run_id"] for f in found}]

    def _deadline_jobs(self, target: str) -> list[dict[str, Any]]:
        """Deadline Jobs on the target's namespace (one left alone when a run died between its two creates)."""
        from kubernetes.client.exceptions import ApiException

        ns, _ = parse_target(target)
        try:
            res = self._batch().list_namespaced_job(ns, label_selector=f"{MANAGED_BY}=chaosext,{ROLE_LABEL}=deadline",
                                                    _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise _api_error(exc, f"list the deadline Jobs in {ns} (RBAC: list jobs.batch)") from None
        items = self.api.sanitize_for_serialization(res).get("items", [])
        return [{"run_id": j["metadata"].get("labels", {}).get(RUN_LABEL, ""), "via": self.via, "target": target,
                 "name": j["metadata"]["name"], "namespace": ns, "kind": "Job",
                 "expires_at": j["metadata"].get("annotations", {}).get("chaosext.io/expires-at", "")}
                for j in items if _exactly_ours(j, _deadline_name)]

    def remove_orphan(self, target: str, run_id: str) -> list[str]:
        from kubernetes.client.exceptions import ApiException

        ns, _ = parse_target(target)
        names = {ids.object_name(run_id)}  # the one exact name of this run's object
        removed = []
        for name in sorted(names):
            try:
                self._delete(ns, name)
                removed.append(f"deleted {self.kind} {ns}/{name}")
            except ApiException as exc:
                if exc.status != 404:
                    raise _api_error(exc, f"delete {self.kind} {ns}/{name}") from None
        if self._delete_deadline(ns, _deadline_name(run_id)):
            removed.append(f"deleted Job {ns}/{_deadline_name(run_id)} (the fault's cluster-side deadline)")
        return removed


class NetworkPolicyDriver(_K8sObjectDriver):
    """Deny egress to the JWKS addresses + port only, for the selected pods.

    NetworkPolicy is an allow-list once a pod is selected for Egress, so the policy allows (1) all egress except the
    JWKS addresses (``ipBlock`` 0.0.0.0/0 and ::/0 with ``except``), and (2) egress to the JWKS addresses on every
    other port. Another policy that allows the JWKS address for the same pods wins (policies add up).
    """

    via = "k8s-networkpolicy"
    kind = "NetworkPolicy"

    def path(self, namespace: str, name: str = "") -> str:
        return f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies" + (f"/{name}" if name else "")

    def body(self, spec: FaultSpec, namespace: str, selector: str) -> dict[str, Any]:
        if problem := failure_problem(str(spec.options.get("jwks_failure") or "unreachable"), self.via):
            raise FaultError(problem)  # a NetworkPolicy can only make the JWKS unreachable
        if "=" not in selector and selector:
            raise FaultError(f"NetworkPolicy selects pods by labels: give <namespace>/k=v, not a pod name ({selector})")
        if not spec.addresses:
            raise FaultError("NetworkPolicy needs the JWKS addresses: the host did not resolve")
        v4 = [f"{a}/32" for a in spec.addresses if ipaddress.ip_address(a).version == 4]
        v6 = [f"{a}/128" for a in spec.addresses if ipaddress.ip_address(a).version == 6]
        everything_else = [{"ipBlock": {"cidr": "0.0.0.0/0", **({"except": v4} if v4 else {})}},
                           {"ipBlock": {"cidr": "::/0", **({"except": v6} if v6 else {})}}]
        ports: list[dict[str, Any]] = []
        if spec.port > 1:
            ports.append({"protocol": "TCP", "port": 1, **({"endPort": spec.port - 1} if spec.port > 2 else {})})
        if spec.port < 65535:
            ports.append({"protocol": "TCP", "port": spec.port + 1,
                          **({"endPort": 65535} if spec.port < 65534 else {})})
        ports += [{"protocol": "UDP"}, {"protocol": "SCTP"}]
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _metadata(spec, namespace),
            "spec": {
                "podSelector": {"matchLabels": _labels(selector)} if selector else {},
                "policyTypes": ["Egress"],
                "egress": [{"to": everything_else},
                           {"to": [{"ipBlock": {"cidr": c}} for c in v4 + v6], "ports": ports}],
            },
        }

    def _net(self) -> Any:
        from kubernetes import client

        return client.NetworkingV1Api(self.api)

    def _create(self, ns: str, body: dict[str, Any]) -> None:
        self._net().create_namespaced_network_policy(ns, body, _request_timeout=TIMEOUT)

    def _get(self, ns: str, name: str) -> dict[str, Any]:
        obj = self._net().read_namespaced_network_policy(name, ns, _request_timeout=TIMEOUT)
        return cast(dict[str, Any], self.api.sanitize_for_serialization(obj))

    def _delete(self, ns: str, name: str) -> None:
        self._net().delete_namespaced_network_policy(name, ns, _request_timeout=TIMEOUT)

    def _list(self, ns: str, label_selector: str) -> list[dict[str, Any]]:
        res = self._net().list_namespaced_network_policy(ns, label_selector=label_selector, _request_timeout=TIMEOUT)
        return cast(list[dict[str, Any]], self.api.sanitize_for_serialization(res).get("items", []))


ISTIO = ("networking.istio.io", "v1beta1")


class IstioDriver(_K8sObjectDriver):
    """An Istio VirtualService for the JWKS host, for requests from the selected pods (``sourceLabels``), visible
    only in the namespace (``exportTo: ["."]``); other requests to the host keep their normal route. Per JWKS_FAILURE:
    unreachable: HTTP abort 503 (reject) or a delay as long as the outage (drop); slow: a delay of
    JWKS_SLOW_SECONDS; http-error: an abort with JWKS_ERROR_STATUS; empty-keys / malformed / rotated: a
    ``directResponse`` (status 200, the mode's canned body, ``content-type`` set through ``headers.response``).
    ``directResponse`` is in Istio's HTTPRoute from Istio 1.15.0 on (istio/api "Virtual Service Direct Response",
    #2407); an older Istio refuses the object. tls-untrusted is refused (no TLS of the services' to break). Refused for
    TLS passthrough egress (https JWKS URL, or a ServiceEntry/Gateway that passes TLS through): Istio HTTP faults
    cannot apply there."""

    via = "istio"
    kind = "VirtualService"

    def path(self, namespace: str, name: str = "") -> str:
        g, v = ISTIO
        return f"/apis/{g}/{v}/namespaces/{namespace}/virtualservices" + (f"/{name}" if name else "")

    def body(self, spec: FaultSpec, namespace: str, selector: str) -> dict[str, Any]:
        if spec.jwks_url.startswith("https:"):
            raise FaultError("the JWKS URL is https: the sidecar sees TLS passthrough, where Istio HTTP faults "
                             "cannot apply; use via=iptables (k8s-pod target) or k8s-networkpolicy")
        failure = str(spec.options.get("jwks_failure") or "unreachable")
        params = dict(spec.options.get("answer") or {})
        if problem := failure_problem(failure, self.via):
            raise FaultError(problem)
        route = [{"destination": {"host": spec.host, "port": {"number": spec.port}}}]
        match: dict[str, Any] = {"port": spec.port}
        if selector:
            match["sourceLabels"] = _labels(selector)
        rule: dict[str, Any] = {"name": "chaosext-jwks-fault", "match": [match]}
        if failure in BODY_MODES:
            canned = answer(failure, malformed=str(params.get("malformed") or "not-json"))
            rule.update(directResponse={"status": canned.status, "body": {"string": canned.text}},
                        headers={"response": {"set": {"content-type": canned.content_type}}})
        elif failure == "http-error":
            rule.update(fault={"abort": {"httpStatus": int(params.get("error_status") or 503),
                                         "percentage": {"value": 100.0}}}, route=route)
        elif failure == "slow":
            rule.update(fault={"delay": {"fixedDelay": f"{float(params.get('slow_seconds') or 0):g}s",
                                         "percentage": {"value": 100.0}}}, route=route)
        elif spec.mode == "reject":
            rule.update(fault={"abort": {"httpStatus": 503, "percentage": {"value": 100.0}}}, route=route)
        else:
            rule.update(fault={"delay": {"fixedDelay": f"{spec.duration_seconds}s", "percentage": {"value": 100.0}}},
                        route=route)
        return {
            "apiVersion": f"{ISTIO[0]}/{ISTIO[1]}",
            "kind": "VirtualService",
            "metadata": _metadata(spec, namespace),
            "spec": {"hosts": [spec.host], "exportTo": ["."],
                     "http": [rule, {"name": "chaosext-passthrough", "route": route}]},
        }

    def verify(self, spec: FaultSpec) -> dict[str, Any]:
        """The object as applied; for a direct response also why it is not (an Istio before 1.15 has no
        ``directResponse`` in its VirtualService schema and the API server prunes the field)."""
        out = super().verify(spec)
        if out.get("present") and not out.get("blocked") and spec.options.get("jwks_failure") in BODY_MODES:
            ns, _ = parse_target(spec.target)
            rules = (self._get(ns, f"chaosext-jwks-{spec.run_id}").get("spec") or {}).get("http") or [{}]
            if "directResponse" not in rules[0]:
                out["why"] = ("the API server dropped the rule's directResponse: this Istio's VirtualService has none "
                              "(it came with Istio 1.15); make the mode with FAULT_VIA=envoy or iptables")
        return out

    def preflight(self, spec: FaultSpec, namespace: str) -> None:
        """Refuse TLS passthrough (ServiceEntry TLS/HTTPS port, Gateway PASSTHROUGH) and a competing VirtualService."""
        from kubernetes.client.exceptions import ApiException

        co = self._co()
        try:
            entries = co.list_cluster_custom_object(*ISTIO, "serviceentries", _request_timeout=TIMEOUT)["items"]
            gateways = co.list_cluster_custom_object(*ISTIO, "gateways", _request_timeout=TIMEOUT)["items"]
            services = self._list(namespace, "")
        except ApiException as exc:
            raise _api_error(exc, "list Istio ServiceEntries/Gateways/VirtualServices (is Istio installed?)") from None
        for se in entries:
            s = se.get("spec", {})
            if spec.host in s.get("hosts", []):
                for p in s.get("ports", []):
                    if p.get("number") == spec.port and str(p.get("protocol", "")).upper() in ("TLS", "HTTPS"):
                        raise FaultError(f"ServiceEntry {se['metadata']['name']} declares {spec.host}:{spec.port} as "
                                         f"{p['protocol']} (TLS passthrough): Istio HTTP faults cannot apply there")
        for gw in gateways:
            for server in gw.get("spec", {}).get("servers", []):
                hosts = [h.split("/")[-1] for h in server.get("hosts", [])]
                if spec.host in hosts and server.get("tls", {}).get("mode") == "PASSTHROUGH":
                    raise FaultError(f"Gateway {gw['metadata']['name']} passes TLS through for {spec.host}: Istio "
                                     "HTTP faults cannot apply there")
        for vs in services:
            labels = vs.get("metadata", {}).get("labels", {}) or {}
            if spec.host in vs.get("spec", {}).get("hosts", []) and labels.get(MANAGED_BY) != "chaosext":
                raise FaultError(f"VirtualService {vs['metadata']['name']} already routes {spec.host}; a second one "
                                 "would conflict (Istio does not merge them): add the fault to that one instead")

    def _co(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def _create(self, ns: str, body: dict[str, Any]) -> None:
        self._co().create_namespaced_custom_object(*ISTIO, ns, "virtualservices", body, _request_timeout=TIMEOUT)

    def _get(self, ns: str, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._co().get_namespaced_custom_object(*ISTIO, ns, "virtualservices", name,
                                                                            _request_timeout=TIMEOUT))

    def _delete(self, ns: str, name: str) -> None:
        self._co().delete_namespaced_custom_object(*ISTIO, ns, "virtualservices", name, _request_timeout=TIMEOUT)

    def _list(self, ns: str, label_selector: str) -> list[dict[str, Any]]:
        res = self._co().list_namespaced_custom_object(*ISTIO, ns, "virtualservices", label_selector=label_selector,
                                                       _request_timeout=TIMEOUT)
        return cast(list[dict[str, Any]], res.get("items", []))


# ---------------------------------------------------------------- iptables inside a pod (target k8s-pod:)

DEBUG_CONTAINER = "chaosext-netadmin"
#: how long one batch of exec calls may take, once opened
EXEC_SECONDS = 30.0


class PodRunner:
    """Runs commands in a pod's network namespace: exec into ``container`` (image has iptables), or into an
    ephemeral debug container with NET_ADMIN (option ``k8s_debug_image``, e.g. an image with iptables + bash).

    Many pods at once (:meth:`run_batch`, :meth:`probe_batch`): every exec is opened first (``parallelism`` at a time:
    the websocket handshakes), then one loop reads all of them until each has ended, so a batch costs about one exec
    however many pods there are; a staged batch also holds back each command's last input line until every exec
    has its input (``head -n <lines>`` ends the pod's stdin then), like the local targets' staged commit."""

    def __init__(self, api: Any, namespace: str, pod: dict[str, Any], options: dict[str, Any]) -> None:
        self.api = api
        self.namespace = namespace
        self.pod = pod
        self.name = pod["metadata"]["name"]
        self.label = f"k8s-pod:{namespace}/{self.name}"
        self.options = options
        self.container = options.get("k8s_container") or pod["spec"]["containers"][0]["name"]
        self._needs_debug = bool(options.get("k8s_debug_image"))
        if self._needs_debug:
            self.container = DEBUG_CONTAINER  # added on first use, so a dry run changes nothing
        #: which binaries the pod has, once asked (the driver asks every pod in one batch)
        self.known_binaries: dict[str, bool] = {}

    def debug_container_body(self) -> dict[str, Any]:
        """The PATCH body adding the ephemeral NET_ADMIN container (it sleeps; commands are exec'd into it)."""
        seconds = int(self.options.get("k8s_debug_seconds", 7200))
        return {"spec": {"ephemeralContainers": [{
            "name": DEBUG_CONTAINER, "image": self.options["k8s_debug_image"], "command": ["sleep", str(seconds)],
            "stdin": False, "tty": False,
            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}, "runAsUser": 0, "runAsNonRoot": False},
        }]}}

    def ensure_debug_container(self) -> str:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.api)
        statuses = self.pod.get("status", {}).get("ephemeralContainerStatuses") or []
        if any(s["name"] == DEBUG_CONTAINER and (s.get("state") or {}).get("running") for s in statuses):
            return DEBUG_CONTAINER
        try:
            core.patch_namespaced_pod_ephemeralcontainers(self.name, self.namespace, self.debug_container_body(),
                                                          _request_timeout=TIMEOUT)
        except ApiException as exc:
            raise _api_error(exc, f"add an ephemeral NET_ADMIN container to {self.label}") from None
        for _ in range(60):
            pod = self.api.sanitize_for_serialization(
                core.read_namespaced_pod(self.name, self.namespace, _request_timeout=TIMEOUT))
            for s in pod.get("status", {}).get("ephemeralContainerStatuses") or []:
                if s["name"] == DEBUG_CONTAINER and (s.get("state") or {}).get("running"):
                    return DEBUG_CONTAINER
            time.sleep(1)
        raise FaultError(f"the ephemeral container in {self.label} did not start within 60 s")

    def open_exec(self, argv: list[str], stdin: bool = False) -> Any:
        """Start ``argv`` in the pod (``connect_get_namespaced_pod_exec`` over a websocket) and return the open
        ``WSClient``; :func:`_collect` reads it. TargetNotFound when the pod is gone."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream

        if self._needs_debug:
            self.container = self.ensure_debug_container()
            self._needs_debug = False
        # stream() swaps call_api on the ApiClient it is given while it runs: a client of its own for each exec, so
        # that execs in parallel threads and the other API calls never go through another exec's websocket
        api: Any = client.ApiClient(self.api.configuration)
        api.default_headers.update(self.api.default_headers)
        try:
            return stream(client.CoreV1Api(api).connect_get_namespaced_pod_exec, self.name, self.namespace,
                          container=self.container, command=argv, stderr=True, stdin=stdin, stdout=True, tty=False,
                          _preload_content=False, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if " 404 " in f" {exc.reason} ":
                raise TargetNotFound(f"{self.label} is gone (exec: 404)") from None
            raise _api_error(exc, f"exec in {self.label}") from None
        finally:
            api.close()

    def run(self, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
        ran = type(self).run_batch([(self, argv, stdin, "")], 1, staged=False)[0]
        if ran.error is not None:
            raise ran.error
        return ran.returncode, ran.stdout, ran.stderr

    @classmethod
    def run_batch(cls, items: Sequence[tuple[Any, list[str], str, str]], parallelism: int,
                  staged: bool = False) -> list[Ran]:
        """``(pod runner, argv, stdin, held)`` each, all at once; one :class:`Ran` each, in order (never raises for
        one pod). Input goes in the command line (``printf %s <input> | argv``), or -- ``staged`` -- through the
        exec's stdin: the input first, then, once every exec has its input, the ``held`` tails together."""
        def command(item: tuple[Any, list[str], str, str]) -> tuple[list[str], bool]:
            _, argv, stdin, held = item
            if staged:
                lines = (stdin + held).count("\n")
                return ["sh", "-c", f"head -n {lines} | {shlex.join(argv)}"], True
            if stdin + held:
                return ["sh", "-c", f"printf %s {shlex.quote(stdin + held)} | {shlex.join(argv)}"], False
            return argv, False

        def open_one(index: int) -> Any:
            runner, _, stdin, _ = items[index]
            argv, with_stdin = command(items[index])
            ws = runner.open_exec(argv, stdin=with_stdin)
            if with_stdin and stdin:
                ws.write_stdin(stdin)
            return ws

        results = [Ran() for _ in items]
        clients: list[Any] = [None for _ in items]
        with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(items))),
                                thread_name_prefix="chaosext-pod-exec") as pool:
            futures = [pool.submit(open_one, i) for i in range(len(items))]
            for i, future in enumerate(futures):
                try:
                    clients[i] = future.result()
                except Exception as exc:
                    results[i].error = exc
                    results[i].at = time.time()
        if staged:
            for i, ws in enumerate(clients):
                if ws is not None and ws.is_open():
                    try:
                        ws.write_stdin(items[i][3])
                    except Exception as exc:  # the exec ended already: its status says why
                        results[i].error = results[i].error or FaultError(f"{items[i][0].label}: {exc}")
        _collect(clients, results, time.monotonic() + EXEC_SECONDS)
        return results

    def shown(self, argv: list[str]) -> str:
        return f"kubectl exec -n {self.namespace} {self.name} -c {self.container} -- {shlex.join(argv)}"

    @staticmethod
    def _probe_command(address: str, port: int, timeout: float) -> str:
        host = f"[{address}]" if ":" in address else address
        return shlex.join(["timeout", str(timeout), "bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"])

    @staticmethod
    def _probe_result(address: str, port: int, rc: int, err: str, elapsed: float) -> dict[str, Any]:
        error = "" if rc == 0 else "timeout" if rc == 124 else "refused" if "refused" in err else "reset" \
            if "reset" in err else f"rc={rc}"
        return {"address": address, "port": port, "reachable": rc == 0, "error": error, "status": 0,
                "elapsed_ms": round(elapsed * 1000, 1)}

    def probe(self, address: str, port: int, timeout: float, url: str = "") -> dict[str, Any]:
        return type(self).probe_batch([(self, [address], port)], timeout, 1)[0][0]

    @classmethod
    def probe_batch(cls, items: Sequence[tuple[Any, list[str], int]], timeout: float,
                    parallelism: int) -> list[list[dict[str, Any]]]:
        """A fresh TCP connect to each address from inside each pod (bash ``/dev/tcp``, ``timeout`` each): one exec
        per pod connecting to all its addresses at once, all pods at once."""
        scripts = []
        for _, addresses, port in items:
            parts = [f"( out=$({cls._probe_command(a, port, timeout)} 2>&1); echo \"{a} $? $out\" ) &"
                     for a in addresses]
            scripts.append(" ".join(parts) + " wait")
        start = time.time()
        ran = cls.run_batch([(r, ["sh", "-c", script], "", "") for (r, _, _), script in zip(items, scripts,
                                                                                               strict=True)],
                            parallelism)
        out: list[list[dict[str, Any]]] = []
        for (runner, addresses, port), outcome in zip(items, ran, strict=True):
            elapsed = (outcome.at or time.time()) - start
            seen = {}
            for line in outcome.stdout.splitlines():
                words = line.split(" ", 2)
                if len(words) >= 2 and words[1].lstrip("-").isdigit():
                    seen[words[0]] = (int(words[1]), words[2] if len(words) > 2 else "")
            failed = str(outcome.error) if outcome.error is not None else f"no answer from {runner.label}"
            out.append([cls._probe_result(a, port, *seen[a], elapsed) if a in seen else
                        {"address": a, "port": port, "reachable": False, "error": failed, "status": 0,
                         "elapsed_ms": round(elapsed * 1000, 1)} for a in addresses])
        return out

    def has(self, binary: str) -> bool:
        if binary not in self.known_binaries:
            self.known_binaries[binary] = self.run(["sh", "-c", f"command -v {shlex.quote(binary)}"])[0] == 0
        return self.known_binaries[binary]


def _collect(clients: list[Any], results: list[Ran], deadline: float) -> None:
    """Read every open exec (``WSClient``) until it ends or ``deadline`` (monotonic) passes, all in one loop; fill
    ``results`` with each one's exit code, output and end time."""
    import select
    import ssl

    poller = select.poll()
    live: dict[int, int] = {}  # fd -> index
    for index, ws in enumerate(clients):
        if ws is not None:
            live[ws.sock.sock.fileno()] = index
            poller.register(ws.sock.sock.fileno(), select.POLLIN)

    def settle(fd: int) -> None:
        index = live.pop(fd)
        poller.unregister(fd)
        ws = clients[index]
        results[index].at = time.time()
        try:
            results[index].stdout = ws.read_stdout(timeout=0) or ""
            results[index].stderr = ws.read_stderr(timeout=0) or ""
            results[index].returncode = int(ws.returncode)
        except Exception as exc:  # no status on channel 3: the exec was cut off
            results[index].error = FaultError(f"exec ended without a status ({type(exc).__name__}: {exc})")
        ws.close()

    while live and time.monotonic() < deadline:
        buffered = [fd for fd, i in live.items() if isinstance(clients[i].sock.sock, ssl.SSLSocket)
                    and clients[i].sock.sock.pending()]
        ready = buffered or [fd for fd, _ in poller.poll(max(0.0, min(0.5, deadline - time.monotonic())) * 1000)]
        for fd in ready:
            ws = clients[live[fd]]
            try:
                ws.update(timeout=0)
            except Exception:
                ws._connected = False  # a broken websocket: settle() says so
            if not ws.is_open():
                settle(fd)
    for fd in list(live):
        index = live[fd]
        results[index].error = FaultError(f"exec did not end within {EXEC_SECONDS} s")
        poller.unregister(fd)
        clients[index].close()
        live.pop(fd)


def pod_runners(spec: str, options: dict[str, Any], api: Any = None, secrets: Secrets = None) -> list[PodRunner]:
    """Runners for every running pod of ``<namespace>/<pod or selector>``; refuses hostNetwork pods."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    namespace, selector = parse_target(spec)
    api = api or api_client(options, secrets)
    core = client.CoreV1Api(api)
    try:
        if "=" in selector:
            pods = api.sanitize_for_serialization(
                core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=TIMEOUT))["items"]
        else:
            pods = [api.sanitize_for_serialization(core.read_namespaced_pod(selector, namespace,
                                                                            _request_timeout=TIMEOUT))]
    except ApiException as exc:
        if exc.status == 404:
            raise TargetNotFound(f"target k8s-pod:{spec} not found (namespace or pod does not exist)") from None
        raise _api_error(exc, f"read pods {spec}") from None
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    if not running:
        raise TargetNotFound(f"target k8s-pod:{spec} not found: no running pod matches")
    for p in running:
        if p["spec"].get("hostNetwork"):
            raise FaultError(f"pod {namespace}/{p['metadata']['name']} uses hostNetwork: its iptables are the node's; "
                             "refusing (target the node deliberately with another tool)")
    return [PodRunner(api, namespace, p, options) for p in running]
