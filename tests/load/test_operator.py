"""k6-operator TestRun generation and submission through the real kubernetes client.

No Kubernetes API server can be installed here, so the client talks to a local HTTP server that answers with the
response shapes of the Kubernetes API documentation (object echo with metadata.uid on create, ``Status`` objects with
reason AlreadyExists/NotFound and code 409/404 on conflicts and misses) and the TestRun fields of the k6-operator
documentation (spec.parallelism, spec.script.configMap{name,file}, spec.runner.env, status.stage).
"""
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from chaosext.load import operator
from chaosext.load.actions import start_k6_testrun, stop_k6_testrun
from chaosext.load.probes import k6_testrun_status

pytestmark = pytest.mark.contract


def status(code: int, reason: str, message: str) -> dict:
    """A Kubernetes ``Status`` failure object."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class FakeApi(BaseHTTPRequestHandler):
    """Stores ConfigMaps and TestRuns by path; records every request (method, path, auth header)."""

    store: dict = {}
    log: list = []
    crd_installed = True

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else {}

    def _record(self) -> None:
        FakeApi.log.append((self.command, self.path, self.headers.get("Authorization")))

    def do_POST(self) -> None:
        self._record()
        body = self._body()
        if "/testruns" in self.path and not FakeApi.crd_installed:
            return self._send(404, status(404, "NotFound", "the server could not find the requested resource"))
        key = f"{self.path}/{body['metadata']['name']}"
        if key in FakeApi.store:
            kind = "testruns.k6.io" if "testruns" in self.path else "configmaps"
            return self._send(409, status(409, "AlreadyExists", f'{kind} "{body["metadata"]["name"]}" already exists'))
        body["metadata"].update(uid=str(uuid.uuid4()), resourceVersion="1", creationTimestamp="2026-11-29T21:00:00Z")
        FakeApi.store[key] = body
        self._send(201, body)

    def do_PUT(self) -> None:
        self._record()
        body = self._body()
        FakeApi.store[self.path] = body
        self._send(200, body)

    def do_GET(self) -> None:
        self._record()
        if self.path not in FakeApi.store:
            return self._send(404, status(404, "NotFound", "not found"))
        obj = dict(FakeApi.store[self.path])
        obj["status"] = {"stage": "started"}
        self._send(200, obj)

    def do_DELETE(self) -> None:
        self._record()
        self._body()
        if FakeApi.store.pop(self.path, None) is None:
            return self._send(404, status(404, "NotFound", 'testruns.k6.io "x" not found'))
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict]:
    """The fake API server on a free loopback port; secrets that point the kubernetes client at it."""
    FakeApi.store, FakeApi.log, FakeApi.crd_installed = {}, [], True
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("CHAOSEXT_LAB_DIR", str(tmp_path / "no-lab"))
    for var in ("HTTP_PROXY", "http_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield {"KUBERNETES_HOST": f"http://127.0.0.1:{server.server_address[1]}", "KUBERNETES_API_KEY": "t0ken"}
    finally:
        server.shutdown()
        server.server_close()


def test_build_testrun_has_the_operator_fields() -> None:
    tr = operator.build_testrun("load", "perf", 4, "k6-tenant-load", "k6-tenant-load.js", {"K6_RATE": "20000"}, "ab12")
    assert tr["apiVersion"] == "k6.io/v1alpha1" and tr["kind"] == "TestRun"
    assert tr["spec"]["parallelism"] == 4
    assert tr["spec"]["script"] == {"configMap": {"name": "k6-tenant-load", "file": "k6-tenant-load.js"}}
    assert {"name": "K6_RATE", "value": "20000"} in tr["spec"]["runner"]["env"]
    assert tr["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "chaosext"
    with pytest.raises(ValueError, match="parallelism"):
        operator.build_testrun("load", "perf", 0, "cm", "f.js", {}, "ab12")


def test_submit_creates_configmap_and_testrun_then_status_and_delete(kube: dict) -> None:
    out = start_k6_testrun(name="load", namespace="perf", parallelism=3, rate=15000, duration="5m",
                           configuration={"service_urls": "policy=http://policy.perf:8080"}, secrets=kube)
    assert out["configmap"] == "created" and out["uid"] and out["parallelism"] == 3
    tr = FakeApi.store["/apis/k6.io/v1alpha1/namespaces/perf/testruns/load"]
    env = {e["name"]: e["value"] for e in tr["spec"]["runner"]["env"]}
    assert env["K6_RATE"] == "15000" and env["LOAD_DURATION"] == "5m"
    assert env["SERVICE_URLS"] == "policy=http://policy.perf:8080"
    cm = FakeApi.store["/api/v1/namespaces/perf/configmaps/k6-tenant-load"]
    assert "constant-arrival-rate" in cm["data"]["k6-tenant-load.js"]
    assert all(auth == "Bearer t0ken" for _, _, auth in FakeApi.log)

    assert k6_testrun_status(name="load", namespace="perf", secrets=kube)["stage"] == "started"
    with pytest.raises(RuntimeError, match="exists already"):
        start_k6_testrun(name="load", namespace="perf", secrets=kube)  # configmap replaced, TestRun refused
    assert ("PUT", "/api/v1/namespaces/perf/configmaps/k6-tenant-load", "Bearer t0ken") in FakeApi.log

    assert stop_k6_testrun(name="load", namespace="perf", secrets=kube) == {
        "name": "load", "namespace": "perf", "deleted": True, "existed": True}
    assert stop_k6_testrun(name="load", namespace="perf", secrets=kube)["existed"] is False
    assert k6_testrun_status(name="load", namespace="perf", secrets=kube)["exists"] is False


def test_missing_operator_crd_is_reported_with_the_fix(kube: dict) -> None:
    FakeApi.crd_installed = False
    with pytest.raises(RuntimeError, match="k6-operator installed"):
        start_k6_testrun(name="load", namespace="perf", create_configmap=False, secrets=kube)
