"""The lab's authority and tenant services as real processes (``python -m ...``) on free loopback ports.

Each test starts what it needs with tiny JWKS timings; every process is stopped in a fixture/finally.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from chaosext.core.procs import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

AUTH_HOST = "127.0.0.2"
SVC_HOST = "127.0.0.1"
AUD = "stellaops-api"
HEADER = "X-StellaOps-Tenant"
COLLECTION = {"policy": "policies", "vuln": "findings", "notify": "notifications"}
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Proc:
    """A lab process; stderr goes to a log file that failures quote."""

    def __init__(self, argv: list[str], log: Path, health: str) -> None:
        self.argv, self.log, self.health = argv, log, health
        self.popen: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "Proc":
        with open(self.log, "ab") as err:
            self.popen = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.argv[2]} exited {self.popen.returncode}: {self.log.read_text()}")
            try:
                if requests.get(self.health, timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.health} not healthy in {timeout}s: {self.log.read_text()}")

    def stop(self) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return None if self.popen is None else self.popen.returncode
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
            return -9


class Lab:
    """Builder for authority + services in one tmp dir; ``close()`` stops everything."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.key_dir = tmp / "keys"
        self.audit_file = tmp / "audit.jsonl"
        self.port = free_port(AUTH_HOST)
        self.ops_port = free_port(SVC_HOST)
        self.issuer = f"http://{AUTH_HOST}:{self.port}"
        self.ops = f"http://{SVC_HOST}:{self.ops_port}"
        self.authority: Proc | None = None
        self._keys: dict[str, Any] = {}
        self.client_id, self.client_secret = "lab-test-client", "s3cret:with/odd+chars"
        self.clients_file = tmp / "clients.json"
        self.clients_file.write_text(json.dumps({"clients": [{"client_id": self.client_id,
                                                              "client_secret": self.client_secret}]}))
        self.clients_file.chmod(0o600)

    def start_authority(self, *extra: str) -> Proc:
        argv = [sys.executable, "-m", "chaosext.lab.authority", "--host", AUTH_HOST, "--port", str(self.port),
                "--ops-host", SVC_HOST, "--ops-port", str(self.ops_port), "--issuer", self.issuer,
                "--audience", AUD, "--key-dir", str(self.key_dir), "--clients-file", str(self.clients_file), *extra]
        self.authority = Proc(argv, self.tmp / "authority.log", f"{self.ops}/healthz").start()
        self.procs.append(self.authority)
        return self.authority

    def service(self, name: str = "policy", ttl: float = 300, max_stale: float = 3600, *extra: str,
                rate: float = 10000, burst: float = 10000, start: bool = True) -> "Svc":
        port = free_port(SVC_HOST)
        argv = [sys.executable, "-m", "chaosext.lab.service", "--service", name, "--host", SVC_HOST,
                "--port", str(port), "--jwks-url", f"{self.issuer}/.well-known/jwks.json", "--issuer", self.issuer,
                "--audience", AUD, "--tenant-header", HEADER, "--jwks-ttl", str(ttl), "--jwks-max-stale",
                str(max_stale), "--rate-limit", str(rate), "--rate-burst", str(burst), "--audit-file",
                str(self.audit_file), "--tenant-cap", "1000", "--cache-mode", "lkg", *extra]
        if "--cache-mode" in extra:  # the last --cache-mode wins in argparse; keep the explicit one only
            i = argv.index("--cache-mode")
            del argv[i:i + 2]
        url = f"http://{SVC_HOST}:{port}"
        proc = Proc(argv, self.tmp / f"{name}-{port}.log", f"{url}/healthz")
        self.procs.append(proc)
        if start:
            proc.start()
        return Svc(name, url, proc)

    def token(self, tenant: str = "t01", **form: Any) -> str:
        """A client-credentials token (client_secret_basic) for ``tenant``; ``form`` adds scope/audience/ttl."""
        resp = requests.post(f"{self.issuer}/token", auth=(quote_plus(self.client_id), quote_plus(self.client_secret)),
                             data={"grant_type": "client_credentials", "tenant": tenant, **form}, timeout=5)
        assert resp.status_code == 200, resp.text
        return resp.json()["access_token"]

    def signing_key(self) -> tuple[str, Any]:
        """(kid, private key) of the authority's active key, read from its key dir (loading a PEM is slow: cached)."""
        kid = json.loads((self.key_dir / "keys.json").read_text())["active"]
        if kid not in self._keys:
            pem = (self.key_dir / f"{kid}.pem").read_bytes()
            self._keys[kid] = serialization.load_pem_private_key(pem, password=None)
        return kid, self._keys[kid]

    def local_token(self, tenant: str = "t01", key: Any = None, kid: str | None = None, **claims: Any) -> str:
        """Sign a token here (with the authority's own key unless ``key`` is given)."""
        active_kid, active_key = self.signing_key()
        now = int(time.time())
        body = {"iss": self.issuer, "aud": AUD, "sub": "tester", "tenant": tenant, "iat": now, "exp": now + 600,
                **claims}
        return jwt.encode(body, key or active_key, algorithm="RS256", headers={"kid": kid or active_kid})

    def audit(self) -> list[dict]:
        if not self.audit_file.exists():
            return []
        return [json.loads(line) for line in self.audit_file.read_text().splitlines()]

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


