"""The report as evidence: `save_evidence` keeps the judged series of a real lab's Prometheus in the run directory, and
`chaosext report` draws them later without Prometheus (windows as bands, alert states, both p95s labelled); a report
without any metric data says so in its banner instead of a bare PASS."""

import base64
import json
import os
import re
import stat
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from chaosext.core.backends import backend
from chaosext.core.config import ExperimentConfig
from chaosext.metrics.prom import Prom
from chaosext.outage import evidence
from chaosext.report.cli import build_report
from chaosext.report.plots import make_plots
from tests.traffic import Pump, service_urls, token


def _journal(tmp_path: Path, start: float, end: float, outputs: list[dict[str, Any]]) -> Path:
    """A small journal in Chaos Toolkit's shape: one fault action, one probe per output."""
    iso = lambda ts: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))  # noqa: E731
    doc = {
        "experiment": {"title": "evidence test"}, "status": "completed", "deviated": False,
        "start": iso(start), "end": iso(end), "duration": end - start,
        "steady_states": {"before": {"probes": []}, "after": {"probes": [
            {"activity": {"name": f"probe-{i}", "type": "probe", "tolerance": {"type": "jsonpath", "path": "$.ok",
                                                                                "expect": True}},
             "output": out, "status": "succeeded", "tolerance_met": True, "start": iso(end), "end": iso(end)}
            for i, out in enumerate(outputs)]}},
        "run": [{"activity": {"name": "block-jwks-egress", "type": "action",
                              "provider": {"type": "python", "func": "block_jwks_egress"}},
                 "output": {"duration_seconds": 4}, "status": "succeeded", "start": iso(start + 4),
                 "end": iso(start + 4)}],
        "rollbacks": [],
    }
    path = tmp_path / "journal.json"
    path.write_text(json.dumps(doc))
    return path


def _prom(url: str) -> Prom:
    """Prometheus at ``url``, no credentials, the lab's metric names."""
    return Prom(backend("prometheus", url, ExperimentConfig()))


def _pngs(html: str) -> dict[str, bytes]:
    found = re.findall(r'<figure id="plot-([\w-]+)"><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"',
                       html)
    return {key: base64.b64decode(data) for key, data in found}


def _size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])


@pytest.mark.e2e
@pytest.mark.lab
def test_saved_evidence_draws_the_run_after_prometheus_is_gone(lab: dict[str, Any], tmp_path: Path) -> None:
    base = service_urls(lab)["policy"]
    def t07_requests() -> float:
        body = requests.get(lab["prometheus_url"] + "/api/v1/query", timeout=5,
                            params={"query": 'sum(tenant_requests_total{tenant="t07"})'}).json()
        return float(body["data"]["result"][0]["value"][1]) if body["data"]["result"] else 0.0

    before = t07_requests()  # the lab is shared: earlier tests may have sent t07 traffic already
    t0 = time.time()
    with Pump(base, "/api/v1/policies", "t07", token(lab, "t07"), rps=10):
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:  # until Prometheus has several scrapes (every 2 s) of THIS traffic
            if t07_requests() > before + 60 and time.time() - t0 >= 20:  # rate() over 10 s needs two samples
                break
            time.sleep(1)
    t3 = time.time()
    thirds = (t3 - t0) / 3
    windows = {"baseline": (t0, t0 + thirds), "outage": (t0 + thirds, t0 + 2 * thirds),
               "recovery": (t0 + 2 * thirds, t3)}
    saved = evidence.save_evidence(_prom(lab["prometheus_url"]), windows, str(tmp_path / "run"))

    assert saved["ok"] is True and saved["error"] == "", saved
    path = Path(saved["evidence_file"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert saved["series"]["error_rate"] >= 1 and saved["series"]["p95_latency"] >= 1, saved["series"]
    assert saved["series"]["jwks_cache_state"] >= 1 and saved["points"] > 0
    assert evidence.load_windows(path) == {k: (float(a), float(b)) for k, (a, b) in windows.items()}

    # the journal names the file (as the experiment does at judge time); Prometheus is unreachable now
    journal = _journal(tmp_path, t0, t3, [{"ok": True, **saved}, {"ok": True, "p95_read_ms": 1.2, "p95_write_ms": 1.4}])
    html, _verdict, warnings = build_report(str(journal), prometheus=_prom("http://127.0.0.1:9"))
    pngs = _pngs(html)
    assert {"error_rate", "p95_latency", "jwks_cache_state"} <= set(pngs), sorted(pngs)
    assert "NO DATA" not in html and warnings == []
    assert "baseline" in html and "recovery" in html  # the windows are named in the data sources
    assert "server side, from the services&#x27; histogram" in html and "k6&#x27;s own p95" in html
    sizes = {_size(png) for png in pngs.values()}
    assert len(sizes) == 1, f"plots of different sizes cannot share a time axis: {sizes}"


def test_alert_states_plot_shows_pending_and_firing() -> None:
    now = 1_700_000_000.0
    ranges = {"alerts": [
        {"metric": {"alertname": "jwks_cache_miss_spike", "alertstate": "pending"},
         "values": [[now + 2 * i, "1"] for i in range(5, 10)]},
        {"metric": {"alertname": "jwks_cache_miss_spike", "alertstate": "firing"},
         "values": [[now + 2 * i, "1"] for i in range(10, 20)]},
    ]}
    plots = {p["key"]: p for p in make_plots(ranges, [], (now + 8, now + 30), (now, now + 50))}
    assert plots["alerts"]["png"], plots["alerts"]["note"]
    quiet = {p["key"]: p for p in make_plots({"alerts": []}, [], None, (now, now + 50))}
    assert quiet["alerts"]["png"] == "" and "no alert" in quiet["alerts"]["note"]


def test_a_report_without_metric_data_says_so_in_its_banner(tmp_path: Path, unused_port: int) -> None:
    now = time.time()
    journal = _journal(tmp_path, now - 60, now, [{"ok": True}])
    html, _verdict, warnings = build_report(str(journal), prometheus=_prom(f"http://127.0.0.1:{unused_port}"))
    banner = re.search(r'<div class="verdict (\w+)"><b>([^<]+)</b>', html)
    assert banner and "NO DATA" in banner.group(2), banner and banner.groups()
    assert banner.group(1) != "pass"
    assert "NO METRIC DATA" in html and warnings


def test_save_evidence_refuses_unusable_windows_and_survives_a_dead_prometheus(tmp_path: Path,
                                                                              unused_port: int) -> None:
    with pytest.raises(ValueError, match="at least one window"):
        evidence.save_evidence(_prom("http://127.0.0.1:9"), {}, str(tmp_path))
    with pytest.raises(ValueError, match="before start"):
        evidence.save_evidence(_prom("http://127.0.0.1:9"), {"outage": (10.0, 5.0)}, str(tmp_path))
    dead = _prom(f"http://127.0.0.1:{unused_port}")
    saved = evidence.save_evidence(dead, {"outage": (1.0, 2.0)}, str(tmp_path / "run"))
    assert saved["ok"] is False and "gave no ranges" in saved["error"]
    assert json.loads(Path(saved["evidence_file"]).read_text())["windows"] == {"outage": [1.0, 2.0]}
