"""k6-operator TestRuns: the same Kubernetes client and credentials as the fault, and the OAuth2 client credentials
the runner pods need for their tokens in a Secret of their own -- never in the TestRun, its ConfigMap or an argument.

Contract tests: the real ``kubernetes`` client against a loopback stub answering with the Kubernetes API reference's
response shapes (tests/kubestub.py; Secret ``stringData``, ``ownerReferences``, merge-patch), and the TestRun fields
of the k6-operator documentation (``spec.runner.env`` takes Kubernetes ``EnvVar`` objects, ``valueFrom.secretKeyRef``
included). No API server can be installed here.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.config import kube_config

from chaosext.core import kube
from chaosext.load import operator
from chaosext.load.actions import start_k6_testrun, stop_k6_testrun
from chaosext.load.probes import k6_testrun_status
from tests.kubestub import KubeStub, status
from tests.load.targets import write_target

pytestmark = pytest.mark.contract

API_KEY = "k8s-api-key"
CLIENT_SECRET = "k6-client-s3cret"
SECRETS = "/api/v1/namespaces/perf/secrets"
TESTRUNS = "/apis/k6.io/v1alpha1/namespaces/perf/testruns"
CONFIGMAPS = "/api/v1/namespaces/perf/configmaps"


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[KubeStub]:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "no-kubeconfig"))
    for var in ("KUBERNETES_SERVICE_HOST", "CHAOSTOOLKIT_IN_POD", "KUBE_API_URL", "KUBE_CONTEXT", "HTTP_PROXY",
                "NO_PROXY", "TOKEN_CLIENT_ID", "TOKEN_CLIENT_SECRET", "TOKEN_CLIENTS", *kube.KUBE_SECRET_KEYS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CHAOSEXT_LAB_DIR", str(tmp_path / "no-lab"))
    with KubeStub() as k:
        yield k


def configuration(tmp_path: Path) -> dict[str, Any]:
    target = write_target(tmp_path / "target.yaml", {"orders": "http://orders.perf:8080"})
    return {"target_file": str(target), "authority_url": "https://idp.example/realms/t"}


def chaosext_secrets(stub: KubeStub, **extra: str) -> dict[str, str]:
    """The activity's secrets as Chaos Toolkit hands them over: chaostoolkit-kubernetes' names + chaosext's."""
    return {"KUBERNETES_HOST": stub.url, "KUBERNETES_API_KEY": API_KEY, "token_client_id": "k6-client",
            "token_client_secret": CLIENT_SECRET, **extra}


def test_client_credentials_go_into_a_secret_the_runners_reference(stub: KubeStub, tmp_path: Path) -> None:
    secrets = chaosext_secrets(stub)
    out = start_k6_testrun(name="load", namespace="perf", parallelism=2, rate=1000, duration="2m",
                           configuration=configuration(tmp_path), secrets=secrets)
    assert out["secret"] == "created" and CLIENT_SECRET not in json.dumps(out)

    secret = stub.objects[SECRETS]["load-token-client"]
    assert secret["type"] == "Opaque"
    assert secret["stringData"] == {"TOKEN_CLIENT_ID": "k6-client", "TOKEN_CLIENT_SECRET": CLIENT_SECRET}
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "chaosext"
    testrun = stub.objects[TESTRUNS]["load"]
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "k6.io/v1alpha1", "kind": "TestRun", "name": "load", "uid": testrun["metadata"]["uid"]}]

    env = {e["name"]: e for e in testrun["spec"]["runner"]["env"]}
    for key in ("TOKEN_CLIENT_ID", "TOKEN_CLIENT_SECRET"):
        assert env[key] == {"name": key, "valueFrom": {"secretKeyRef": {"name": "load-token-client", "key": key}}}
    assert env["AUTHORITY_URL"]["value"] == "https://idp.example/realms/t"  # where the runners ask for tokens
    assert env["TOKEN_AUTH_METHOD"]["value"] == "client_secret_basic"
    for path, body in [(r.path, r.body) for r in stub.requests if r.method in ("POST", "PUT")]:
        if not path.startswith(SECRETS):
            assert CLIENT_SECRET not in json.dumps(body), f"client secret in {path}"
    assert CLIENT_SECRET not in testrun["spec"]["arguments"]

    posts = [r.path for r in stub.requests if r.method == "POST"]
    assert posts.index(SECRETS) < posts.index(TESTRUNS)  # the runners' Secret exists before they can start
    assert {r.authorization for r in stub.requests} == {f"Bearer {API_KEY}"}

    assert k6_testrun_status(name="load", namespace="perf", secrets=secrets)["exists"] is True
    gone = stop_k6_testrun(name="load", namespace="perf", secrets=secrets)
    assert gone["existed"] and gone["secret_deleted"] == "load-token-client"
    assert stub.objects[SECRETS] == {} and stub.objects[TESTRUNS] == {}
    assert {r.authorization for r in stub.requests} == {f"Bearer {API_KEY}"}


def test_per_tenant_clients_and_a_rerun_replace_the_secret(stub: KubeStub, tmp_path: Path) -> None:
    clients = json.dumps({"t01": {"client_id": "c1", "client_secret": "s1"}})
    secrets = chaosext_secrets(stub, token_clients=clients)
    start_k6_testrun(name="load", namespace="perf", configuration=configuration(tmp_path), secrets=secrets)
    assert "s1" in stub.objects[SECRETS]["load-token-client"]["stringData"]["TOKEN_CLIENTS"]
    del stub.objects[TESTRUNS]["load"]  # the TestRun went away, its Secret did not (yet)
    out = start_k6_testrun(name="load", namespace="perf", configuration=configuration(tmp_path), secrets=secrets)
    assert out["secret"] == "replaced"
    assert ("PUT", f"{SECRETS}/load-token-client") in [(r.method, r.path) for r in stub.requests]


def test_a_refused_testrun_leaves_no_credentials_behind(stub: KubeStub, tmp_path: Path) -> None:
    stub.forced[("POST", TESTRUNS)] = (404, status(404, "NotFound", "the server could not find the requested "
                                                                     "resource"))
    with pytest.raises(operator.OperatorError, match="k6-operator installed"):
        start_k6_testrun(name="load", namespace="perf", configuration=configuration(tmp_path),
                         secrets=chaosext_secrets(stub))
    assert stub.objects[SECRETS] == {}


def test_without_client_credentials_no_secret_is_made(stub: KubeStub, tmp_path: Path) -> None:
    out = start_k6_testrun(name="load", namespace="perf", configuration=configuration(tmp_path),
                           secrets={"KUBERNETES_HOST": stub.url, "KUBERNETES_API_KEY": API_KEY})
    assert out["secret"].startswith("none") and SECRETS not in stub.objects
    names = {e["name"] for e in stub.objects[TESTRUNS]["load"]["spec"]["runner"]["env"]}
    assert not names & {"TOKEN_CLIENT_ID", "TOKEN_CLIENT_SECRET"}


def test_kube_api_url_from_the_configuration_reaches_the_operator_too(stub: KubeStub, tmp_path: Path) -> None:
    conf = {**configuration(tmp_path), "kube_api_url": stub.url}
    start_k6_testrun(name="load", namespace="perf", configuration=conf, secrets={"token_client_id": "k6-client",
                                                                                 "token_client_secret": "x"})
    assert k6_testrun_status(name="load", namespace="perf", configuration=conf)["exists"] is True
    assert stop_k6_testrun(name="load", namespace="perf", configuration=conf)["existed"] is True
    assert {r.authorization for r in stub.requests} == {None}