class Svc:
    def __init__(self, name: str, url: str, proc: Proc) -> None:
        self.name, self.url, self.proc = name, url, proc
        self.base = f"{url}/api/v1/{COLLECTION[name]}"

    def call(self, token: str | None, tenant: str = "t01", method: str = "GET", path: str = "",
             **kw: Any) -> requests.Response:
        headers = {HEADER: tenant}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.base + path, headers=headers, timeout=10, **kw)

    def health(self) -> dict:
        return requests.get(f"{self.url}/healthz", timeout=5).json()

    def samples(self, name: str) -> list[tuple[dict, float]]:
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        return [(s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples
                if s.name == name]

    def wait_state(self, state: str, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.health()
            if health["jwks"]["state"] == state:
                return health
            time.sleep(0.1)
        raise AssertionError(f"{self.name} jwks never became {state}: {self.health()}")


@contextmanager
def make_lab(tmp: Path) -> Iterator[Lab]:
    lab = Lab(tmp)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def lab_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, dict[str, Svc]]]:
    """One authority and the three services with normal timings (vuln with a tiny rate limit)."""
    with make_lab(tmp_path_factory.mktemp("servers")) as lab:
        lab.start_authority()
        services = {"policy": lab.service("policy"), "notify": lab.service("notify"),
                    "vuln": lab.service("vuln", rate=1, burst=3)}
        yield lab, services


@pytest.fixture
def own_lab(tmp_path: Path) -> Iterator[Lab]:
    with make_lab(tmp_path) as lab:
        yield lab


def counter(svc: Svc, name: str, **labels: str) -> float:
    return sum(v for lbl, v in svc.samples(name) if all(lbl.get(k) == w for k, w in labels.items()))


# ---------------------------------------------------------------------------------------------------------------------
def test_discovery_and_jwks(lab_processes):
    lab, _ = lab_processes
    disco = requests.get(f"{lab.issuer}/.well-known/openid-configuration", timeout=5).json()
    assert disco["issuer"] == lab.issuer and disco["jwks_uri"] == f"{lab.issuer}/.well-known/jwks.json"
    keys = requests.get(disco["jwks_uri"], timeout=5).json()["keys"]
    assert keys and all(k["kty"] == "RSA" and k["alg"] == "RS256" and k["kid"] for k in keys)
    claims = jwt.decode(lab.token("t07", scope="policy:read"), options={"verify_signature": False})
    assert {k: claims[k] for k in ("iss", "aud", "sub", "tenant", "scope")} == {
        "iss": lab.issuer, "aud": AUD, "sub": lab.client_id, "tenant": "t07", "scope": "policy:read"}
    assert jwt.get_unverified_header(lab.token())["kid"] in {k["kid"] for k in keys}


