"""iptables targets for every ``JWKS_FAILURE``: the JWKS redirected to chaosext's impostor, or blocked as before.

:class:`RedirectingDriver` is the iptables driver ``build_driver`` returns. ``unreachable`` and the scenarios are the
plain :class:`chaosext.egress.iptables.IptablesDriver` fault (drop | reject). For the modes where the JWKS *answers*
(slow, http-error, empty-keys, malformed, rotated, tls-untrusted), in every target network namespace (``local``,
``netns:``, ``pid:``; a ``k8s-pod:`` target is refused before any change, ``chaosext.core.failures``):

1. one impostor process for the run (:mod:`chaosext.egress.impostor`) listens on ``127.0.0.1:<port>`` (and
   ``[::1]:<port>``) inside each target namespace and serves the mode's answer until the fault's deadline;
2. a per-run chain ``CHAOSEXT-<run id>`` in the **nat** table, jumped to from position 1 of nat ``OUTPUT``, REDIRECTs
   new connections to every JWKS address:port to that port (every rule tagged ``chaosext:<run id>`` and ending at
   the deadline, ``-m time --datestop``), one ``iptables-restore --noflush`` transaction per target and family;
3. the plain fault's filter rules with ``reject`` reset the connections opened BEFORE the redirect (a client's
   pooled keep-alive connection to the real JWKS): nat only sees a connection's first packet, so a new connection
   leaves the nat chain already rewritten and never meets the filter rule.

All or none across targets: if any step fails anywhere, everything of the run is removed again and the error names the
targets. Verified from inside every target: the rules are in place and a fresh connection to the JWKS address gets
``GET /.chaosext/impostor/<run id>`` answered with this run's id. Revert (the run's restore, the watchdog,
``chaosext restore``) removes the nat chain, the filter chain and stops the impostor; ``restore --all`` finds them by
their tags and the impostor by its command line.
"""
from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import re
import shlex
import socket
import ssl
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from chaosext.core import ids
from chaosext.core.failures import Answer, answer, needs_impostor
from chaosext.egress import impostor
from chaosext.egress.base import FaultError, FaultSpec, TargetNotFound
from chaosext.egress.iptables import (
    FAMILIES,
    WAIT,
    HostRunner,
    IptablesDriver,
    Runner,
    _belongs,
    _datestop,
    _error_text,
    _fan_out,
    _jump_target,
    _owner,
    _restore_input,
    _shown_line,
    runner_for,
)
from chaosext.egress.netns import in_netns

__all__ = ["RedirectingDriver", "answering", "impostor_answer"]


def answering(spec: FaultSpec) -> str:
    """The spec's JWKS_FAILURE when the JWKS must answer (the impostor's modes), else ''."""
    failure = str(spec.options.get("jwks_failure") or "")
    return failure if needs_impostor(failure) else ""


def impostor_answer(spec: FaultSpec, real_jwks: bytes = b"") -> Answer:
    """What the impostor serves for ``spec`` (its options carry the mode's parameters; ``slow`` serves ``real_jwks``
    after the delay)."""
    params = dict(spec.options.get("answer") or {})
    return answer(answering(spec), error_status=int(params.get("error_status") or 503),
                  malformed=str(params.get("malformed") or "not-json"),
                  slow_seconds=float(params.get("slow_seconds") or 0.0), real_jwks=real_jwks)


def _real_jwks(runner: Runner, spec: FaultSpec, timeout: float = 5.0) -> bytes:
    """The JWKS as the target fetches it now, before the redirect (what ``slow`` serves after the delay): one GET
    over a socket made inside the target's namespace. An https JWKS: b'' (the impostor cannot answer TLS for it,
    it holds the connection for the delay and closes it)."""
    if urlsplit(spec.jwks_url).scheme != "http":
        return b""
    address = spec.addresses[0]
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    nspath = getattr(runner, "nspath", "")
    sock = in_netns(nspath, lambda: socket.socket(family, socket.SOCK_STREAM)) if nspath else \
        socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    conn = http.client.HTTPConnection(spec.host, spec.port, timeout=timeout)
    try:
        sock.connect((address, spec.port))
        conn.sock = sock
        parts = urlsplit(spec.jwks_url)
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     headers={"Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise FaultError(f"{spec.jwks_url} answered {resp.status} from {runner.label} before the fault: slow "
                             f"serves the real key set after the delay, so it must answer now")
        return body
    except (OSError, http.client.HTTPException) as exc:
        raise FaultError(f"cannot fetch {spec.jwks_url} from {runner.label} before the fault "
                         f"({type(exc).__name__}): slow serves the real key set after the delay") from None
    finally:
        conn.close()


