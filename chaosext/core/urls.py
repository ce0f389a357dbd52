"""One URL parser for deciding and sending, and HTTP sessions that never carry credentials to another origin.

requests sends with urllib3's parser; Python's ``urllib.parse`` reads some URLs differently:
``http://10.99.0.1:9901\\@127.0.0.1:9901`` is host 10.99.0.1 for urllib3 but 127.0.0.1 for ``urlparse``, so a check
made with one and a request sent with the other disagree about where the request goes. :func:`parse` reads a URL with
urllib3's parser (what requests sends with) and refuses it when it has a backslash, white space or a control
character, user info (``user:pass@``: credentials never ride in a URL, and ``@`` is where the parsers disagree), a
scheme other than http/https, no host, or when ``urllib.parse`` reads another scheme, host or port. Every place that
decides something about a URL (is it the lab, is it approved, the backends, the token endpoint, the Envoy admin API,
the Kubernetes API URL) goes through it, so the host decided on is the host the request goes to.

:class:`SameOriginSession` is a requests session that follows a redirect only within the origin (scheme, host, port)
it started at, and raises :class:`CrossOriginRedirect` otherwise -- before anything is sent to the new origin. Every
request that carries a credential (client id and secret, backend tokens and passwords, custom auth headers, a
tenant's token) is sent with it. :func:`check_transport` refuses plain http for such a request outside the lab unless
``CHAOSEXT_ALLOW_HTTP`` says so.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
from urllib3.connection import HTTPConnection
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from chaosext.core.errors import ConfigError

__all__ = ["UrlError", "CrossOriginRedirect", "Url", "parse", "problem", "origin", "same_origin", "is_loopback",
           "SameOriginSession", "session", "check_transport", "ALLOW_HTTP_SETTING"]

#: the setting that allows credentials over plain http outside the lab
ALLOW_HTTP_SETTING = "CHAOSEXT_ALLOW_HTTP"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UrlError(ConfigError):
    """A URL chaosext refuses to decide on or send to; the message says why and what to give instead."""


class CrossOriginRedirect(UrlError, requests.exceptions.TooManyRedirects):
    """A server answered with a redirect to another origin; nothing was sent there."""


@dataclass(frozen=True)
class Url:
    """A URL as requests will send it."""

    url: str
    scheme: str
    #: lower case, IPv6 without brackets
    host: str
    #: explicit, else the scheme's default
    port: int
    path: str

    @property
    def origin(self) -> str:
        """``scheme://host:port`` (default port filled in, IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _fail(what: str, url: str, why: str) -> UrlError:
    return UrlError(f"{what}={url!r} {why}; give a plain http(s)://host[:port]/path URL")


def parse(url: Any, what: str = "URL") -> Url:
    """``url`` read the way requests sends it, or :class:`UrlError` (see the module docstring)."""
    if not isinstance(url, str) or not url:
        raise _fail(what, str(url), "is empty or not text")
    if url.split(":", 1)[0].lower() not in _DEFAULT_PORTS or not url[len(url.split(":", 1)[0]):].startswith("://"):
        raise _fail(what, url, "is not an http(s) URL")
    if "\\" in url:
        raise _fail(what, url, "has a backslash (parsers disagree on where such a URL goes)")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise _fail(what, url, "has white space or a control character")
    try:
        told = urlsplit(url)
        told_port = told.port
    except ValueError:
        raise _fail(what, url, "has an invalid port") from None
    try:
        sent = parse_url(url)
    except LocationParseError as exc:
        raise _fail(what, url, f"cannot be parsed ({exc})") from None
    scheme = (sent.scheme or "").lower()
    if scheme not in _DEFAULT_PORTS or told.scheme.lower() != scheme:
        raise _fail(what, url, "is not an http(s) URL")
    if sent.auth is not None or told.username is not None or "@" in (told.netloc or ""):
        raise _fail(what, url, "has user info (user:password@); credentials never go in a URL")
    host = (sent.host or "").lower().strip("[]")
    if not host or host != (told.hostname or "").lower():
        raise _fail(what, url, f"is read as host {host or '(none)'!r} by one parser and {told.hostname!r} by another")
    port = sent.port or _DEFAULT_PORTS[scheme]
    if (told_port or _DEFAULT_PORTS[scheme]) != port or not 0 < port < 65536:
        raise _fail(what, url, "has an invalid or ambiguous port")
    return Url(url=url, scheme=scheme, host=host, port=port, path=sent.path or "/")


def problem(url: Any, what: str = "URL") -> str:
    """'' when :func:`parse` accepts ``url``, else why not."""
    try:
        parse(url, what)
    except UrlError as exc:
        return str(exc)
    return ""


def origin(url: str) -> str:
    """The origin (``scheme://host:port``) of ``url`` (UrlError when :func:`parse` refuses it)."""
    return parse(url).origin


def same_origin(a: str, b: str) -> bool:
    """True when both URLs parse and have the same scheme, host and port."""
    try:
        return parse(a).origin == parse(b).origin
    except UrlError:
        return False


def is_loopback(url: str) -> bool:
    """True when the URL's host (as requests sends to it) is ``localhost`` or a loopback address. Loopback is NOT
    the lab: a ``kubectl port-forward`` to production is loopback too (see :mod:`chaosext.core.labid`)."""
    try:
        host = parse(url).host
    except UrlError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SameOriginSession(requests.Session):
    """A session that follows redirects only within the origin it started at (CrossOriginRedirect otherwise,
    before the new origin gets anything: no client secret, header, body or token)."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        new, old = str(prepared_request.url or ""), str(response.request.url or "")
        if not same_origin(new, old):
            raise CrossOriginRedirect(
                f"{old.split('?')[0]} answered {response.status_code} redirecting to another origin "
                f"({new.split('?')[0]}); chaosext does not follow it with credentials: point the setting at the "
                f"final URL if that origin is the right one")
        # requests ships this method without annotations
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]


def session(mark: int | None = None) -> SameOriginSession:
    """A :class:`SameOriginSession` (use it as a context manager). With ``mark``, its connections carry that socket
    mark (SO_MARK, so a run's iptables fault can let exactly these through: ``SOCKET_MARK``); only a process with
    CAP_NET_ADMIN may set one, so the mark is left off when not root (else every connect would fail)."""
    s = SameOriginSession()
    if mark is not None and os.geteuid() == 0:
        s.mount("http://", _MarkedAdapter(mark))
        s.mount("https://", _MarkedAdapter(mark))
    return s


class _MarkedAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose pooled connections set SO_MARK ``mark``."""

    def __init__(self, mark: int) -> None:
        self._mark = mark
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = [*HTTPConnection.default_socket_options,
                                    (socket.SOL_SOCKET, getattr(socket, "SO_MARK", 36), self._mark)]
        super().init_poolmanager(*args, **kwargs)


def check_transport(url: str, what: str, lab: bool, allowed: bool) -> Url:
    """``url`` parsed, for a request that carries credentials: https, unless it is the lab's (``lab``: identity,
    :mod:`chaosext.core.labid`) or plain http is ``allowed`` (CHAOSEXT_ALLOW_HTTP). UrlError otherwise."""
    parsed = parse(url, what)
    if parsed.scheme != "https" and not lab and not allowed:
        raise UrlError(f"{what}={url!r} is plain http and not the running lab's: chaosext sends credentials there "
                       f"only over https; use https, or set {ALLOW_HTTP_SETTING}=true to allow http on purpose "
                       f"(anyone on the path then sees the credentials)")
    return parsed