def test_valid_token_on_read_and_write_routes(lab_processes):
    lab, svcs = lab_processes
    token = lab.token("t01")
    for name in ("policy", "notify"):
        svc = svcs[name]
        assert svc.call(token).status_code == 200
        assert svc.call(token, path="/7").json()["id"] == "7"
        created = svc.call(token, method="POST", json={"name": "x"})
        assert created.status_code == 201
        item_id = created.json()["id"]
        assert svc.call(token, method="PUT", path=f"/{item_id}", json={"name": "y"}).status_code == 200
        assert svc.call(token, path=f"/{item_id}").json()["data"] == {"name": "y"}
        listed = svc.call(token).json()  # the list is served from an encoded copy: a write must refresh it
        assert {"id": item_id, "tenant": "t01", "data": {"name": "y"}} in listed["items"]
        assert svc.call(token, method="PUT", path=f"/{item_id}", json={"name": "z"}).status_code == 200
        assert {"id": item_id, "tenant": "t01", "data": {"name": "z"}} in svc.call(token).json()["items"]
        assert counter(svc, "tenant_data_volume_bytes_total", tenant="t01", service=name) > 0
        assert counter(svc, "tenant_requests_total", tenant="t01", service=name, route=svc.base[len(svc.url):]
                       + "/{id}", status="200") >= 2


def test_rejected_tokens_get_401_and_an_audit_event(lab_processes):
    lab, svcs = lab_processes
    svc = svcs["policy"]
    now = int(time.time())
    cases = {
        "bad_signature": lab.local_token(key=OTHER_KEY),
        "expired": lab.local_token(iat=now - 100, exp=now - 10),
        "bad_audience": lab.token(audience="someone-else"),
        "bad_issuer": lab.local_token(iss="http://evil.example"),
        "malformed": "not-a-jwt",
        "unknown_kid": lab.local_token(key=OTHER_KEY, kid="kid-nobody-publishes"),
        "missing": None,
    }
    misses = counter(svc, "jwks_cache_lookups_total", result="miss")
    for reason, token in cases.items():
        resp = svc.call(token, tenant="t03")
        assert (resp.status_code, resp.json()["reason"]) == (401, reason)
    # a forged kid is no cache failure: counted apart, so it cannot page jwks_cache_miss_spike
    assert counter(svc, "jwks_cache_lookups_total", result="unknown_kid") >= 1
    assert counter(svc, "jwks_cache_lookups_total", result="miss") == misses
    rejected = [e for e in lab.audit() if e["action"] == "auth.rejected" and e["service"] == "policy"]
    assert {e["result"] for e in rejected} >= set(cases)
    for reason in cases:
        assert counter(svc, "jwt_validations_total", result="invalid", reason=reason) >= 1
    # a forged alg=none token is malformed, never accepted
    none_token = jwt.encode({"tenant": "t03", "iss": lab.issuer, "aud": AUD, "sub": "x", "exp": now + 60}, None,
                            algorithm="none")
    assert svc.call(none_token, tenant="t03").status_code == 401


