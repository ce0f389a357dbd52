"""A local HTTP stub server for contract tests: real client code talks to it, a test function answers.

    def handler(method, path, query, body):          # query: {name: first value}, blank values kept
        return 200, {"items": []}                      # dict/list/... -> JSON; str -> text/plain; bytes -> raw
        # or (status, payload, content_type) to choose the Content-Type

    with JsonStub(handler) as stub:                    # ThreadingHTTPServer on 127.0.0.1, free port
    JsonStub(handler, upgrade=take_over)               # take_over(request, http_handler) -> True: it served a
                                                       # request with `Upgrade: websocket` itself (tests/kubestub.py)
        call_the_client(stub.url)
    stub.requests                                      # every request, in order (see Request / record=)

An exception in the handler (e.g. a failed assert) answers 500 and is raised again when the stub is closed, so
it fails the test instead of vanishing in the server thread. Import it as ``from tests.jsonstub import JsonStub``
(``tests/`` and every folder in it are packages; pytest puts the checkout on sys.path).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit


class Request(NamedTuple):
    method: str
    path: str  # without the query string
    query: dict[str, str]  # first value of each parameter; blank values kept
    body: Any  # the parsed JSON (None when empty) with json_body=True, else the raw bytes
    target: str  # the request target as sent: path?query
    headers: Message


Handler = Callable[[str, str, dict[str, str], Any], tuple[Any, ...]]


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # clients that open many connections at once (a fleet of pods) are not refused


class JsonStub:
    def __init__(self, handler: Handler, *, json_body: bool = False,
                 record: Callable[[Request], Any] | None = None,
                 upgrade: Callable[[Request, BaseHTTPRequestHandler], bool] | None = None) -> None:
        self.requests: list[Any] = []
        self.errors: list[BaseException] = []
        stub = self

        class _Handler(BaseHTTPRequestHandler):
            def _do(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                try:
                    body = (json.loads(raw) if raw else None) if json_body else raw
                    req = Request(self.command, url.path, query, body, self.path, self.headers)
                    stub.requests.append(record(req) if record else req)
                    if upgrade and self.headers.get("Upgrade", "").lower() == "websocket" and upgrade(req, self):
                        self.close_connection = True
                        return
                    status, payload, *ctype = handler(req.method, req.path, req.query, req.body)
                except Exception as e:
                    stub.errors.append(e)
                    status, payload, ctype = 500, f"stub handler failed: {e!r}", []
                if isinstance(payload, bytes):
                    data, default = payload, "application/octet-stream"
                elif isinstance(payload, str):
                    data, default = payload.encode(), "text/plain"
                else:
                    data, default = json.dumps(payload).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype[0] if ctype else default)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _do

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits for the serve loop's next poll: a short interval keeps each test's teardown short
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the server (idempotent); raise the first handler exception, if any."""
        if self._thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self._thread.join(timeout=5)
        if self.errors:
            error, self.errors = self.errors[0], []
            raise error

    def __enter__(self) -> JsonStub:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # the test's own failure is the one to report
            self.errors.clear()
            self.close()
