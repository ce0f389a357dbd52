"""Chaos Toolkit probes: what k6 saw (client side), from its summary file and live from its REST API.

``k6_summary`` reads the JSON the tenant load script's ``handleSummary`` writes and returns a flat plain dict that
tolerances can judge (``thresholds_ok``, ``http_req_failed_rate``, ``p95_read_ms`` ...), with k6's exit code
explained: 99 thresholds failed, 105 stopped by signal, 103 stopped via REST API, 104 bad config, 107 script error.
A run stopped early (105/103) still has a complete summary: pass/fail comes from the summary, never the exit code.
"""
import json
import re
import time
from pathlib import Path
from typing import Any

import requests
from chaoslib.types import Configuration, Secrets

from chaosext.core.names import check_run_id
from chaosext.load import k6 as k6mod
from chaosext.load import operator
from chaosext.run.context import run_context

__all__ = ["k6_summary", "k6_live_metrics", "k6_testrun_status"]


def _find_run(run_id: str, summary_file: str, run_dir: str, configuration: Configuration) -> dict[str, Any]:
    """The run record matching ``run_id`` / ``summary_file``, else the latest run; {} when none is recorded."""
    base = k6mod.runs_dir(run_dir, run_context(configuration) if not run_dir else None)
    if run_id:
        check_run_id(run_id, "k6 run_id")  # never a path such as ../x
        return k6mod.read_run(base / run_id) if (base / run_id / "run.json").is_file() else {}
    runs = k6mod.list_runs(base)
    if summary_file:
        wanted = str(Path(summary_file).resolve())
        runs = [r for r in runs if r.get("summary_file") == wanted]
    return runs[-1] if runs else {}


def _last_error(log_file: str) -> str:
    """The message of the last ``level=error`` line of k6's log ('' when none)."""
    try:
        lines = Path(log_file).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        m = re.search(r'level=error msg="(.*?)(?<!\\)"', line)
        if m:
            return m.group(1).replace("\\n", " ").replace("\\t", " ")[:400]
    return ""


def k6_summary(summary_file: str = "", run_id: str = "", wait_seconds: float = 10.0, run_dir: str = "",
               configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """What k6 measured: per-threshold pass flags, error rate, p95 by kind, achieved rate, dropped iterations.

    Without ``summary_file`` the summary of ``run_id`` (or of the latest start_k6 run) is read. Waits up to
    ``wait_seconds`` for the file to appear (k6 writes it when it ends). ``found`` is False (and ``error`` says why)
    when there is no summary yet; ``stopped_early`` is True for exit 105/103.
    """
    run = _find_run(run_id, summary_file, run_dir, configuration)
    path = Path(summary_file or run.get("summary_file", ""))
    out: dict[str, Any] = {
        "found": False, "summary_file": str(path) if str(path) != "." else "", "run_id": run.get("run_id", ""),
        "running": bool(run.get("alive")), "exit_code": run.get("exit_code"),
        "exit_meaning": k6mod.exit_meaning(run.get("exit_code")) if run else "not started by chaosext",
        "stopped_early": run.get("exit_code") in (103, 105), "error": ""}
    if not out["summary_file"]:
        out["error"] = "no summary_file given and no k6 run recorded; start k6 with start_k6 first"
        return out
    deadline = time.monotonic() + max(0.0, wait_seconds)
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    if run:  # k6 may have ended while we waited
        run = _find_run(run["run_id"], "", run_dir, configuration) or run
        out.update(running=bool(run.get("alive")), exit_code=run.get("exit_code"),
                   exit_meaning=k6mod.exit_meaning(run.get("exit_code")),
                   stopped_early=run.get("exit_code") in (103, 105))
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        out["error"] = ("k6 is still running: stop it (stop_k6) or wait for its end" if out["running"]
                        else f"{path} does not exist: k6 did not finish (see {run.get('log_file', 'its log')})")
        return out
    except (OSError, ValueError) as exc:
        out["error"] = f"{path} is not a k6 summary: {exc}"
        return out
    p95 = data.get("p95_ms") or {}
    if out["exit_code"] in (104, 107):
        out["error"] = f"k6 {out['exit_meaning']}: {_last_error(run.get('log_file', ''))}"
    out.update({
        "found": True,
        "thresholds": data.get("thresholds", {}),
        "thresholds_ok": bool(data.get("thresholds_ok")),
        "http_req_failed_rate": data.get("http_req_failed_rate"),
        "p95_ms": p95,
        "p95_read_ms": p95.get("read"),
        "p95_write_ms": p95.get("write"),
        "achieved_rate": data.get("achieved_rate"),
        "target_rate": (data.get("config") or {}).get("rate"),
        "requests": data.get("requests", {}),
        "dropped_iterations": data.get("dropped_iterations", 0),
        "test_run_seconds": data.get("test_run_seconds"),
    })
    return out


def k6_live_metrics(run_id: str = "", address: str = "", run_dir: str = "", configuration: Configuration = None,
                    secrets: Secrets = None) -> dict[str, Any]:
    """k6's live error rate and request count from its REST API (``GET /v1/metrics/...``), for progress lines.

    Never raises: when k6 is not reachable ``reachable`` is False and ``error`` says why (progress must not fail a
    run). ``address`` (host:port) defaults to the REST address of ``run_id`` / the latest start_k6 run.
    """
    if not address:
        run = _find_run(run_id, "", run_dir, configuration)
        address = run.get("address", "")
    out: dict[str, Any] = {"reachable": False, "address": address, "http_req_failed_rate": None,
                           "http_reqs": None, "vus": None, "error": ""}
    if not address:
        out["error"] = "no k6 run recorded; start k6 with start_k6 first"
        return out
    base = f"http://{address}/v1"
    try:
        failed = requests.get(f"{base}/metrics/http_req_failed", timeout=2)
        reqs = requests.get(f"{base}/metrics/http_reqs", timeout=2)
        status = requests.get(f"{base}/status", timeout=2)
    except requests.RequestException as exc:
        out["error"] = f"k6 REST API at {address} unreachable ({type(exc).__name__}); k6 has probably ended"
        return out
    out["reachable"] = True
    if failed.status_code == 200:
        out["http_req_failed_rate"] = failed.json()["data"]["attributes"]["sample"].get("rate")
    if reqs.status_code == 200:
        sample = reqs.json()["data"]["attributes"]["sample"]
        out["http_reqs"] = sample.get("count")
        out["http_reqs_rate"] = sample.get("rate")
    if status.status_code == 200:
        attrs = status.json()["data"]["attributes"]
        out["vus"] = attrs.get("vus")
        out["running"] = bool(attrs.get("running"))
    return out


def k6_testrun_status(name: str = "chaosext-tenant-load", namespace: str = "default",
                      configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Stage of a k6-operator TestRun (``exists``, ``stage``, ``finished``)."""
    cfg = run_context(configuration, secrets).cfg
    return operator.testrun_status(name=name, namespace=namespace, secrets=secrets,
                                   options={"kube_api_url": cfg.kube_api_url, "kube_context": cfg.kube_context})

