"""A small stand-in for the Kubernetes API server on loopback, for contract tests of the real ``kubernetes`` client
(no API server is installable here).

It answers with the shapes of the Kubernetes API reference and API conventions: a created object is echoed with 201
and ``metadata.uid`` / ``resourceVersion`` / ``creationTimestamp`` filled in; a list is ``{"kind": "<Kind>List",
"metadata": {"resourceVersion"}, "items": [...]}`` filtered by ``?labelSelector=k=v,...``; ``PUT`` replaces; ``PATCH``
(merge patch) merges maps and replaces lists; ``DELETE`` answers a ``Status`` with ``"status": "Success"``; errors are
``Status`` objects ``{"kind": "Status", "status": "Failure", "reason": "NotFound|AlreadyExists|...", "code": ...}``.
Objects live at ``/api/v1/namespaces/{ns}/{plural}/{name}`` and ``/apis/{group}/{version}/namespaces/{ns}/{plural}/
{name}``. Every request is in ``requests`` as ``Seen(method, path, body, authorization)``.

Optimistic concurrency as the API conventions describe it: every write gives the object a new
``metadata.resourceVersion``; a ``PUT`` whose body carries another ``resourceVersion`` than the stored one, and a
``DELETE`` whose ``preconditions`` (``uid``, ``resourceVersion``) do not match, answer ``409 Conflict``. A ``POST``
with an ``ownerReferences`` entry missing ``apiVersion``/``kind``/``name``/``uid``, or a Job whose pod template's
``restartPolicy`` is not ``Never``/``OnFailure`` or whose ``activeDeadlineSeconds`` is not positive, answers
``422 Invalid``.

:meth:`KubeStub.run_controllers` plays, at a given time, what the cluster's controllers do on their own (the
documented behaviour of the Job controller, the TTL-after-finished controller and the garbage collector): a Job past
``status.startTime`` + ``spec.activeDeadlineSeconds`` gets the condition ``Failed`` / ``DeadlineExceeded``; a finished
Job with ``ttlSecondsAfterFinished`` is deleted that many seconds later; an object whose every owner (by uid, in the
same namespace -- a namespaced owner in another namespace counts as absent) is gone is deleted. The stub's clock is
``KubeStub.now`` (epoch seconds); creation sets ``creationTimestamp`` (and a Job's ``status.startTime``) from it.

    with KubeStub() as kube:            # kube.url -> KUBERNETES_HOST or KUBE_API_URL
        ...
        kube.objects["/api/v1/namespaces/perf/secrets"]["load-token-client"]
        kube.run_controllers(at=kube.now + 600)   # what the cluster does by itself 10 minutes later

Pod exec (``GET /api/v1/namespaces/{ns}/pods/{name}/exec?command=...&container=...&stdin=...``, upgraded to a
websocket) speaks the ``v4.channel.k8s.io`` subprotocol of the Kubernetes API server: every binary frame starts with a
channel byte -- 0 stdin (client to server), 1 stdout, 2 stderr, 3 the error channel, where the server sends one
``Status`` when the command ends: ``{"metadata": {}, "status": "Success"}``, or ``"status": "Failure"``, reason
``NonZeroExitCode`` and ``details.causes: [{"reason": "ExitCode", "message": "<code>"}]`` -- then a close frame. A pod
that does not exist answers the handshake with a 404 ``Status``. What the command does is the test's:
``KubeStub(exec_process=start)`` with ``start(namespace, pod, container, argv) -> subprocess.Popen`` (stdin, stdout
and stderr pipes), e.g. the command run inside a network namespace standing in for the pod's.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any, BinaryIO, NamedTuple
from urllib.parse import parse_qs, urlsplit

from tests.jsonstub import JsonStub, Request

#: start(namespace, pod, container, argv) -> a process with stdin, stdout and stderr pipes
ExecProcess = Callable[[str, str, str, list[str]], subprocess.Popen]
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


class Seen(NamedTuple):
    method: str
    path: str
    body: Any
    authorization: str | None


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    """A Kubernetes ``Status`` failure object."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _epoch(stamp: str) -> float:
    import calendar

    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def _invalid(body: dict[str, Any]) -> str:
    """Why the API server would refuse to create ``body`` (the validation rules these tests rely on), or ''."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        missing = [k for k in ("apiVersion", "kind", "name", "uid") if not ref.get(k)]
        if missing:
            return f"metadata.ownerReferences: Required value: {', '.join(missing)}"
    if body.get("kind") == "Job":
        spec = body.get("spec", {})
        policy = spec.get("template", {}).get("spec", {}).get("restartPolicy")
        if policy not in ("Never", "OnFailure"):
            return f'spec.template.spec.restartPolicy: Unsupported value: "{policy}"'
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and (not isinstance(deadline, int) or deadline <= 0):
            return "spec.activeDeadlineSeconds: Invalid value: must be greater than 0"
        ttl = spec.get("ttlSecondsAfterFinished")
        if ttl is not None and (not isinstance(ttl, int) or ttl < 0):
            return "spec.ttlSecondsAfterFinished: Invalid value: must be greater than or equal to 0"
    return ""


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386): maps merge, anything else replaces, null deletes."""
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _ws_frame(payload: bytes, opcode: int = 2) -> bytes:
    """One unmasked server frame (RFC 6455 5.2): FIN, opcode, length, payload."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


def _ws_read(rfile: BinaryIO) -> tuple[int, bytes] | None:
    """One client frame (masked, RFC 6455 5.3): (opcode, payload), or None when the connection ended."""
    try:
        head = rfile.read(2)
    except (OSError, ValueError):  # the connection was closed under us
        return None
    if len(head) < 2:
        return None
    n = head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(rfile.read(2), "big")
    elif n == 127:
        n = int.from_bytes(rfile.read(8), "big")
    try:
        mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = rfile.read(n)
    except (OSError, ValueError):
        return None
    return head[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


class KubeStub:
    """The stub server; ``objects`` maps a collection path to ``{name: object}``."""

    def __init__(self, exec_process: ExecProcess | None = None) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        #: the stub's clock (epoch seconds): creation timestamps and the controllers' notion of "now"
        self.now = time.time()
        self._version = 0
        #: (method, collection path) -> (status, body): answer this instead (e.g. a 404 for a missing CRD)
        self.forced: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self.exec_process = exec_process
        #: every exec: (namespace, pod, container, argv)
        self.execs: list[tuple[str, str, str, list[str]]] = []
        #: every stdin frame an exec received: (pod, wall time, data)
        self.stdin_frames: list[tuple[str, float, bytes]] = []
        #: the query parameters of every request, in the order of ``requests`` (e.g. ``propagationPolicy``)
        self.queries: list[dict[str, str]] = []
        self._stub = JsonStub(self._handle, json_body=True, record=self._record, upgrade=self._exec)
        self.url = self._stub.url
        self.requests: list[Seen] = self._stub.requests

    def _record(self, r: Request) -> Seen:
        self.queries.append(r.query)
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
            if why := _invalid(body):
                return 422, status(422, "Invalid", f'{body.get("kind")} "{name}" is invalid: {why}')
            body["metadata"].update(uid=str(uuid.uuid4()), resourceVersion=self._next_version(),
                                    creationTimestamp=_stamp(self.now))
            if body.get("kind") == "Job":
                body.setdefault("status", {})["startTime"] = _stamp(self.now)
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
            sent = (body.get("metadata") or {}).get("resourceVersion")
            if sent and sent != store[name]["metadata"].get("resourceVersion"):
                return 409, status(409, "Conflict", f'Operation cannot be fulfilled on "{name}": the object has been '
                                                    f"modified; please apply your changes to the latest version and "
                                                    f"try again")
            body.setdefault("metadata", {}).update(uid=store[name]["metadata"].get("uid"),
                                                   creationTimestamp=store[name]["metadata"].get("creationTimestamp"),
                                                   resourceVersion=self._next_version())
            store[name] = body
            return 200, body
        if method == "PATCH":
            _merge(store[name], body)
            store[name]["metadata"]["resourceVersion"] = self._next_version()
            return 200, store[name]
        if method == "DELETE":
            pre = (body or {}).get("preconditions") or {}
            meta = store[name]["metadata"]
            if any(pre.get(k) and pre[k] != meta.get(k) for k in ("uid", "resourceVersion")):
                return 409, status(409, "Conflict", f'Operation cannot be fulfilled on "{name}": the precondition '
                                                    f"does not hold")
            del store[name]
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        return 405, status(405, "MethodNotAllowed", method)

    def _exec(self, request: Request, http: BaseHTTPRequestHandler) -> bool:
        """Serve a pod exec over a websocket (see the module docstring); False for any other upgrade."""
        parts = request.path.rstrip("/").split("/")
        if parts[-1] != "exec" or len(parts) != 8 or parts[5] != "pods":
            return False
        namespace, pod = parts[4], parts[6]
        query = parse_qs(urlsplit(request.target).query)
        argv, container = query.get("command", []), (query.get("container") or [""])[0]
        if pod not in self.objects.get(f"/api/v1/namespaces/{namespace}/pods", {}) or self.exec_process is None:
            body = json.dumps(status(404, "NotFound", f'pods "{pod}" not found')).encode()
            http.send_response(404)
            http.send_header("Content-Type", "application/json")
            http.send_header("Content-Length", str(len(body)))
            http.end_headers()
            http.wfile.write(body)
            return True
        self.execs.append((namespace, pod, container, argv))
        key = request.headers.get("Sec-WebSocket-Key", "")
        http.send_response(101)
        http.send_header("Upgrade", "websocket")
        http.send_header("Connection", "Upgrade")
        http.send_header("Sec-WebSocket-Accept",
                         base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode())
        http.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        http.end_headers()
        http.wfile.flush()
        proc = self.exec_process(namespace, pod, container, argv)
        lock = threading.Lock()

        def send(frame: bytes) -> None:
            with lock:
                try:
                    http.wfile.write(frame)
                    http.wfile.flush()
                except OSError:
                    pass

        def pump(pipe: Any, channel: int) -> None:
            for chunk in iter(lambda: pipe.read1(65536), b""):
                send(_ws_frame(bytes([channel]) + chunk))

        def feed() -> None:  # stdin frames (channel 0) into the process, until the client closes
            while (frame := _ws_read(http.rfile)) is not None and frame[0] != 8:
                if frame[1][:1] == b"\0" and proc.stdin is not None:
                    self.stdin_frames.append((pod, time.time(), frame[1][1:]))
                    try:
                        proc.stdin.write(frame[1][1:])
                        proc.stdin.flush()
                    except OSError:
                        pass
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass

        readers = [threading.Thread(target=pump, args=(proc.stdout, 1), daemon=True),
                   threading.Thread(target=pump, args=(proc.stderr, 2), daemon=True)]
        for t in readers:
            t.start()
        threading.Thread(target=feed, daemon=True).start()
        for t in readers:
            t.join()
        code = proc.wait()
        result: dict[str, Any] = {"metadata": {}, "status": "Success"} if code == 0 else {
            "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: error executing command {argv}, exit code "
                       f"{code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        send(_ws_frame(b"\3" + json.dumps(result).encode()))
        send(_ws_frame(b"\x03\xe8", opcode=8))  # close, 1000 normal
        return True

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    # ------------------------------------------------------------------ what the cluster does by itself
    def get(self, collection: str, name: str) -> dict[str, Any] | None:
        """The stored object (None when absent)."""
        return self.objects.get(collection, {}).get(name)

    def run_controllers(self, at: float) -> list[str]:
        """Advance the clock to ``at`` and play the Job, TTL-after-finished and garbage-collector controllers until
        nothing changes; returns what they did (``"failed Job ns/name"``, ``"deleted <collection>/<name>"``)."""
        self.now = at
        done: list[str] = []
        changed = True
        while changed:
            changed = False
            for coll, store in list(self.objects.items()):
                for name, obj in list(store.items()):
                    if obj.get("kind") == "Job" and self._job_step(coll, name, obj, done):
                        changed = True
            live = {(coll.split("/namespaces/")[1].split("/")[0], o["metadata"].get("uid"))
                    for coll, store in self.objects.items() if "/namespaces/" in coll for o in store.values()}
            for coll, store in list(self.objects.items()):
                if "/namespaces/" not in coll:
                    continue
                ns = coll.split("/namespaces/")[1].split("/")[0]
                for name, obj in list(store.items()):
                    refs = obj["metadata"].get("ownerReferences") or []
                    if refs and not any((ns, r.get("uid")) in live for r in refs):
                        del store[name]
                        done.append(f"deleted {coll}/{name} (garbage collector: no owner left)")
                        changed = True
        return done

    def _job_step(self, coll: str, name: str, job: dict[str, Any], done: list[str]) -> bool:
        spec, st = job.get("spec", {}), job.setdefault("status", {})
        finished = next((c for c in st.get("conditions", []) if c.get("type") in ("Complete", "Failed")
                         and c.get("status") == "True"), None)
        if finished is None:
            deadline = spec.get("activeDeadlineSeconds")
            if deadline and self.now >= _epoch(st["startTime"]) + deadline:
                st["conditions"] = [*st.get("conditions", []), {
                    "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                    "lastTransitionTime": _stamp(_epoch(st["startTime"]) + deadline)}]
                st["active"] = 0
                done.append(f"failed Job {coll}/{name} (DeadlineExceeded)")
                return True
            return False
        ttl = spec.get("ttlSecondsAfterFinished")
        if ttl is not None and self.now >= _epoch(finished["lastTransitionTime"]) + ttl:
            del self.objects[coll][name]
            done.append(f"deleted {coll}/{name} (ttlSecondsAfterFinished)")
            return True
        return False

    def close(self) -> None:
        self._stub.close()

    def __enter__(self) -> KubeStub:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stub.__exit__(*exc)
