"""chaosext's one Kubernetes client (chaosext.core.kube): which API and credentials it picks, by
chaostoolkit-kubernetes' conventions plus chaosext's KUBE_API_URL / KUBE_CONTEXT.

Contract tests: the real ``kubernetes`` client (through chaostoolkit-kubernetes' own factory) talks to a loopback
stub answering with the response shapes of the Kubernetes API reference (tests/kubestub.py); no API server can be
installed here. What is asserted is what the stub received: the address and the ``Authorization`` header.
"""
from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.config import kube_config

from chaosext.core import kube
from chaosext.core.config import load_config
from tests.kubestub import KubeStub

pytestmark = pytest.mark.contract

NP = "/apis/networking.k8s.io/v1/namespaces/tenancy/networkpolicies"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No kubeconfig, no pod, no KUBERNETES_* or KUBE_* from the machine."""
    use_kubeconfig(monkeypatch, tmp_path / "no-kubeconfig")
    for var in ("KUBERNETES_SERVICE_HOST", "CHAOSTOOLKIT_IN_POD", "KUBE_API_URL", "KUBE_CONTEXT", "HTTP_PROXY",
                "NO_PROXY", *kube.KUBE_SECRET_KEYS):
        monkeypatch.delenv(var, raising=False)
    yield
    client.Configuration.set_default(None)  # a kubeconfig load sets the process-wide default


@pytest.fixture
def stub() -> Iterator[KubeStub]:
    with KubeStub() as k:
        yield k


def run_options(configuration: dict[str, str] | None = None) -> dict[str, str]:
    """KUBE_API_URL / KUBE_CONTEXT as the run's settings resolve them (configuration, else environment): the options
    a fault driver hands the client."""
    cfg = load_config({"chaosext_lab_dir": "/nonexistent-lab", **(configuration or {})})
    return {"kube_api_url": cfg.kube_api_url, "kube_context": cfg.kube_context}


def list_policies(api: object) -> None:
    client.NetworkingV1Api(api).list_namespaced_network_policy("tenancy", _request_timeout=5)


def use_kubeconfig(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """$KUBECONFIG = ``path``. The kubernetes client reads $KUBECONFIG once, when it is imported (a real run sets it
    before the process starts): the test sets its copy too."""
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


def kubeconfig(path: Path, stub_url: str) -> Path:
    """A kubeconfig with two contexts: ``stub`` (the stub, token kc-t0ken) and the current one, ``elsewhere``."""
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: stub
  cluster: {{server: "{stub_url}"}}
- name: elsewhere
  cluster: {{server: "http://127.0.0.1:9"}}
users:
- name: tester
  user: {{token: kc-t0ken}}
contexts:
- name: stub
  context: {{cluster: stub, user: tester}}
- name: elsewhere
  context: {{cluster: elsewhere, user: tester}}
current-context: elsewhere
""")
    return path


def test_kubernetes_host_and_api_key_from_secrets_are_sent_as_bearer(stub: KubeStub) -> None:
    secrets = {"KUBERNETES_HOST": stub.url, "KUBERNETES_API_KEY": "t0ken"}
    list_policies(kube.api_client(None, secrets))
    assert stub.requests[-1][:2] == ("GET", NP) and stub.requests[-1].authorization == "Bearer t0ken"
    assert kube.describe(None, secrets) == f"KUBERNETES_HOST {stub.url} (bearer auth)"


def test_secrets_scopes_prefix_and_lower_case_names(stub: KubeStub, monkeypatch: pytest.MonkeyPatch) -> None:
    """A control gets ``{scope: {...}}``, an activity the merged values; chaosext's lower-case style is accepted;
    KUBERNETES_API_KEY_PREFIX changes the scheme; unset values fall through to the environment."""
    monkeypatch.setenv("KUBERNETES_API_KEY", "from-env")
    scoped = {"k8s": {"KUBERNETES_HOST": stub.url, "KUBERNETES_API_KEY": ""},
              "chaosext": {"kubernetes_api_key_prefix": "Token"}}
    assert kube.kube_secrets(scoped) == {"KUBERNETES_HOST": stub.url, "KUBERNETES_API_KEY_PREFIX": "Token"}
    list_policies(kube.api_client(None, scoped))
    assert stub.requests[-1].authorization == "Token from-env"


