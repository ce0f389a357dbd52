"""The impostor: the JWKS answer of one run (``JWKS_FAILURE`` slow, http-error, empty-keys, malformed, rotated,
tls-untrusted), served where an iptables target's JWKS connections are redirected to (:mod:`chaosext.egress.redirect`).

One process per run, started by :func:`spawn`: ``python3 -m chaosext.egress.impostor --run-id <id> --expires-at <t>
[--netns <path>]... [--v6] [--tls <host>]`` reads its answer (JSON, :func:`answer_doc`) from stdin, opens one
listening socket per target network namespace (``127.0.0.1:<port>``, and ``[::1]:<port>`` with ``--v6``: where the
kernel's REDIRECT sends a target's own connections), forks, prints ``<pid> <port>`` and serves them all from the one
child. It answers every request with the run's answer (after ``delay_seconds``: ``slow``), except ``GET
/.chaosext/impostor/<run id>``, which answers the run id at once (the driver's verification). With ``--tls`` it speaks
TLS with a fresh self-signed certificate for that host (``tls-untrusted``: what a service that verifies TLS must
refuse). Its lifetime is the fault's: it exits by itself at the fault's deadline (``--expires-at`` + 1 s, like the
kernel's ``--datestop`` on the redirect), and on SIGTERM from the driver's revert, which the run's restore, the dead-man
watchdog (a run whose heartbeat stopped) and ``chaosext restore`` all call. It holds nothing but public data (the
JWKS, canned bodies) and, with ``--tls``, a throwaway key in memory.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import errno
import functools
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from chaosext.core.failures import Answer
from chaosext.core.names import check_run_id
from chaosext.core.procs import find_processes, minimal_env, proc_start_time, process_alive, signal_verified
from chaosext.egress.base import FaultError

__all__ = ["MODULE", "VERIFY_PATH", "answer_doc", "spawn", "find", "stop", "main", "verify_request"]

MODULE = "chaosext.egress.impostor"
#: ``GET <VERIFY_PATH>/<run id>`` answers the run id at once: the driver's proof that a connection reaches THIS run's
#: impostor
VERIFY_PATH = "/.chaosext/impostor"
GRACE_SECONDS = 1.0
MAX_REQUEST = 16384
PORT_RANGE = (20000, 60000)


def answer_doc(answer: Answer) -> dict[str, Any]:
    """The answer as the JSON the impostor reads on stdin."""
    return {"status": answer.status, "content_type": answer.content_type,
            "body": base64.b64encode(answer.body).decode(), "delay_seconds": answer.delay_seconds}


def spawn(run_id: str, answer: Answer, expires_at: float, nspaths: list[str], v6: bool = False,
          tls_host: str = "") -> tuple[int, int]:
    """Start the run's impostor with a listener in each network namespace of ``nspaths`` ('' = this process's);
    ``(pid, port)``. FaultError when it cannot start (nothing is left running then). It gets a minimal environment
    (``chaosext.core.procs.minimal_env``): none of root's credentials."""
    argv = [sys.executable, "-m", MODULE, "--run-id", check_run_id(run_id, "run id"),
            "--expires-at", f"{expires_at:.0f}"]
    for path in nspaths:
        argv += ["--netns", path or "-"]
    argv += ["--v6"] if v6 else []
    argv += ["--tls", tls_host] if tls_host else []
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, close_fds=True, text=True, env=minimal_env(), umask=0o077)
    try:
        out, err = proc.communicate(json.dumps(answer_doc(answer)), timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise FaultError(f"the impostor did not start within 20 s: {' '.join(argv[:3])}") from None
    words = out.split()
    if proc.returncode != 0 or len(words) != 2 or not all(w.isdigit() for w in words):
        raise FaultError(f"the impostor did not start (exit {proc.returncode}): {err.strip()[-300:]}")
    return int(words[0]), int(words[1])


def _is_impostor(argv: list[str], run_id: str = "") -> bool:
    """``argv`` is exactly an impostor's command line as :func:`spawn` builds it (of ``run_id``, if given): the
    interpreter, ``-m`` this module, ``--run-id`` and an id of the run-id shape, in that order."""
    if len(argv) < 5 or argv[1:4] != ["-m", MODULE, "--run-id"] or not os.path.basename(argv[0]).startswith("python"):
        return False
    try:
        check_run_id(argv[4], "run id")
    except ValueError:
        return False
    return not run_id or argv[4] == run_id


def find(run_id: str = "") -> list[int]:
    """Pids of running impostors (of ``run_id`` only, if given): processes of the user chaosext runs as with exactly
    an impostor's command line (a look-alike another user starts is never signalled)."""
    if run_id:
        check_run_id(run_id, "run id")
    return find_processes(lambda argv: _is_impostor(argv, run_id), uid=os.geteuid())


def stop(run_id: str, timeout: float = 5.0) -> list[int]:
    """SIGTERM every impostor of ``run_id`` and wait (up to ``timeout``) until they are gone (SIGKILL then); their
    pids. Each signal goes only to the process found, verified again right before (pid, start time, command line,
    user: ``chaosext.core.procs.signal_verified``)."""
    def match(argv: list[str]) -> bool:
        return _is_impostor(argv, run_id)

    found = [(pid, proc_start_time(pid)) for pid in find(run_id)]
    stopped = [pid for pid, start in found
               if signal_verified(pid, start, match, signal.SIGTERM, group=False, uid=os.geteuid())]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(process_alive(p, s) for p, s in found):
        time.sleep(0.05)
    for pid, start in found:
        signal_verified(pid, start, match, signal.SIGKILL, group=False, uid=os.geteuid())
    return stopped


def verify_request(run_id: str) -> bytes:
    """The request that asks an impostor for its run id."""
    return f"GET {VERIFY_PATH}/{run_id} HTTP/1.1\r\nHost: impostor\r\nConnection: close\r\n\r\n".encode()


# ------------------------------------------------------------------------------------------------ the process


def _in_netns(nspath: str, fn: Callable[[], socket.socket]) -> socket.socket:
    if not nspath:
        return fn()
    from chaosext.egress.netns import in_netns  # the one setns helper (a thread of its own)

    return in_netns(nspath, fn)


def _listener(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _listeners(nspaths: list[str], v6: bool) -> tuple[int, list[socket.socket]]:
    """One listener per namespace and family on one port free in all of them."""
    last: OSError | None = None
    for _ in range(40):
        port = random.randint(*PORT_RANGE)
        socks: list[socket.socket] = []
        try:
            for path in nspaths:
                socks.append(_in_netns(path, functools.partial(_listener, socket.AF_INET, "127.0.0.1", port)))
                if v6:
                    socks.append(_in_netns(path, functools.partial(_listener, socket.AF_INET6, "::1", port)))
            return port, socks
        except OSError as exc:
            for s in socks:
                s.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            last = exc
    raise OSError(f"no port free in every target namespace ({last})")


def _self_signed(host: str) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for ``host`` (its key lives in memory only)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64] or "impostor")])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .sign(key, hashes.SHA256()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain reads files: a private 0700 directory, gone at once
        cert_path, key_path = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        with open(cert_path, "wb") as fh:
            fh.write(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


def _response(status: int, content_type: str, body: bytes) -> bytes:
    reason = {200: "OK"}.get(status, "Error")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode() + body


async def _serve(run_id: str, answer: dict[str, Any], socks: list[socket.socket], expires_at: float,
                 tls: ssl.SSLContext | None) -> None:
    body = base64.b64decode(answer.get("body") or "")
    status, ctype = int(answer.get("status") or 200), str(answer.get("content_type") or "application/json")
    delay = float(answer.get("delay_seconds") or 0.0)
    canned = _response(status, ctype, body)
    verify = _response(200, "text/plain", run_id.encode())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=max(10.0, delay))
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                # no HTTP request (a TLS client of an https JWKS in slow): hold it for the delay, then close
                await asyncio.sleep(delay)
                return
            path = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else ""
            if path == f"{VERIFY_PATH}/{run_id}":
                writer.write(verify)
            else:
                if delay:
                    await asyncio.sleep(delay)
                writer.write(canned)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ssl.SSLError,
                IndexError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(handle, sock=s, ssl=tls, limit=MAX_REQUEST) for s in socks]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, expires_at + GRACE_SECONDS - time.time()))
    except TimeoutError:
        pass
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point: bind, fork, print ``<pid> <port>``, serve until the deadline or SIGTERM."""
    parser = argparse.ArgumentParser(prog=f"python3 -m {MODULE}")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--expires-at", type=float, required=True, help="UTC epoch seconds: exit then")
    parser.add_argument("--netns", action="append", default=[], help="network namespace file; - = this one")
    parser.add_argument("--v6", action="store_true", help="also listen on [::1]")
    parser.add_argument("--tls", default="", help="speak TLS with a self-signed certificate for this host")
    parser.add_argument("--foreground", action="store_true", help="do not fork (debugging)")
    args = parser.parse_args(argv)
    try:
        check_run_id(args.run_id, "--run-id")
    except ValueError as exc:
        print(f"impostor: {exc}", file=sys.stderr)
        return 2
    answer = json.loads(sys.stdin.read() or "{}")
    nspaths = ["" if p == "-" else p for p in (args.netns or ["-"])]
    try:
        port, socks = _listeners(nspaths, args.v6)
        tls = _self_signed(args.tls) if args.tls else None
    except (OSError, ValueError) as exc:
        print(f"impostor: {exc}", file=sys.stderr)
        return 1
    if not args.foreground:
        pid = os.fork()
        if pid:
            print(pid, port, flush=True)
            os._exit(0)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    else:
        print(os.getpid(), port, flush=True)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    asyncio.run(_serve(args.run_id, answer, socks, args.expires_at, tls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
