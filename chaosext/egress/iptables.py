"""iptables driver: a per-run chain in the filter table, jumped to from position 1 of OUTPUT, in the target's netns.

Targets: ``local`` (this process's network namespace), ``netns:<name>`` (``ip netns``), ``pid:<pid>`` (the network
namespace of a process, entered with ``nsenter``), ``k8s-pod:<namespace>/<pod or label selector>`` (commands run in
the pod through the Kubernetes API, see :mod:`chaosext.egress.kubernetes`).

Every rule carries ``-m comment --comment chaosext:<run_id>`` and ``-m time --datestop <UTC deadline>``, so the
kernel stops matching at the deadline even when no chaosext process is alive; the watchdog then deletes the chain.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any, Protocol

from chaosext.egress.base import FaultError, FaultSpec, expected_error, probe_endpoint

__all__ = ["IptablesDriver", "Runner", "HostRunner", "runner_for", "FAMILIES"]

#: binary and address version of each family
FAMILIES = (("iptables", 4), ("ip6tables", 6))
CHAIN_RE = re.compile(r"^CHAOSEXT-([0-9a-z]+)$")
WAIT = ["-w", "5"]
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


class Runner(Protocol):
    """Runs commands and probes inside one target network namespace."""

    label: str

    def run(self, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
        """Run ``argv`` in the target (``stdin`` fed to it); ``(returncode, stdout, stderr)``."""

    def shown(self, argv: list[str]) -> str:
        """The command line as it is really executed (for dry runs and reports)."""

    def probe(self, address: str, port: int, timeout: float, url: str = "") -> dict:
        """:func:`chaosext.egress.base.probe_endpoint` from inside the target."""

    def has(self, binary: str) -> bool:
        """Whether ``binary`` can be run in the target."""


def _cap_eff() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


class HostRunner:
    """Local processes, optionally prefixed to enter a namespace (``ip netns exec`` / ``nsenter``)."""

    def __init__(self, label: str, prefix: list[str] | None = None, timeout: float = 15.0) -> None:
        self.label = label
        self.prefix = list(prefix or [])
        self.timeout = timeout

    def run(self, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
        try:
            cp = subprocess.run(self.prefix + argv, capture_output=True, text=True, timeout=self.timeout,
                                input=stdin)
        except FileNotFoundError as exc:
            raise FaultError(f"{exc.filename} not found on this host; install it (scripts/setup)") from None
        except subprocess.TimeoutExpired:
            raise FaultError(f"timed out after {self.timeout}s: {self.shown(argv)}") from None
        return cp.returncode, cp.stdout, cp.stderr

    def shown(self, argv: list[str]) -> str:
        return shlex.join(self.prefix + argv)

    def probe(self, address: str, port: int, timeout: float, url: str = "") -> dict:
        if not self.prefix:
            return probe_endpoint(address, port, timeout, url)
        argv = [sys.executable, "-m", "chaosext.egress.base", "probe", address, str(port), str(timeout)]
        rc, out, err = self.run(argv + ([url] if url else []))
        try:
            return json.loads(out)
        except ValueError:
            raise FaultError(f"probe inside {self.label} failed (rc={rc}): {err.strip()[-300:]}") from None

    def has(self, binary: str) -> bool:
        return shutil.which(binary) is not None

    def check_capable(self) -> None:
        """Refuse early without CAP_NET_ADMIN (and CAP_SYS_ADMIN to enter another namespace)."""
        caps = _cap_eff()
        if not caps >> CAP_NET_ADMIN & 1:
            raise FaultError("iptables needs CAP_NET_ADMIN: run as root (or in `unshare -rn` for a private netns)")
        if self.prefix and not caps >> CAP_SYS_ADMIN & 1:
            raise FaultError(f"entering {self.label} needs CAP_SYS_ADMIN: run as root")


def runner_for(target: str, options: dict[str, Any] | None = None) -> list[Runner]:
    """Runners for ``target``; raises FaultError if the target does not exist."""
    if target in ("", "local"):
        return [HostRunner("local")]
    kind, _, name = target.partition(":")
    if kind == "netns":
        if not name or "/" in name or not os.path.exists(f"/run/netns/{name}"):
            raise FaultError(f"target {target!r} not found: no network namespace {name!r} (see `ip netns list`)")
        return [HostRunner(target, ["ip", "netns", "exec", name])]
    if kind == "pid":
        if not name.isdigit() or not os.path.exists(f"/proc/{name}/ns/net"):
            raise FaultError(f"target {target!r} not found: no process {name!r} (give the pid of a running process)")
        return [HostRunner(target, ["nsenter", "-t", name, "-n", "--"])]
    if kind == "k8s-pod":
        from chaosext.egress.kubernetes import pod_runners

        return pod_runners(name, options or {})
    raise FaultError(
        f"unknown target {target!r}: use local, netns:<name>, pid:<pid> or k8s-pod:<namespace>/<pod|selector>"
    )


def _datestop(expires_at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(expires_at))


def _family_addresses(spec: FaultSpec, version: int) -> list[str]:
    return [a for a in spec.addresses if ipaddress.ip_address(a).version == version]


def _rule(spec: FaultSpec, address: str, version: int) -> list[str]:
    prefix = 32 if version == 4 else 128
    target = ["DROP"] if spec.mode == "drop" else ["REJECT", "--reject-with", "tcp-reset"]
    return [spec.chain, "-d", f"{address}/{prefix}", "-p", "tcp", "-m", "tcp", "--dport", str(spec.port),
            "-m", "time", "--datestop", _datestop(spec.expires_at),
            "-m", "comment", "--comment", spec.tag, "-j", *target]


def _jump(spec: FaultSpec) -> list[str]:
    return ["OUTPUT", "-m", "comment", "--comment", spec.tag, "-j", spec.chain]


def _rule_endpoint(line: str) -> str:
    """``addr:port`` a chaosext rule blocks (``-d 127.0.0.2/32 ... --dport 8440``), or "" for a jump/chain line."""
    dest, port = re.search(r"\s-d\s+(\S+)", line), re.search(r"--dport\s+(\d+)", line)
    if not dest or not port:
        return ""
    return f"{ipaddress.ip_interface(dest.group(1)).ip}:{port.group(1)}"


def _listing(runner: Runner, binary: str) -> list[str]:
    rc, out, err = runner.run([binary, *WAIT, "-t", "filter", "-S"])
    if rc != 0:
        raise FaultError(f"cannot list rules in {runner.label}: {err.strip()}")
    return out.splitlines()


class IptablesDriver:
    """Block the JWKS host:port with iptables/ip6tables in the target network namespace."""

    via = "iptables"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    # -- planning

    def _families(self, spec: FaultSpec) -> list[tuple[str, list[str]]]:
        return [(b, _family_addresses(spec, v)) for b, v in FAMILIES if _family_addresses(spec, v)]

    def _commands(self, spec: FaultSpec) -> list[tuple[str, list[str], list[str]]]:
        """``(binary, check_argv or [], add_argv)`` in order; the check is run first, add only if it fails."""
        plan = []
        for binary, addrs in self._families(spec):
            plan.append((binary, ["-S", spec.chain], ["-N", spec.chain]))
            for addr in addrs:
                rule = _rule(spec, addr, 4 if binary == "iptables" else 6)
                plan.append((binary, ["-C", *rule], ["-A", *rule]))
            plan.append((binary, ["-C", *_jump(spec)], ["-I", "OUTPUT", "1", *_jump(spec)[1:]]))
        return plan

    def describe(self, spec: FaultSpec) -> list[str]:
        """Every command apply runs, in order, inside the target (``-C``/``-S`` checks first, adds only if absent)."""
        lines = []
        for runner in runner_for(spec.target, spec.options):
            for binary, check, add in self._commands(spec):
                lines.append(runner.shown([binary, *WAIT, *check]) + "  # check")
                lines.append(runner.shown([binary, *WAIT, *add]))
        return lines

    def describe_revert(self, spec: FaultSpec) -> list[str]:
        """Commands revert runs (deletes are only issued for rules that exist)."""
        lines = []
        for runner in runner_for(spec.target, spec.options):
            for binary, _ in FAMILIES:
                lines.append(runner.shown([f"{binary}-restore", *WAIT, "--noflush"]) + " <<< '*filter "
                             + f"-D {shlex.join(_jump(spec))} -F {spec.chain} -X {spec.chain} COMMIT'"
                             + "  # one line each; only for rules that exist")
        return lines

    def preflight(self, spec: FaultSpec) -> list[Runner]:
        """Check the target exists and has what we need; nothing is changed."""
        runners = runner_for(spec.target, spec.options)
        for runner in runners:
            if isinstance(runner, HostRunner):
                runner.check_capable()
            for binary, _ in self._families(spec):
                if not runner.has(binary):
                    raise FaultError(f"{binary} not found in {runner.label}; install iptables (scripts/setup)")
        return runners

    # -- doing

    def apply(self, spec: FaultSpec) -> dict:
        """Create the chain, its rules and the jump; each add only after its check says it is missing."""
        runners = self.preflight(spec)
        done: list[str] = []
        for runner in runners:
            for binary, check, add in self._commands(spec):
                rc, _, _ = runner.run([binary, *WAIT, *check])
                if rc == 0:
                    continue
                rc, _, err = runner.run([binary, *WAIT, *add])
                if rc != 0:
                    self.revert(spec)
                    raise FaultError(f"{runner.shown([binary, *add])} failed: {err.strip()} (rolled back)")
                done.append(runner.shown([binary, *WAIT, *add]))
        return {"applied": done, "chain": spec.chain, "expires_at": spec.expires_at,
                "datestop_utc": _datestop(spec.expires_at), "targets": [r.label for r in runners]}

    def rules_of(self, runner: Runner, run_id: str) -> dict[str, Any]:
        """What the target holds for ``run_id``: rule lines per family and the jump position in OUTPUT."""
        chain, tag = f"CHAOSEXT-{run_id}", f"chaosext:{run_id}"
        found: dict[str, Any] = {"rules": [], "chains": [], "jump_positions": []}
        for binary, _ in FAMILIES:
            if not runner.has(binary):
                continue
            position = 0
            for line in _listing(runner, binary):
                if line.startswith("-A OUTPUT "):
                    position += 1
                if line == f"-N {chain}":
                    found["chains"].append(binary)
                elif line.startswith("-A ") and (f"-j {chain}" in line or tag in line):
                    found["rules"].append(f"{binary} {line}")
                    if line.startswith("-A OUTPUT ") and f"-j {chain}" in line:
                        found["jump_positions"].append(position)
        return found

    def verify(self, spec: FaultSpec) -> dict:
        """Rules present, jump first in OUTPUT, and a fresh connect from the target fails the way ``mode`` says."""
        timeout = float(spec.options.get("verify_timeout", 1.0))
        want = expected_error(spec.mode)
        out: dict[str, Any] = {"blocked": True, "targets": []}
        for runner in runner_for(spec.target, spec.options):
            held = self.rules_of(runner, spec.run_id)
            expect_rules = sum(len(a) + 1 for _, a in self._families(spec))
            probes = [runner.probe(a, spec.port, timeout) for a in spec.addresses]
            ok = (
                len(held["rules"]) >= expect_rules
                and all(p == 1 for p in held["jump_positions"])
                and all(p["error"] in want for p in probes)
            )
            out["blocked"] = out["blocked"] and ok
            out["targets"].append({"target": runner.label, "blocked": ok, "rules": len(held["rules"]),
                                   "jump_positions": held["jump_positions"], "probes": probes})
        out["expired"] = time.time() >= spec.expires_at
        out["expected_error"] = "|".join(want)
        return out

    def revert(self, spec: FaultSpec) -> dict:
        """Delete the jump(s), flush and delete the chain in both families; fine if already gone."""
        removed: list[str] = []
        left: list[str] = []
        for runner in runner_for(spec.target, spec.options):
            gone, still = self._remove_run(runner, spec.run_id)
            removed += gone
            left += still
        if left:
            raise FaultError(f"could not remove every chaosext:{spec.run_id} rule: {left}")
        return {"removed": removed, "left": left}

    def _remove_run(self, runner: Runner, run_id: str) -> tuple[list[str], list[str]]:
        """Delete ``run_id``'s jumps/rules and chain in both families; ``(removed, left)``, where left comes from
        listing again every family that held something."""
        chain, tag = f"CHAOSEXT-{run_id}", f"chaosext:{run_id}"
        removed: list[str] = []
        left: list[str] = []
        for binary, _ in FAMILIES:
            if not runner.has(binary):
                continue
            lines = _listing(runner, binary)
            if not any(chain in line or tag in line for line in lines):
                continue
            # one iptables-restore transaction: a single kernel commit instead of one per delete
            todo = ["-D" + line[2:] for line in lines
                    if line.startswith("-A ") and line.split()[1] != chain and (f"-j {chain}" in line or tag in line)]
            if f"-N {chain}" in lines:
                todo += [f"-F {chain}", f"-X {chain}"]
            script = "*filter\n" + "".join(f"{line}\n" for line in todo) + "COMMIT\n"
            rc, _, err = runner.run([f"{binary}-restore", *WAIT, "--noflush"], stdin=script)
            if rc == 0:
                removed += [f"{binary} {line}" for line in todo]
            left += [f"{binary} {line}" for line in _listing(runner, binary) if chain in line or tag in line]
        return removed, left

    def find_orphans(self, target: str) -> list[dict]:
        """Every chaosext chain or tagged rule on ``target``, by name and comment alone."""
        found: dict[str, dict[str, Any]] = {}
        for runner in runner_for(target, self.options):
            for binary, _ in FAMILIES:
                if not runner.has(binary):
                    continue
                for line in _listing(runner, binary):
                    words = line.split()
                    run_id = ""
                    if words[:1] == ["-N"] and CHAIN_RE.match(words[1]):
                        run_id = CHAIN_RE.match(words[1]).group(1)
                    elif "chaosext:" in line:
                        run_id = re.search(r"chaosext:([0-9a-z]+)", line).group(1)
                    if run_id:
                        item = found.setdefault(run_id, {"run_id": run_id, "via": self.via, "target": target,
                                                         "rules": 0, "families": [], "endpoints": []})
                        item["rules"] += words[0] == "-A"
                        endpoint = _rule_endpoint(line)
                        if endpoint and endpoint not in item["endpoints"]:
                            item["endpoints"].append(endpoint)
                        if binary not in item["families"]:
                            item["families"].append(binary)
        return list(found.values())

    def remove_orphan(self, target: str, run_id: str) -> list[str]:
        """Remove one run's rules found by :meth:`find_orphans` (no FaultSpec needed)."""
        removed: list[str] = []
        for runner in runner_for(target, self.options):
            gone, left = self._remove_run(runner, run_id)
            if left:
                raise FaultError(f"could not remove every chaosext:{run_id} rule in {runner.label}: {left}")
            removed += gone
        return removed