def test_each_activity_gets_a_client_from_its_own_secrets_and_nothing_is_kept(stub: KubeStub) -> None:
    """Like chaostoolkit-kubernetes: the client is built from the secrets an activity is handed (a control's whole
    ``{scope: {...}}`` mapping too); a later call handed none finds no credentials left behind."""
    control = {"chaosext": {"KUBERNETES_HOST": stub.url, "KUBERNETES_API_KEY": "run-t0ken"}}
    list_policies(kube.api_client(None, control))
    assert stub.requests[-1].authorization == "Bearer run-t0ken"
    assert kube.credential_env(control) == {"KUBERNETES_HOST": stub.url, "KUBERNETES_API_KEY": "run-t0ken"}
    given = {"KUBERNETES_HOST": stub.url, "KUBERNETES_API_KEY": "activity-t0ken"}
    list_policies(kube.api_client(None, given))
    assert stub.requests[-1].authorization == "Bearer activity-t0ken"
    with pytest.raises(kube.KubeConfigError, match="no Kubernetes context"):
        kube.api_client()
    assert kube.credential_env() == {}


def test_kube_api_url_is_unauthenticated_and_wins_over_everything(stub: KubeStub, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    use_kubeconfig(monkeypatch, kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9"))
    secrets = {"KUBERNETES_HOST": "http://127.0.0.1:9", "KUBERNETES_API_KEY": "t0ken"}
    list_policies(kube.api_client({"kube_api_url": stub.url + "/"}, secrets))  # a driver's options
    assert stub.requests[-1].authorization is None
    monkeypatch.setenv("KUBE_API_URL", stub.url)  # the environment, when the configuration has none
    list_policies(kube.api_client(run_options(), secrets))
    assert len(stub.requests) == 2 and stub.requests[-1].authorization is None
    assert kube.describe(run_options()).startswith(f"KUBE_API_URL {stub.url} (no authentication")


@pytest.mark.parametrize("how", ["KUBE_CONTEXT env", "kube_context configuration", "KUBERNETES_CONTEXT secret",
                                 "KUBERNETES_CONTEXT env"])
def test_kubeconfig_context_by_either_name(stub: KubeStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           how: str) -> None:
    use_kubeconfig(monkeypatch, kubeconfig(tmp_path / "kubeconfig", stub.url))
    configuration, secrets = {}, {}
    if how == "KUBE_CONTEXT env":
        monkeypatch.setenv("KUBE_CONTEXT", "stub")
    elif how == "kube_context configuration":
        configuration = {"kube_context": "stub"}
    elif how == "KUBERNETES_CONTEXT secret":
        secrets = {"KUBERNETES_CONTEXT": "stub"}
    else:
        monkeypatch.setenv("KUBERNETES_CONTEXT", "stub")
    list_policies(kube.api_client(run_options(configuration), secrets))
    assert stub.requests[-1][:2] == ("GET", NP) and stub.requests[-1].authorization == "Bearer kc-t0ken"
    assert kube.describe(run_options(configuration), secrets) == f"kubeconfig {tmp_path / 'kubeconfig'}, context stub"


def test_kube_context_alias_wins_over_kubernetes_context(stub: KubeStub, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    use_kubeconfig(monkeypatch, kubeconfig(tmp_path / "kubeconfig", stub.url))
    assert kube.source({"kube_context": "stub"}, {"KUBERNETES_CONTEXT": "elsewhere"}).context == "stub"


def test_an_unknown_context_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_kubeconfig(monkeypatch, kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9"))
    with pytest.raises(kube.KubeConfigError, match="context 'nope' is not usable"):
        kube.api_client({"kube_context": "nope"})


def test_an_ignored_kubernetes_host_is_refused_not_silently_dropped(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """chaostoolkit-kubernetes prefers an existing kubeconfig (or CHAOSTOOLKIT_IN_POD) over KUBERNETES_HOST; a chaos
    tool must not pick a cluster the operator did not name."""
    use_kubeconfig(monkeypatch, kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9"))
    secrets = {"KUBERNETES_HOST": "https://staging.example:6443", "KUBERNETES_API_KEY": "t0ken"}
    with pytest.raises(kube.KubeConfigError, match="Name the cluster you mean: KUBE_CONTEXT"):
        kube.api_client(None, secrets)
    assert kube.source({"kube_context": "stub"}, secrets).kind == "kubeconfig"  # a named context is a choice
    use_kubeconfig(monkeypatch, tmp_path / "none")
    monkeypatch.setenv("CHAOSTOOLKIT_IN_POD", "true")
    with pytest.raises(kube.KubeConfigError, match="CHAOSTOOLKIT_IN_POD=true and KUBERNETES_HOST"):
        kube.source(None, secrets)


def test_no_credentials_at_all_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(kube.KubeConfigError, match=r"no Kubernetes context.*KUBERNETES_HOST \+ KUBERNETES_API_KEY"):
        kube.api_client()
    with pytest.raises(kube.KubeConfigError, match="no kubeconfig at"):
        kube.source({"kube_context": "prod"})


def test_in_a_pod_the_service_account_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert kube.source().kind == "in-pod"
    assert kube.source(None, {"KUBERNETES_HOST": "https://10.96.0.1:443"}).kind == "host"  # named beats detected
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    monkeypatch.setenv("CHAOSTOOLKIT_IN_POD", "true")
    assert kube.describe() == "the pod's service account (in-cluster)"


def test_an_unverified_https_host_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    """chaostoolkit-kubernetes verifies the API server's certificate only when KUBERNETES_VERIFY_SSL is set."""
    secrets = {"KUBERNETES_HOST": "https://staging.example:6443", "KUBERNETES_API_KEY": "t0ken"}
    src = kube.source(None, secrets)
    assert not src.tls_verified and "TLS NOT verified" in kube.describe(None, secrets)
    assert "t0ken" not in repr(src) + kube.describe(None, secrets)
    assert kube.source(None, {**secrets, "KUBERNETES_VERIFY_SSL": "true"}).tls_verified
    api = kube.api_client(None, {**secrets, "KUBERNETES_VERIFY_SSL": "true",
                                 "KUBERNETES_CA_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"})
    assert api.configuration.verify_ssl is True and api.configuration.host == "https://staging.example:6443"


def test_doctor_checks_the_same_client_and_flags_an_unverified_host(stub: KubeStub) -> None:
    """`chaosext doctor` builds the fault's client (here from KUBERNETES_HOST + KUBERNETES_API_KEY) and says which
    one it is; an https KUBERNETES_HOST without KUBERNETES_VERIFY_SSL is a warning with the fix."""
    from chaosext.egress.checks import check_kube

    stub.forced[("GET", "/version")] = (200, {  # k8s.io/apimachinery/pkg/version.Info
        "major": "1", "minor": "31", "gitVersion": "v1.31.0", "gitCommit": "0" * 40, "gitTreeState": "clean",
        "buildDate": "2024-08-13T07:28:49Z", "goVersion": "go1.22.5", "compiler": "gc", "platform": "linux/amd64"})
    stub.forced[("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")] = (
        201, {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "spec": {},
              "status": {"allowed": True}})
    checks = {c.name: c for c in check_kube("tenancy", "k8s-networkpolicy",
                                            secrets={"KUBERNETES_HOST": stub.url, "KUBERNETES_API_KEY": "t0ken"})}
    assert checks["kube context"].detail.startswith(f"KUBERNETES_HOST {stub.url} (bearer auth)")
    assert checks["kube api"].ok and all(c.ok for c in checks.values()), checks
    assert {r.authorization for r in stub.requests} == {"Bearer t0ken"}

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    https = {"KUBERNETES_HOST": f"https://127.0.0.1:{closed}", "KUBERNETES_API_KEY": "t0ken"}
    checks = {c.name: c for c in check_kube("tenancy", "k8s-networkpolicy", secrets=https)}
    assert checks["kube tls"].status == "warn" and "KUBERNETES_VERIFY_SSL" in checks["kube tls"].fix
    assert not checks["kube api"].ok