def test_tenant_mismatch_is_403_and_audited(lab_processes):
    lab, svcs = lab_processes
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {HEADER: "t05", "Authorization": f"Bearer {lab.token('t04')}", "traceparent": tp}
    resp = requests.get(svcs["policy"].base, headers=headers, timeout=5)
    assert resp.status_code == 403
    events = [e for e in lab.audit() if e["action"] == "tenant.mismatch"]
    assert events and events[-1]["tenant"] == "t05" and events[-1]["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert events[-1]["service"] == "policy" and events[-1]["subject"] == lab.client_id


def test_rate_limit_429_is_counted(lab_processes):
    lab, svcs = lab_processes
    vuln = svcs["vuln"]
    token = lab.token("t06")
    statuses = [vuln.call(token, tenant="t06").status_code for _ in range(10)]
    assert statuses[:3] == [200, 200, 200] and statuses.count(429) >= 5
    assert counter(vuln, "tenant_rate_limit_hits_total", tenant="t06", service="vuln") == statuses.count(429)
    assert counter(vuln, "tenant_requests_total", tenant="t06", status="429") == statuses.count(429)
    # another tenant has its own bucket
    assert vuln.call(lab.token("t08"), tenant="t08").status_code == 200


def test_metrics_have_the_contract_names_and_labels(lab_processes):
    lab, svcs = lab_processes
    token = lab.token("t09")
    notify = svcs["notify"]
    notify.call(token, tenant="t09")
    notify.call(token, tenant="t09", method="POST", json={"to": "ops"})
    expected = {
        "tenant_requests_total": {"tenant", "service", "route", "status"},
        "tenant_rate_limit_hits_total": {"tenant", "service"},
        "tenant_data_volume_bytes_total": {"tenant", "service"},
        "tenant_queue_depth": {"tenant", "service"},
        "tenant_request_duration_seconds_bucket": {"tenant", "service", "kind", "le"},
        "tenant_label_overflow_total": {"service"},
        "jwks_fetch_total": {"service", "result"},
        "jwks_cache_state": {"service", "state"},
        "jwks_cache_age_seconds": {"service"},
        "jwks_cache_lookups_total": {"service", "result"},
        "jwt_validations_total": {"service", "result", "reason", "key_source"},
    }
    vuln = svcs["vuln"]
    vuln_token = lab.token("t11")
    for _ in range(5):  # burst 3: the last calls are refused, so the rate-limit series exists
        vuln.call(vuln_token, tenant="t11")
    notify.call(token, tenant="t09")  # same token again: the verified-token cache answers
    for svc in (notify, vuln):
        for name, labels in expected.items():
            if (svc is notify and name == "tenant_rate_limit_hits_total") or (
                    svc is vuln and name == "tenant_data_volume_bytes_total"):
                continue  # no 429 on notify / no write on vuln: those series do not exist (yet)
            found = svc.samples(name)
            assert found, f"{svc.name}: no {name}"
            assert all(set(lbl) == labels and lbl["service"] == svc.name for lbl, _ in found), (name, found[:3])
        states = {lbl["state"]: v for lbl, v in svc.samples("jwks_cache_state")}
        assert states == {"fresh": 1, "stale": 0, "expired": 0, "empty": 0}
        assert counter(svc, "jwt_validations_total", result="valid", key_source="token_cache") >= 1
    assert {lbl["kind"] for lbl, _ in notify.samples("tenant_request_duration_seconds_bucket")} == {"read", "write"}
    assert {lbl["tenant"] for lbl, _ in notify.samples("tenant_queue_depth")} >= {"t09"}


def test_tenant_label_cap_folds_into_overflow(own_lab):
    lab = own_lab
    lab.start_authority()
    svc = lab.service("policy")
    with requests.Session() as http:
        for i in range(1100):
            tenant = f"cap{i:04d}"
            resp = http.get(svc.base, headers={HEADER: tenant, "Authorization": f"Bearer {lab.local_token(tenant)}"},
                            timeout=10)
            assert resp.status_code == 200
    tenants = {lbl["tenant"] for lbl, _ in svc.samples("tenant_requests_total")}
    assert len(tenants - {"__overflow__"}) == 1000 and "__overflow__" in tenants
    assert counter(svc, "tenant_label_overflow_total", service="policy") == 100
    assert counter(svc, "tenant_requests_total", tenant="__overflow__") == 100


def test_rotation_keeps_old_tokens_during_overlap_and_not_after(own_lab):
    lab = own_lab
    lab.start_authority("--rotate-overlap", "3")
    svc = lab.service("policy", 1, 30, "--unknown-kid-interval", "0.5")
    old = lab.token("t01")
    assert svc.call(old).status_code == 200  # now in the verified-token cache too
    rotated = requests.post(f"{lab.ops}/admin/rotate", timeout=10).json()
    new = lab.token("t01")
    assert jwt.get_unverified_header(new)["kid"] == rotated["active"] != rotated["previous"]
    published = {k["kid"] for k in requests.get(f"{lab.issuer}/.well-known/jwks.json", timeout=5).json()["keys"]}
    assert published == {rotated["active"], rotated["previous"]}
    assert svc.call(new).status_code == 200  # unknown kid -> refresh -> found
    assert svc.call(old).status_code == 200  # old key still published
    # after the overlap the old key is gone from the JWKS; the service drops it and the cached token with it
    deadline = time.monotonic() + 15
    while rotated["previous"] in svc.health()["jwks"]["kids"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert svc.health()["jwks"]["kids"] == [rotated["active"]]
    resp = svc.call(old)
    assert (resp.status_code, resp.json()["reason"]) == (401, "unknown_kid")
    assert svc.call(new).status_code == 200


def test_authority_outage_degrade_expire_fail_open_and_recover(own_lab):
    """Stop the authority: lkg serves stale keys (one auth.degraded), a short max-stale fails closed (auth.expired,
    401 no_keys), --fail-open accepts a forged token; start it again: auth.recovered."""
    lab = own_lab
    lab.start_authority()
    lkg = lab.service("policy", 1, 60)
    closing = lab.service("vuln", 1, 2)
    open_bug = lab.service("notify", 1, 2, "--fail-open")
    hard = lab.service("policy", 1, 60, "--cache-mode", "hard-ttl")  # no last-known-good despite max-stale 60
    token = lab.token("t01")
    forged = lab.local_token(key=OTHER_KEY, kid="forged-kid")
    for svc in (lkg, closing, open_bug, hard):
        assert svc.call(token).status_code == 200
        assert svc.call(forged).status_code == 401  # fail-open does nothing while the authority answers
    assert lab.authority.stop() == 0

    lkg.wait_state("stale")
    closing.wait_state("expired")
    open_bug.wait_state("expired")
    hard.wait_state("expired")
    assert hard.call(token).json()["reason"] == "no_keys"
    assert lkg.call(token).status_code == 200
    # not in the token cache: verified by a stale key
    assert lkg.call(lab.local_token("t02"), tenant="t02").status_code == 200
    assert counter(lkg, "jwt_validations_total", result="valid", key_source="stale") >= 1
    resp = closing.call(token)
    assert (resp.status_code, resp.json()["reason"]) == (401, "no_keys")
    assert open_bug.call(forged).status_code == 200  # the security bug the experiment must catch
    assert counter(open_bug, "jwt_validations_total", result="valid", key_source="none") >= 1
    time.sleep(2.0)  # more failing refreshes: still one degraded event per service

    def actions(service: str) -> list[str]:
        return [e["action"] for e in lab.audit() if e["service"] == service and e["tenant"] == "*"]

    assert sorted(actions("policy")) == ["auth.degraded", "auth.expired"]  # lkg degraded, hard-ttl expired
    assert actions("vuln") == ["auth.degraded", "auth.expired"]
    degraded = next(e for e in lab.audit() if e["action"] == "auth.degraded")
    assert degraded["subject"] == "system" and degraded["resource"] == f"jwks:{lab.issuer}/.well-known/jwks.json"

    lab.start_authority()  # same key dir: same keys
    lkg.wait_state("fresh")
    closing.wait_state("fresh")
    hard.wait_state("fresh")
    assert sorted(actions("policy")) == ["auth.degraded", "auth.expired", "auth.recovered", "auth.recovered"]
    assert actions("vuln") == ["auth.degraded", "auth.expired", "auth.recovered"]
    assert closing.call(token).status_code == 200
    assert counter(lkg, "jwks_fetch_total", result="error") >= 1


def test_no_audit_and_cache_mode_none(own_lab):
    lab = own_lab
    lab.start_authority()
    quiet = lab.service("policy", 300, 3600, "--no-audit", "--cache-mode", "none")
    token = lab.token("t01")
    before = counter(quiet, "jwks_fetch_total", result="success")
    for _ in range(3):
        assert quiet.call(token).status_code == 200
    assert counter(quiet, "jwks_fetch_total", result="success") - before == 3  # one fetch per request
    assert quiet.call("garbage").status_code == 401
    assert lab.audit() == []


def test_sigterm_exits_cleanly(own_lab):
    lab = own_lab
    lab.start_authority()
    svc = lab.service("notify")
    assert svc.proc.stop() == 0
    assert lab.authority.stop() == 0


@pytest.mark.parametrize("extra,message", [
    (["--cache-mode", "sometimes"], "--cache-mode"),
    (["--jwks-ttl", "10", "--jwks-max-stale", "5"], "--jwks-max-stale"),
    (["--rate-limit", "-1"], "--rate-limit"),
    (["--port", "70000"], "--port"),
])
def test_bad_flags_exit_2(tmp_path, extra, message):
    argv = [sys.executable, "-m", "chaosext.lab.service", "--service", "policy", "--port", "1",
            "--audit-file", str(tmp_path / "a.jsonl"), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr


def test_authority_bad_input(tmp_path):
    base = [sys.executable, "-m", "chaosext.lab.authority", "--host", AUTH_HOST, "--port", str(free_port(AUTH_HOST)),
            "--ops-port", str(free_port(SVC_HOST)), "--clients-file", str(tmp_path / "clients.json")]
    (tmp_path / "clients.json").write_text('{"clients": [{"client_id": "c", "client_secret": "s"}]}')
    proc = subprocess.run(base + ["--key-dir", str(tmp_path / "k"), "--rotate-overlap", "-5"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "--rotate-overlap" in proc.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "keys.json").write_text("{not json")
    proc = subprocess.run(base + ["--key-dir", str(tmp_path / "bad")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "corrupt" in proc.stderr and "delete it" in proc.stderr
    (tmp_path / "clients.json").write_text('{"clients": []}')
    proc = subprocess.run(base + ["--key-dir", str(tmp_path / "k2")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "clients file" in proc.stderr


def test_port_in_use_is_a_clear_error(own_lab):
    lab = own_lab
    with socket.socket() as sock:
        sock.bind((SVC_HOST, 0))
        sock.listen()
        port = sock.getsockname()[1]
        argv = [sys.executable, "-m", "chaosext.lab.service", "--service", "policy", "--host", SVC_HOST,
                "--port", str(port), "--jwks-url", "http://127.0.0.1:9/none", "--jwks-timeout", "0.5",
                "--audit-file", str(lab.audit_file)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "in use" in proc.stderr and str(port) in proc.stderr


# ---- the default fault mode, DROP, in a network namespace this test creates -----------------------------------------
def _drop_scenario(tmp: Path) -> dict:
    """Runs inside ``unshare -rn``: JWKS packets dropped by iptables -> stale keys, requests still served."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    rule = ["-d", AUTH_HOST, "-p", "tcp", "-j", "DROP", "-m", "comment", "--comment", "chaosext-test"]
    out: dict[str, Any] = {}
    with make_lab(tmp) as lab:
        lab.start_authority()
        svc = lab.service("policy", 1, 60, "--jwks-timeout", "0.5")
        token = lab.token("t01")
        out["before"] = svc.call(token).status_code
        subprocess.run(["iptables", "-w", "-I", "OUTPUT", "1", *rule], check=True)
        try:
            out["state_during"] = svc.wait_state("stale")["jwks"]["state"]
            time.sleep(1.5)  # several timed-out refreshes
            out["during"] = [svc.call(token).status_code, svc.call(lab.local_token("t02"), tenant="t02").status_code]
            out["fetch_errors"] = counter(svc, "jwks_fetch_total", result="error")
        finally:
            subprocess.run(["iptables", "-w", "-D", "OUTPUT", *rule], check=True)
        out["state_after"] = svc.wait_state("fresh")["jwks"]["state"]
        out["events"] = [e["action"] for e in lab.audit() if e["tenant"] == "*"]
    return out


@pytest.mark.netns
def test_dropped_jwks_packets_serve_stale_keys(tmp_path):
    """iptables DROP (connect timeouts, not refusals) in a private network namespace: the service keeps serving with
    last-known-good keys, writes one auth.degraded, and recovers when the rule goes."""
    proc = subprocess.Popen(["unshare", "-rn", sys.executable, __file__, "--drop-scenario", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the namespace dies with its last process
            proc.wait()
    assert proc.returncode == 0, stderr[-2000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["before"] == 200 and out["state_during"] == "stale" and out["during"] == [200, 200]
    assert out["fetch_errors"] >= 1 and out["state_after"] == "fresh"
    assert out["events"] == ["auth.degraded", "auth.recovered"]


if __name__ == "__main__" and sys.argv[1:2] == ["--drop-scenario"]:
    print(json.dumps(_drop_scenario(Path(sys.argv[2]))))
