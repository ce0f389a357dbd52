"""A service with the ``jku`` hole, for the key-URL tests: it verifies a token with the key found at the URL the
token's own ``jku`` header names (PyJWT's PyJWKClient, a real JWT library), which a correct service never does.
Every other token gets 401. Run ``python tests/auth/jku_service.py <listen address>``: it prints its port first, then
``fetched <url>`` for every key URL it fetched successfully."""
from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt


class Handler(BaseHTTPRequestHandler):
    def _do(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        status = 401
        try:
            url = jwt.get_unverified_header(token).get("jku")
            if url:
                key = jwt.PyJWKClient(url, timeout=2).get_signing_key_from_jwt(token).key
                print(f"fetched {url}", flush=True)
                jwt.decode(token, key, algorithms=["RS256"], options={"verify_aud": False, "verify_iss": False})
                status = 200
        except Exception:
            status = 401
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _do

    def log_message(self, *args: Any) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer((sys.argv[1], 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
