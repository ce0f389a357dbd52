"""Where the ``jku`` / ``x5u`` forgeries point: one key listener for the whole run, at a URL the services can reach.

The two classes name a key URL in the token; a service that fetches it trusts a key the token chose. That proves
something only when the service CAN reach the URL: a key server on the runner's 127.0.0.1 is unreachable from a
service on another host, which then fails the fetch and refuses the token -- a false pass on exactly the flaw the
class exists for. So:

- ``FORGERY_KEY_URL`` (a URL of this machine the services can reach, e.g. ``http://10.0.0.5:8099``; a path is
  allowed) and ``FORGERY_KEY_LISTEN`` (``host:port`` to listen on; default the key URL's host and port when the host
  is an IP address, else ``0.0.0.0:<its port>``) set it explicitly;
- without them, the classes are tried only against the running lab (``chaosext.core.labid``: its services are on this
  host, in this network namespace), with a listener on 127.0.0.1;
- otherwise they are reported "not testable here" with what to set, never tried and never counted as refused.

One listener lives for the whole run, in the run's memory (``chaosext.run.memory``): every round of every check serves
from it, each forgery plan under a random path prefix of its own (fetches are counted per plan), so nobody can squat
the port between rounds; the safety control closes it after the experiment. What it serves is the attacker's public
key and a self-signed certificate -- nothing secret.
"""
from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field

from chaosext.auth.judge import KeyServer
from chaosext.core import urls
from chaosext.core.config import ExperimentConfig
from chaosext.core.errors import ConfigError
from chaosext.run.context import RunContext

__all__ = ["KeyUrl", "KeyListener", "key_url_for", "config_problems", "NOT_TESTABLE"]

NOT_TESTABLE = ("not testable here: the services are not the running lab on this host, so they may not reach a key "
                "server of this machine; set FORGERY_KEY_URL to a URL of this machine they can reach (and "
                "FORGERY_KEY_LISTEN to the address to listen on)")


class KeyListener:
    """A started :class:`~chaosext.auth.judge.KeyServer` on ``address`` (the run's one listener)."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.server = KeyServer({}, host=address[0], port=address[1])
        self.server.__enter__()

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self.server.__exit__(None, None, None)


@dataclass
class KeyUrl:
    """The key URL one forgery plan names, or why the jku/x5u classes are not testable here."""

    #: base URL the forgeries name ('' = not testable: see ``reason``)
    url: str = ""
    reason: str = ""
    listener: KeyListener | None = field(default=None, repr=False)
    prefix: str = ""

    def serve(self, documents: dict[str, tuple[str, bytes]]) -> None:
        """Serve ``documents`` ({path: (content type, body)}) under this plan's prefix."""
        if self.listener is not None:
            self.listener.server.documents.update({self.prefix + path: doc for path, doc in documents.items()})

    def fetches(self) -> list[str]:
        """Paths of this plan's documents that were fetched so far."""
        if self.listener is None:
            return []
        return [p for p in list(self.listener.server.fetches) if p.startswith(self.prefix + "/")]


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


def _listener(ctx: RunContext, address: tuple[str, int]) -> KeyListener:
    """The run's one listener on ``address`` (started on first use, kept in the run's memory)."""
    mem = ctx.memory
    with mem.lock_guard:
        held = mem.key_server
        if isinstance(held, KeyListener) and held.address == address:
            return held
        if held is not None:
            held.close()
        mem.key_server = listener = KeyListener(address)
        return listener


def config_problems(cfg: ExperimentConfig) -> list[str]:
    """What is wrong with FORGERY_KEY_URL / FORGERY_KEY_LISTEN (checked before the run starts); [] when fine."""
    if not cfg.forgery_key_url:
        return ["FORGERY_KEY_LISTEN is set without FORGERY_KEY_URL: give the URL the services reach it at"] \
            if cfg.forgery_key_listen else []
    try:
        _listen_address(urls.parse(cfg.forgery_key_url, "FORGERY_KEY_URL"), cfg.forgery_key_listen)
    except ConfigError as exc:
        return [str(exc)]
    return []


def key_url_for(ctx: RunContext) -> KeyUrl:
    """The key URL of a new forgery plan (module docstring). ConfigError when FORGERY_KEY_URL / _LISTEN are unusable;
    OSError when the address cannot be listened on."""
    cfg = ctx.cfg
    prefix = "/" + secrets.token_hex(8)
    if cfg.forgery_key_url:
        try:
            parsed = urls.parse(cfg.forgery_key_url, "FORGERY_KEY_URL")
        except urls.UrlError as exc:
            raise ConfigError(str(exc)) from None
        listener = _listener(ctx, _listen_address(parsed, cfg.forgery_key_listen))
        return KeyUrl(url=cfg.forgery_key_url.rstrip("/") + prefix, listener=listener, prefix=prefix)
    if not cfg.is_lab_target:
        return KeyUrl(reason=NOT_TESTABLE)
    listener = _listener(ctx, ("127.0.0.1", 0))
    return KeyUrl(url=listener.url + prefix, listener=listener, prefix=prefix)
