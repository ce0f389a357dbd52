"""k6-operator TestRun generation and submission through the real kubernetes client.

No Kubernetes API server can be installed here, so the client talks to a local HTTP server that answers with the
response shapes of the Kubernetes API documentation (object echo with metadata.uid on create, ``Status`` objects with
reason AlreadyExists/NotFound and code 409/404 on conflicts and misses) and the TestRun fields of the k6-operator
documentation (spec.parallelism, spec.script.configMap{name,file}, spec.runner.env, status.stage).
"""
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosext.load import operator
from chaosext.load.actions import start_k6_testrun, stop_k6_testrun
from chaosext.load.probes import k6_testrun_status
from tests.jsonstub import JsonStub

pytestmark = pytest.mark.contract


def status(code: int, reason: str, message: str) -> dict:
    """A Kubernetes ``Status`` failure object."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class FakeApi:
    """Stores ConfigMaps and TestRuns by path; every request is in ``log`` as (method, path, auth header)."""

    store: ClassVar[dict[str, Any]] = {}
    log: ClassVar[list[tuple[str, str, str]]] = []
    crd_installed = True

    @staticmethod
    def handle(method: str, path: str, query: dict, body: dict | None) -> tuple[int, dict]:
        if method == "POST":
            if "/testruns" in path and not FakeApi.crd_installed:
                return 404, status(404, "NotFound", "the server could not find the requested resource")
            key = f"{path}/{body['metadata']['name']}"
            if key in FakeApi.store:
                kind = "testruns.k6.io" if "testruns" in path else "configmaps"
                return 409, status(409, "AlreadyExists", f'{kind} "{body["metadata"]["name"]}" already exists')
            body["metadata"].update(uid=str(uuid.uuid4()), resourceVersion="1",
                                    creationTimestamp="2026-11-29T21:00:00Z")
            FakeApi.store[key] = body
            return 201, body
        if method == "PUT":
            FakeApi.store[path] = body
            return 200, body
        if method == "GET":
            if path not in FakeApi.store:
                return 404, status(404, "NotFound", "not found")
            obj = dict(FakeApi.store[path])
            obj["status"] = {"stage": "started"}
            return 200, obj
        if method == "DELETE":
            if FakeApi.store.pop(path, None) is None:
                return 404, status(404, "NotFound", 'testruns.k6.io "x" not found')
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 501, status(501, "MethodNotAllowed", method)


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict]:
    """The fake API server on a free loopback port; secrets that point the kubernetes client at it."""
    FakeApi.store, FakeApi.crd_installed = {}, True
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("CHAOSEXT_LAB_DIR", str(tmp_path / "no-lab"))
    for var in ("HTTP_PROXY", "http_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with JsonStub(FakeApi.handle, json_body=True,
                  record=lambda r: (r.method, r.target, r.headers.get("Authorization"))) as stub:
        FakeApi.log = stub.requests
        yield {"KUBERNETES_HOST": stub.url, "KUBERNETES_API_KEY": "t0ken"}


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
    with pytest.raises(ActivityFailed, match="exists already"):
        start_k6_testrun(name="load", namespace="perf", secrets=kube)  # configmap replaced, TestRun refused
    assert ("PUT", "/api/v1/namespaces/perf/configmaps/k6-tenant-load", "Bearer t0ken") in FakeApi.log

    assert stop_k6_testrun(name="load", namespace="perf", secrets=kube) == {
        "name": "load", "namespace": "perf", "deleted": True, "existed": True}
    assert stop_k6_testrun(name="load", namespace="perf", secrets=kube)["existed"] is False
    assert k6_testrun_status(name="load", namespace="perf", secrets=kube)["exists"] is False


def test_missing_operator_crd_is_reported_with_the_fix(kube: dict) -> None:
    FakeApi.crd_installed = False
    with pytest.raises(ActivityFailed, match="k6-operator installed"):
        start_k6_testrun(name="load", namespace="perf", create_configmap=False, secrets=kube)
