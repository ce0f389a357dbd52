"""k6-operator TestRun generation and submission through the real kubernetes client.

No Kubernetes API server can be installed here, so the client talks to a local HTTP server that answers with the
response shapes of the Kubernetes API documentation (object echo with metadata.uid on create, ``Status`` objects with
reason AlreadyExists/NotFound and code 409/404 on conflicts and misses) and the TestRun fields of the k6-operator
documentation (spec.parallelism, spec.script.configMap{name,file}, spec.runner.env, status.stage).
"""
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaosext.load import operator
from chaosext.load.actions import start_k6_testrun, stop_k6_testrun
from chaosext.load.probes import k6_testrun_status
from tests.kubestub import KubeStub, status
from tests.load.targets import write_target

pytestmark = pytest.mark.contract


TESTRUNS = "/apis/k6.io/v1alpha1/namespaces/perf/testruns"
CONFIGMAPS = "/api/v1/namespaces/perf/configmaps"


class OperatorApi(KubeStub):
    """The shared Kubernetes API stub, with a k6-operator that has picked up every TestRun (``status.stage``)."""

    def _handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        code, obj = super()._handle(method, path, query, body)
        if method == "GET" and code == 200 and obj.get("kind") == "TestRun":
            obj = {**obj, "status": {"stage": "started"}}
        return code, obj


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[OperatorApi]:
    """The stub API server on a free loopback port, no kubeconfig, no lab."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("CHAOSEXT_LAB_DIR", str(tmp_path / "no-lab"))
    for var in ("HTTP_PROXY", "http_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with OperatorApi() as stub:
        yield stub


@pytest.fixture
def kube(api: OperatorApi) -> dict[str, str]:
    """Secrets that point the kubernetes client at the stub (chaostoolkit-kubernetes' names)."""
    return {"KUBERNETES_HOST": api.url, "KUBERNETES_API_KEY": "t0ken"}


def test_build_testrun_has_the_operator_fields() -> None:
    tr = operator.build_testrun("load", "perf", 4, "k6-tenant-load", "k6-tenant-load.js", {"K6_RATE": "20000"}, "ab12")
    assert tr["apiVersion"] == "k6.io/v1alpha1" and tr["kind"] == "TestRun"
    assert tr["spec"]["parallelism"] == 4
    assert tr["spec"]["script"] == {"configMap": {"name": "k6-tenant-load", "file": "k6-tenant-load.js"}}
    assert {"name": "K6_RATE", "value": "20000"} in tr["spec"]["runner"]["env"]
    assert tr["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "chaosext"
    with pytest.raises(ValueError, match="parallelism"):
        operator.build_testrun("load", "perf", 0, "cm", "f.js", {}, "ab12")


def test_submit_creates_configmap_and_testrun_then_status_and_delete(api: OperatorApi, kube: dict,
                                                                     tmp_path: Path) -> None:
    target = write_target(tmp_path / "target.yaml", {"orders": "http://orders.perf:8080"})
    out = start_k6_testrun(name="load", namespace="perf", parallelism=3, rate=15000, duration="5m",
                           configuration={"target_file": str(target)}, secrets=kube)
    assert out["configmap"] == "created" and out["uid"] and out["parallelism"] == 3
    tr = api.objects[TESTRUNS]["load"]
    env = {e["name"]: e["value"] for e in tr["spec"]["runner"]["env"]}
    assert env["K6_RATE"] == "15000" and env["LOAD_DURATION"] == "5m"
    # the plan sits beside the script in the ConfigMap (mounted at /test): its name, relative to the script
    assert env["TARGET_JSON"] == "k6-load-plan.json" and "SERVICE_URLS" not in env
    cm = api.objects[CONFIGMAPS]["k6-tenant-load"]
    assert "constant-arrival-rate" in cm["data"]["k6-tenant-load.js"]
    plan = json.loads(cm["data"]["k6-load-plan.json"])
    assert plan["services"] == [{"name": "orders", "url": "http://orders.perf:8080", "routes": [
        {"method": m, "path": p, "body": b, "weight": w, "kind": k} for m, p, b, w, k in (
            ("GET", "/v2/orders", "", 3, "read"), ("GET", "/v2/orders/{id}", "", 1, "read"),
            ("POST", "/v2/orders", '{"sku":"x-1"}', 1, "write"))]}]
    assert all(seen.authorization == "Bearer t0ken" for seen in api.requests)

    assert k6_testrun_status(name="load", namespace="perf", secrets=kube)["stage"] == "started"
    with pytest.raises(operator.OperatorError, match="exists already"):
        start_k6_testrun(name="load", namespace="perf", configuration={"target_file": str(target)},
                         secrets=kube)  # configmap replaced, TestRun refused
    assert ("PUT", f"{CONFIGMAPS}/k6-tenant-load", "Bearer t0ken") in [(r.method, r.path, r.authorization)
                                                                        for r in api.requests]
    # your own script in your ConfigMap: it stays, the run's plan goes in beside it
    api.objects[CONFIGMAPS]["k6-tenant-load"]["data"] = {"k6-tenant-load.js": "// mine"}
    stop_k6_testrun(name="load", namespace="perf", secrets=kube)
    out = start_k6_testrun(name="load", namespace="perf", create_configmap=False,
                           configuration={"target_file": str(target)}, secrets=kube)
    assert out["configmap"] == "kept, k6-load-plan.json added"
    data = api.objects[CONFIGMAPS]["k6-tenant-load"]["data"]
    assert data["k6-tenant-load.js"] == "// mine" and json.loads(data["k6-load-plan.json"]) == plan

    assert stop_k6_testrun(name="load", namespace="perf", secrets=kube) == {
        "name": "load", "namespace": "perf", "deleted": True, "existed": True}
    assert stop_k6_testrun(name="load", namespace="perf", secrets=kube)["existed"] is False
    assert k6_testrun_status(name="load", namespace="perf", secrets=kube)["exists"] is False


def test_missing_operator_crd_is_reported_with_the_fix(api: OperatorApi, kube: dict, tmp_path: Path) -> None:
    target = write_target(tmp_path / "target.yaml", {"orders": "http://orders.perf:8080"})
    api.forced[("POST", TESTRUNS)] = (404, status(404, "NotFound", "the server could not find the requested resource"))
    with pytest.raises(operator.OperatorError, match="k6-operator installed"):
        start_k6_testrun(name="load", namespace="perf", configuration={"target_file": str(target)}, secrets=kube)
