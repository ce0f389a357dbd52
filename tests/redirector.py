"""An HTTP server on loopback that answers a 307 to another origin (or a canned JSON answer) and records every
request it gets, with a helper that says whether a credential arrived: the redirect tests of issue 27 item 6."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["SECRET", "Server"]

SECRET = "s3cret-must-stay-home"


class Server:
    """A loopback HTTP server: answers 307 to ``redirect_to`` (when set) or ``answer``; records every request."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.redirect_to = ""
        self.answer: Any = {"access_token": "tok", "expires_in": 3600}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _do(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode(errors="replace")
                server.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                    "body": body})
                if server.redirect_to:
                    self.send_response(307)
                    self.send_header("Location", server.redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps(server.answer(self.path) if callable(server.answer) else server.answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _do

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def leaked(self) -> bool:
        """Did any credential arrive here?"""
        return any(SECRET in r["body"] or any(SECRET in str(v) for v in r["headers"].values()) for r in self.seen)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
