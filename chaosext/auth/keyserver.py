"""Where the ``jku`` / ``x5u`` forgeries point: one key listener for the whole run, at a URL the services can reach.

The two classes name a key URL in the token; a service that fetches it trusts a key the token chose. That proves
something only when the service CAN reach the URL: a key server on the runner's 127.0.0.1 is unreachable from a
service on another host, which then fails the fetch and refuses the token -- a false pass on exactly the flaw the
class exists for. So:

- ``FORGERY_KEY_URL`` (a URL of this machine the services can reach, e.g. ``http://10.0.0.5:8099``; a path is
  allowed) and ``FORGERY_KEY_LISTEN`` (``host:port`` to listen on; default the key URL's host and port when the host
  is an IP address, else ``0.0.0.0:<its port>``) set it explicitly;
- without them, the classes are tried only against the running lab (:mod:`chaosext.core.labid`: its services are
  on this host, in this network namespace), with a listener on 127.0.0.1;
- otherwise they are reported "not testable here" with what to set, never tried and never counted as refused.

One listener (per listen address) lives for the whole run in this process: every round of every check serves from
it, each forgery plan under a random path prefix of its own (fetches are counted per plan), so nobody can squat the
port between rounds. :func:`close_all` stops them (the safety control, after the experiment). What it serves is
the attacker's public key and a self-signed certificate -- nothing secret.
"""
from __future__ import annotations

import ipaddress
import secrets
import threading
from dataclasses import dataclass, field

from chaosext.auth.judge import KeyServer
from chaosext.core import urls
from chaosext.core.config import ExperimentConfig
from chaosext.core.errors import ConfigError
from chaosext.core.settings import Configuration, setting

__all__ = ["KeyUrl", "key_url_for", "close_all", "config_problems", "NOT_TESTABLE"]

NOT_TESTABLE = ("not testable here: the services are not the running lab on this host, so they may not reach a key "
                "server of this machine; set FORGERY_KEY_URL to a URL of this machine they can reach (and "
                "FORGERY_KEY_LISTEN to the address to listen on)")

_LOCK = threading.Lock()
#: listen address -> the running listener (one per address for the whole process / run)
_LISTENERS: dict[tuple[str, int], KeyServer] = {}


@dataclass
class KeyUrl:
    """The key URL one forgery plan names, or why the jku/x5u classes are not testable here."""

    #: base URL the forgeries name ('' = not testable: see ``reason``)
    url: str = ""
    reason: str = ""
    server: KeyServer | None = field(default=None, repr=False)
    prefix: str = ""

    def serve(self, documents: dict[str, tuple[str, bytes]]) -> None:
        """Serve ``documents`` ({path: (content type, body)}) under this plan's prefix."""
        if self.server is not None:
            self.server.documents.update({self.prefix + path: doc for path, doc in documents.items()})

    def fetches(self) -> list[str]:
        """Paths of this plan's documents that were fetched so far."""
        if self.server is None:
            return []
        return [p for p in list(self.server.fetches) if p.startswith(self.prefix + "/")]


def _listen_address(key_url: urls.Url, listen: str) -> tuple[str, int]:
    if listen:
        host, sep, port = listen.rpartition(":")
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            number = -1
        if not sep or not 0 <= number < 65536:
            raise ConfigError(f"FORGERY_KEY_LISTEN={listen!r}: give host:port with an IP address, e.g. 0.0.0.0:8099")
        return host, number
    try:
        ipaddress.ip_address(key_url.host)
        return key_url.host, key_url.port
    except ValueError:
        return "0.0.0.0", key_url.port


def _listener(address: tuple[str, int]) -> KeyServer:
    with _LOCK:
        server = _LISTENERS.get(address)
        if server is None:
            server = KeyServer({}, host=address[0], port=address[1])
            server.__enter__()
            _LISTENERS[address] = server
        return server


def config_problems(configuration: Configuration = None) -> list[str]:
    """What is wrong with FORGERY_KEY_URL / FORGERY_KEY_LISTEN (checked before the run starts); [] when fine."""
    explicit = setting(configuration, "forgery_key_url").strip()
    listen = setting(configuration, "forgery_key_listen").strip()
    if not explicit:
        return ["FORGERY_KEY_LISTEN is set without FORGERY_KEY_URL: give the URL the services reach it at"] \
            if listen else []
    try:
        _listen_address(urls.parse(explicit, "FORGERY_KEY_URL"), listen)
    except ConfigError as exc:
        return [str(exc)]
    return []


def key_url_for(cfg: ExperimentConfig, configuration: Configuration = None) -> KeyUrl:
    """The key URL of a new forgery plan (module docstring). ConfigError when FORGERY_KEY_URL / _LISTEN are unusable;
    OSError when the address cannot be listened on."""
    explicit = setting(configuration, "forgery_key_url").strip()
    listen = setting(configuration, "forgery_key_listen").strip()
    prefix = "/" + secrets.token_hex(8)
    if explicit:
        try:
            parsed = urls.parse(explicit, "FORGERY_KEY_URL")
        except urls.UrlError as exc:
            raise ConfigError(str(exc)) from None
        server = _listener(_listen_address(parsed, listen))
        return KeyUrl(url=explicit.rstrip("/") + prefix, server=server, prefix=prefix)
    if not cfg.is_lab_target:
        return KeyUrl(reason=NOT_TESTABLE)
    server = _listener(("127.0.0.1", 0))
    return KeyUrl(url=server.url + prefix, server=server, prefix=prefix)


def close_all() -> None:
    """Stop every listener (after the run)."""
    with _LOCK:
        servers = list(_LISTENERS.values())
        _LISTENERS.clear()
    for server in servers:
        server.__exit__(None, None, None)