def _nat_rule(spec: FaultSpec, address: str, port: int) -> list[str]:
    prefix = 32 if ipaddress.ip_address(address).version == 4 else 128
    return [spec.chain, "-d", f"{address}/{prefix}", "-p", "tcp", "-m", "tcp", "--dport", str(spec.port),
            "-m", "time", "--datestop", _datestop(spec.expires_at), "-m", "comment", "--comment", spec.tag,
            "-j", "REDIRECT", "--to-ports", str(port)]


def _nat_jump(spec: FaultSpec) -> list[str]:
    return ["-I", "OUTPUT", "1", "-m", "comment", "--comment", spec.tag, "-j", spec.chain]


def _nat_listing(runner: Runner, binary: str) -> list[str]:
    rc, out, err = runner.run([binary, *WAIT, "-t", "nat", "-S"])
    if rc != 0:
        if isinstance(runner, HostRunner) and runner.nspath and not _exists(runner.nspath):
            raise TargetNotFound(f"{runner.label} is gone: {err.strip()}")
        raise FaultError(f"cannot list the nat table in {runner.label}: {err.strip()}")
    return out.splitlines()


def _exists(path: str) -> bool:
    try:
        with open(path):
            return True
    except OSError:
        return False


def _nat_remove_lines(lines: list[str], run_id: str) -> list[str]:
    """The restore lines deleting ``run_id``'s jumps, rules and chain from a nat listing ([] when none); a line is
    the run's by exact name only (``chaosext.egress.iptables._owner``)."""
    chain = ids.chain_name(run_id)  # a run id that is not one never reaches the input
    todo = ["-D" + line[2:] for line in lines
            if line.startswith("-A ") and line.split()[1] != chain and _belongs(line, run_id)]
    if f"-N {chain}" in lines:
        todo += [f"-F {chain}", f"-X {chain}"]
    return todo


