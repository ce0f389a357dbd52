"""A tiny JWKS stand-in for the egress tests: HTTP on [::]:0 (dual stack), prints its port, serves a JWKS."""
import http.server
import socket
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"keys": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class DualStack(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    request_queue_size = 4096  # 1,000 targets probe at once (tests/egress/netfleet.py); the default 5 drops SYNs

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


if __name__ == "__main__":
    host = sys.argv[1] if len(sys.argv) > 1 else "::"
    if ":" not in host:
        DualStack.address_family = socket.AF_INET
    server = DualStack((host, 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
