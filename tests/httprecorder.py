"""A loopback-or-anywhere HTTP server that prints every request it gets (``METHOD target``, one line, flushed) and
answers like an Envoy admin API that holds no runtime override (``GET /runtime`` -> ``{"entries": {}}``, anything
else 200 ``OK``). Run ``python tests/httprecorder.py <listen address>``: it prints its port first. The tests use it as
a server that must never receive anything (a production Envoy admin off loopback)."""
from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Handler(BaseHTTPRequestHandler):
    def _do(self) -> None:
        print(f"{self.command} {self.path}", flush=True)
        runtime = "/runtime" in self.path and "/runtime_modify" not in self.path  # GET /runtime (any prefix)
        body = json.dumps({"entries": {}}).encode() if runtime else b"OK"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _do

    def log_message(self, *args: Any) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer((sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
