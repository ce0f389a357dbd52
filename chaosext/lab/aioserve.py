"""Process plumbing shared by the lab's servers: logging, uvloop, listening with clear errors, clean shutdown."""
import argparse
import asyncio
import errno
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

__all__ = ["ListenError", "listen", "run", "setup_logging", "stop_event", "port_arg", "positive", "http_url"]


class ListenError(RuntimeError):
    """A listener could not be opened (message says what to do)."""


def setup_logging(component: str) -> None:
    """One line per event on stderr."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {component} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").disabled = True


async def listen(runner: web.AppRunner, host: str, port: int, what: str) -> None:
    """Open ``host:port`` for ``runner``; raise :class:`ListenError` with a hint on failure."""
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            hint = "another process is using it: stop that process or choose another port"
        elif exc.errno == errno.EADDRNOTAVAIL:
            hint = "that address is not on this machine: choose a local address"
        elif exc.errno == errno.EACCES:
            hint = "permission denied: use a port above 1023 or run as root"
        else:
            hint = "check the address and port flags"
        raise ListenError(f"cannot listen on {host}:{port} for {what}: {exc.strerror or exc}; {hint}") from None


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main`` on uvloop when available; turn :class:`ListenError` into exit code 1."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the lab extra
        factory = None
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main())
    except ListenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


# ---- argparse value types (bad values -> argparse error, exit 2) ---------------------------------------------------
def port_arg(value: str) -> int:
    """A TCP port 1..65535."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (1-65535)") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def positive(kind: type[float] = float, allow_zero: bool = False) -> Callable[[str], float]:
    """An argparse type for a positive number."""

    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a {kind.__name__}") from None
        if number < 0 or (number == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{value} must be {'>= 0' if allow_zero else '> 0'}")
        return number

    return parse


def http_url(value: str) -> str:
    """An absolute http(s) URL."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http(s) URL such as http://127.0.0.2:8440")
    return value.rstrip("/") if parts.path in ("", "/") else value
