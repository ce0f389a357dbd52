"""A small stand-in for the Kubernetes API server on loopback, for contract tests of the real ``kubernetes`` client
(no API server is installable here).

It answers with the shapes of the Kubernetes API reference and API conventions: a created object is echoed with 201
and ``metadata.uid`` / ``resourceVersion`` / ``creationTimestamp`` filled in; a list is ``{"kind": "<Kind>List",
"metadata": {"resourceVersion"}, "items": [...]}`` filtered by ``?labelSelector=k=v,...``; ``PUT`` replaces; ``PATCH``
(merge patch) merges maps and replaces lists; ``DELETE`` answers a ``Status`` with ``"status": "Success"``; errors are
``Status`` objects ``{"kind": "Status", "status": "Failure", "reason": "NotFound|AlreadyExists|...", "code": ...}``.
Objects live at ``/api/v1/namespaces/{ns}/{plural}/{name}`` and ``/apis/{group}/{version}/namespaces/{ns}/{plural}/
{name}``. Every request is in ``requests`` as ``Seen(method, path, body, authorization)``.

    with KubeStub() as kube:            # kube.url -> KUBERNETES_HOST or KUBE_API_URL
        ...
        kube.objects["/api/v1/namespaces/perf/secrets"]["load-token-client"]
"""
from __future__ import annotations

import copy
import uuid
from typing import Any, NamedTuple

from tests.jsonstub import JsonStub, Request


class Seen(NamedTuple):
    method: str
    path: str
    body: Any
    authorization: str | None


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A Kubernetes ``Status`` failure object."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386): maps merge, anything else replaces, null deletes."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


class KubeStub:
    """The stub server; ``objects`` maps a collection path to ``{name: object}``."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        #: (method, collection path) -> (status, body): answer this instead (e.g. a 404 for a missing CRD)
        self.forced: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._stub = JsonStub(self._handle, json_body=True, record=self._record)
        self.url = self._stub.url
        self.requests: list[Seen] = self._stub.requests

    @staticmethod
    def _record(r: Request) -> Seen:
        return Seen(r.method, r.path, r.body, r.headers.get("Authorization"))

    def collection(self, path: str) -> tuple[str, str]:
        """(collection path, object name or '') of a request path."""
        parts = path.rstrip("/").split("/")
        # /api/v1/namespaces/{ns}/{plural}[/{name}] or /apis/{g}/{v}/namespaces/{ns}/{plural}[/{name}]
        depth = 5 if parts[1] == "api" else 6
        if len(parts) == depth + 1:
            return "/".join(parts), ""
        return "/".join(parts[:depth + 1]), parts[depth + 1] if len(parts) > depth + 1 else ""

    def _handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        coll, name = self.collection(path)
        if (method, coll) in self.forced:
            return self.forced[(method, coll)]
        store = self.objects.setdefault(coll, {})
        if method == "POST":
            name = body["metadata"]["name"]
            if name in store:
                return 409, status(409, "AlreadyExists", f'"{name}" already exists')
            body["metadata"].update(uid=str(uuid.uuid4()), resourceVersion="1",
                                    creationTimestamp="2026-12-01T10:00:00Z")
            store[name] = body
            return 201, body
        if method == "GET" and not name:
            wanted = dict(kv.split("=", 1) for kv in query.get("labelSelector", "").split(",") if "=" in kv)
            items = [o for o in store.values()
                     if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())]
            return 200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}
        if name not in store:
            return 404, status(404, "NotFound", f'"{name}" not found')
        if method == "GET":
            return 200, store[name]
        if method == "PUT":
            store[name] = body
            return 200, body
        if method == "PATCH":
            _merge(store[name], body)
            return 200, store[name]
        if method == "DELETE":
            del store[name]
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        return 405, status(405, "MethodNotAllowed", method)

    def close(self) -> None:
        self._stub.close()

    def __enter__(self) -> KubeStub:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stub.__exit__(*exc)