class RedirectingDriver(IptablesDriver):
    """The iptables driver for every JWKS_FAILURE (module docstring)."""

    # -- helpers

    def _local_runners(self, spec: FaultSpec) -> list[HostRunner]:
        runners = self.preflight(spec)
        hosts = [r for r in runners if isinstance(r, HostRunner)]
        if len(hosts) != len(runners):
            raise FaultError(f"JWKS_FAILURE={answering(spec)} needs the impostor inside every target's network "
                             f"namespace; {', '.join(r.label for r in runners if r not in hosts)} cannot be entered "
                             f"from here (use a pid: target on the node, or FAULT_VIA=istio)")
        binaries = [b for b, _, _ in self._families(spec)]
        for done in _fan_out(lambda r: [_nat_listing(r, b) for b in binaries], hosts, self.parallelism):
            if done.error:  # the nat table must be usable everywhere before anything changes
                raise done.error
        return hosts

    def _nat_input(self, spec: FaultSpec, version: int, addrs: list[str], port: int, lines: list[str]) -> str:
        """Create (or flush) the run's nat chain with its REDIRECT rules; its jump once at position 1."""
        todo = [f":{spec.chain} - [0:0]", *(_shown_line(["-A", *_nat_rule(spec, a, port)]) for a in addrs)]
        todo += ["-D" + line[2:] for line in lines
                 if line.startswith("-A OUTPUT ") and _jump_target(line.split()) == spec.chain]
        todo.append(_shown_line(_nat_jump(spec)))
        return _restore_input(todo).replace("*filter", "*nat", 1)

    def _nat_apply_one(self, runner: Runner, spec: FaultSpec, port: int) -> float:
        for binary, version, addrs in self._families(spec):
            script = self._nat_input(spec, version, addrs, port, _nat_listing(runner, binary))
            rc, _, err = runner.run([f"{binary}-restore", *WAIT, "--noflush"], stdin=script)
            if rc != 0:
                raise FaultError(f"{binary}-restore (nat) in {runner.label} failed: {err.strip()}")
        return time.time()

    def _nat_remove_one(self, runner: Runner, run_id: str) -> tuple[list[str], list[str]]:
        removed: list[str] = []
        left: list[str] = []
        for binary, _ in FAMILIES:
            if not runner.has(binary):
                continue
            todo = _nat_remove_lines(_nat_listing(runner, binary), run_id)
            if not todo:
                continue
            rc, _, _ = runner.run([f"{binary}-restore", *WAIT, "--noflush"],
                                  stdin=_restore_input(todo).replace("*filter", "*nat", 1))
            if rc == 0:
                removed += [f"{binary} -t nat {line}" for line in todo]
            else:
                left += [f"{binary} -t nat {line}" for line in _nat_listing(runner, binary)
                         if _belongs(line, run_id)]
        return removed, left

    def _nat_remove(self, runners: list[Runner], run_id: str) -> tuple[list[str], list[str]]:
        removed: list[str] = []
        left: list[str] = []
        for d in _fan_out(lambda r: self._nat_remove_one(r, run_id), runners, self.parallelism):
            if isinstance(d.error, TargetNotFound):
                continue
            if d.error:
                left.append(f"{d.runner.label}: {_error_text(d.error)}")
                continue
            removed += [f"{d.runner.label} {line}" for line in d.value[0]]
            left += [f"{d.runner.label} {line}" for line in d.value[1]]
        return removed, left

    # -- the Driver interface

    def describe(self, spec: FaultSpec) -> list[str]:
        failure = answering(spec)
        if not failure:
            return super().describe(spec)
        runners = runner_for(spec.target, spec.options, secrets=self.secrets)
        paths = " ".join(f"--netns {getattr(r, 'nspath', '') or '-'}" for r in runners)
        lines = [f"{shlex.join([sys.executable, '-m', impostor.MODULE, '--run-id', spec.run_id, '--expires-at'])} "
                 f"{spec.expires_at:.0f} {paths}"
                 + (" --v6" if any(v == 6 for _, v, _ in self._families(spec)) else "")
                 + (f" --tls {spec.host}" if failure == "tls-untrusted" else "")
                 + f"   # the impostor ({failure}: {self._what(spec)}); prints '<pid> <port>'"]
        for runner in runners:
            for binary, version, addrs in self._families(spec):
                lines.append(runner.shown([f"{binary}-restore", *WAIT, "--noflush"]) + " <<'EOF'")
                lines += self._nat_input(spec, version, addrs, 0, []).replace(
                    "--to-ports 0", "--to-ports <port>").splitlines() + ["EOF"]
        lines.append("# then the plain fault's filter rules (reject), which reset connections opened before the "
                     "redirect:")
        return lines + super().describe(dataclasses.replace(spec, mode="reject"))

    def _what(self, spec: FaultSpec) -> str:
        a = impostor_answer(spec)
        delay = f" after {a.delay_seconds:g} s" if a.delay_seconds else ""
        return f"HTTP {a.status} {a.content_type}, {len(a.body)} bytes{delay}"

    def describe_revert(self, spec: FaultSpec) -> list[str]:
        if not answering(spec):
            return super().describe_revert(spec)
        lines = [f"kill -TERM <pid of `python3 -m {impostor.MODULE} --run-id {spec.run_id}`>"]
        for runner in runner_for(spec.target, spec.options, missing_ok=True, secrets=self.secrets):
            for binary, _, _ in self._families(spec):
                lines.append(runner.shown([binary, *WAIT, "-t", "nat", "-S"]) + f", then one {binary}-restore "
                             f"--noflush deleting the jump to {spec.chain}, its rules and the chain (nat table)")
        return lines + super().describe_revert(spec)

    def apply(self, spec: FaultSpec) -> dict[str, Any]:
        failure = answering(spec)
        if not failure:
            return super().apply(spec)
        runners = self._local_runners(spec)
        v6 = any(v == 6 for _, v, _ in self._families(spec))
        real = _real_jwks(runners[0], spec) if failure == "slow" else b""
        pid, port = impostor.spawn(spec.run_id, impostor_answer(spec, real), spec.expires_at,
                                   [r.nspath for r in runners], v6=v6,
                                   tls_host=spec.host if failure == "tls-untrusted" else "")
        try:
            done = _fan_out(lambda r: self._nat_apply_one(r, spec, port), runners, self.parallelism)
            failed = [f"{d.runner.label}: {_error_text(d.error)}" for d in done if d.error]
            if failed:
                raise FaultError(f"the redirect failed on {len(failed)} of {len(runners)} target(s): "
                                 f"{'; '.join(failed)}")
            filtered = super().apply(dataclasses.replace(spec, mode="reject"))
        except BaseException as exc:
            _, left = self._nat_remove(list(runners), spec.run_id)
            impostor.stop(spec.run_id)
            if left and isinstance(exc, FaultError):
                raise FaultError(f"{exc}; ROLLBACK INCOMPLETE, run `chaosext restore --run-id {spec.run_id}`: "
                                 f"{left}") from None
            raise
        return {**filtered, "failure": failure, "impostor": {"pid": pid, "port": port, "answer": self._what(spec)},
                "redirected": [f"{r.label} nat {spec.chain} -> 127.0.0.1:{port}" for r in runners]}

    def _reaches_impostor(self, runner: Runner, address: str, spec: FaultSpec, timeout: float) -> dict[str, Any]:
        """A fresh connection from inside the target to the JWKS address: does THIS run's impostor answer?"""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        nspath = getattr(runner, "nspath", "")
        start = time.monotonic()
        out: dict[str, Any] = {"address": address, "port": spec.port, "impostor": False, "error": ""}
        sock = in_netns(nspath, lambda: socket.socket(family, socket.SOCK_STREAM)) if nspath else \
            socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        conn: socket.socket = sock
        try:
            sock.connect((address, spec.port))
            if answering(spec) == "tls-untrusted":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE  # the impostor's own certificate: read, never trusted
                conn = ctx.wrap_socket(sock, server_hostname=spec.host)
            conn.sendall(impostor.verify_request(spec.run_id))
            data = b""
            while len(data) < 4096 and (chunk := conn.recv(4096)):
                data += chunk
            out["impostor"] = data.startswith(b"HTTP/1.1 200") and data.endswith(spec.run_id.encode())
            if not out["impostor"]:
                out["error"] = "answered by something else: " + data[:60].decode("latin-1")
        except (OSError, ValueError) as exc:
            out["error"] = type(exc).__name__
        finally:
            conn.close()
        out["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
        return out

    def _verify_answering(self, runner: Runner, spec: FaultSpec) -> dict[str, Any]:
        timeout = float(spec.options.get("verify_timeout", 1.0))
        families = self._families(spec)
        filtered = self.rules_of(runner, spec.run_id, [b for b, _, _ in families])
        nat_rules, nat_jumps = 0, []
        for binary, _, _ in families:
            position = 0
            for line in _nat_listing(runner, binary):
                if line.startswith("-A OUTPUT "):
                    position += 1
                    if _jump_target(line.split()) == spec.chain:
                        nat_jumps.append(position)
                elif line.startswith(f"-A {spec.chain} ") and _jump_target(line.split()) == "REDIRECT":
                    nat_rules += 1
        probes = [self._reaches_impostor(runner, a, spec, timeout) for a in spec.addresses]
        want = sum(len(a) for _, _, a in families)
        ok = (nat_rules >= want and nat_jumps and all(p == 1 for p in nat_jumps)
              and all(p == 1 for p in filtered["jump_positions"]) and all(p["impostor"] for p in probes))
        return {"target": runner.label, "blocked": bool(ok), "answering": answering(spec), "nat_rules": nat_rules,
                "nat_jump_positions": nat_jumps, "rules": len(filtered["rules"]),
                "jump_positions": filtered["jump_positions"], "probes": probes}

    def verify(self, spec: FaultSpec) -> dict[str, Any]:
        """The plain fault's verification, or for an answering mode in every target: the filter and nat rules in
        place (jumps first) and a fresh connection to every JWKS address answered by this run's impostor."""
        if not answering(spec):
            return super().verify(spec)
        runners = runner_for(spec.target, spec.options, missing_ok=True, secrets=self.secrets)
        done = _fan_out(lambda r: self._verify_answering(r, spec), runners, self.parallelism)
        targets = [{"target": d.runner.label, "blocked": False, "error": _error_text(d.error)} if d.error
                   else d.value for d in done]
        alive = impostor.find(spec.run_id)
        return {"blocked": bool(targets) and all(t["blocked"] for t in targets) and bool(alive), "targets": targets,
                "expired": time.time() >= spec.expires_at, "expected_error": "", "impostor_pids": alive,
                "answering": answering(spec)}

    def revert(self, spec: FaultSpec) -> dict[str, Any]:
        if not answering(spec):
            return super().revert(spec)
        runners = runner_for(spec.target, self.options or spec.options, missing_ok=True, secrets=self.secrets)
        nat_removed, nat_left = self._nat_remove(runners, spec.run_id)
        stopped = impostor.stop(spec.run_id)
        out = super().revert(spec)
        if nat_left:
            raise FaultError(f"could not remove every chaosext:{spec.run_id} nat rule: {nat_left}")
        return {**out, "removed": nat_removed + out.get("removed", []),
                "impostor_stopped": stopped}

    def find_orphans(self, target: str) -> list[dict[str, Any]]:
        """The plain fault's orphans, the nat chains and rules (by name and tag) and the run's impostor."""
        found = {o["run_id"]: o for o in super().find_orphans(target)}
        runners = runner_for(target, self.options, secrets=self.secrets)

        def scan(runner: Runner) -> dict[str, list[str]]:
            return {b: _nat_listing(runner, b) for b, _ in FAMILIES if runner.has(b)}

        for d in _fan_out(scan, runners, self.parallelism):
            if isinstance(d.error, TargetNotFound):
                continue
            for binary, lines in d.value.items():
                for line in lines:
                    words = line.split()
                    run_id = _owner(line)  # exact names only: a user chain CHAOSEXT-corpfw is not ours
                    if not run_id:
                        continue
                    item = found.setdefault(run_id, {"run_id": run_id, "via": self.via, "target": target,
                                                     "rules": 0, "families": [], "endpoints": [], "targets": []})
                    item["rules"] += words[0] == "-A"
                    item["nat"] = True
                    dest, port = re.search(r"\s-d\s+(\S+)", line), re.search(r"--dport\s+(\d+)", line)
                    if dest and port:
                        endpoint = f"{ipaddress.ip_interface(dest.group(1)).ip}:{port.group(1)}"
                        if endpoint not in item["endpoints"]:
                            item["endpoints"].append(endpoint)
                    if binary not in item["families"]:
                        item["families"].append(binary)
                    if d.runner.label not in item["targets"]:
                        item["targets"].append(d.runner.label)
        for run_id, item in found.items():
            pids = impostor.find(run_id)
            if pids:
                item["impostor_pids"] = pids
        return list(found.values())

    def remove_orphan(self, target: str, run_id: str) -> list[str]:
        runners = runner_for(target, self.options, missing_ok=True, secrets=self.secrets)
        removed, left = self._nat_remove(runners, run_id)
        stopped = impostor.stop(run_id)
        removed += [f"stopped impostor {pid}" for pid in stopped]
        removed += super().remove_orphan(target, run_id)
        if left:
            raise FaultError(f"could not remove every chaosext:{run_id} nat rule: {left}")
        return removed
