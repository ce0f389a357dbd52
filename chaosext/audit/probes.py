"""Audit probe: every service that served stale keys during the outage recorded ``auth.degraded``.

The events are read from AUDIT_SOURCE: the lab's JSONL file, Loki or ClickHouse (``chaosext.audit.sources``).
"Affected" services are those whose JWKS cache was seen stale during the outage (the watch step's ``/healthz``
observations, or ``jwks_cache_state{state="stale"}`` in Prometheus). Vacuously ok before any fault.
"""
import math
import time

import requests
from chaoslib.types import Configuration, Secrets

from chaosext.audit.sources import read_events
from chaosext.config import load_config
from chaosext.metrics import contract, prom
from chaosext.safety.runstate import judged, load_run, outage_window

__all__ = ["audit_degraded_recorded"]

#: seconds to wait for events still on their way through the pipeline (collector -> Loki/ClickHouse)
PIPELINE_WAIT_SECONDS = {"file": 5.0, "loki": 30.0, "clickhouse": 30.0}


def _stale_services(cfg, run: dict, start: float, end: float) -> set:
    found = {svc for obs in run.get("observations") or []
             for svc, s in (obs.get("services") or {}).items() if s.get("state") == "stale"}
    rng = max(1, math.ceil(end - start))
    try:
        # the cache-stale series of the metric contract (METRIC_CACHE_STALE)
        found |= set(prom.services_where(cfg.prometheus_url, contract.current().cache_stale, end, rng))
    except (requests.RequestException, RuntimeError):
        pass
    return {s for s in found if s in cfg.services}


def audit_degraded_recorded(configuration: Configuration = None, secrets: Secrets = None) -> dict:
    """``auth.degraded`` is in the audit store for each service that served stale keys during the outage.

    ``ok`` false lists the services with no event (``missing``). When no service went stale (outage shorter than
    the TTL), there is nothing to record and ``ok`` is true with ``affected`` empty.
    """
    cfg = load_config(configuration)
    run = load_run(cfg.run_dir)
    window = outage_window(run)
    if window is None:
        return {"phase": "before-fault", "ok": True, "note": "auth.degraded is judged after the fault"}
    if (done := judged(run, "audit_degraded_recorded")) is not None:
        return done
    start, end = window
    affected = _stale_services(cfg, run, start, end)
    deadline = time.time() + PIPELINE_WAIT_SECONDS.get(cfg.audit_kind, 10.0)
    while True:
        events = read_events(cfg.audit_source, "auth.degraded", start - 5, time.time() + 5,
                             tuple(sorted(affected)), cfg.audit_sql)
        recorded = {e.get("service") for e in events}
        missing = sorted(affected - recorded)
        if not missing or time.time() >= deadline:
            break
        time.sleep(2.0)
    return {"phase": "outage", "ok": not missing, "affected": sorted(affected), "recorded": sorted(recorded),
            "missing": missing, "source": cfg.audit_kind, "events": len(events),
            "note": "" if affected else "no service served stale keys during the outage (shorter than the TTL?)"}
