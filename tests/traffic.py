"""Small traffic helpers for the observability lab tests: tokens from the lab's Authority, requests to its services."""

import threading
import time
from typing import Any

import requests

__all__ = ["token", "service_urls", "call", "Pump"]


def service_urls(state: dict[str, Any]) -> dict[str, str]:
    """{service: base URL} from a lab state dict."""
    return {name: c["url"] for name, c in state["components"].items() if name in ("policy", "vuln", "notify")}


def token(state: dict[str, Any], tenant: str, ttl: int = 900, audience: str = "") -> str:
    """An access token for tenant from the lab's Authority (client credentials with the lab client); ``audience``
    other than the services' makes a genuine token they must refuse."""
    form = {"grant_type": "client_credentials", "tenant": tenant, "ttl": str(ttl)}
    if audience:
        form["audience"] = audience
    resp = requests.post(state["token_url"], timeout=5, auth=(state["client_id"], state["client_secret"]), data=form)
    resp.raise_for_status()
    return resp.json()["access_token"]


def call(session: requests.Session, base: str, path: str, tenant: str, jwt: str, method: str = "GET",
         body: dict | None = None) -> int:
    """One request to a lab service; the HTTP status (0 when the connection failed)."""
    try:
        resp = session.request(method, base + path, json=body, timeout=3,
                               headers={"Authorization": f"Bearer {jwt}", "X-StellaOps-Tenant": tenant})
        return resp.status_code
    except requests.RequestException:
        return 0


class Pump:
    """Background thread sending GETs (and a few writes) for one tenant at about `rps`, counting statuses."""

    def __init__(self, base: str, path: str, tenant: str, jwt: str, rps: float, write_every: int = 0) -> None:
        self.base, self.path, self.tenant, self.jwt, self.rps = base, path, tenant, jwt, rps
        self.write_every = write_every
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Pump":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        period, n = 1.0 / self.rps, 0
        with requests.Session() as session:
            next_at = time.monotonic()
            while not self._stop.is_set():
                n += 1
                if self.write_every and n % self.write_every == 0:
                    status = call(session, self.base, self.path, self.tenant, self.jwt, "POST", {"name": f"x{n}"})
                else:
                    status = call(session, self.base, self.path, self.tenant, self.jwt)
                self.statuses[status] = self.statuses.get(status, 0) + 1
                next_at += period
                self._stop.wait(max(0.0, next_at - time.monotonic()))
