"""The expiry drill's judging on recorded observations (no lab): fails closed means refused after expiry, by every
service; and the drill refuses to start when the outage cannot outlast the cache."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from chaosext.outage.drill import fails_closed_after_expiry
from chaosext.outage.notebook import Notebook, save_notebook
from chaosext.run.record import edit_run
from tests.runutil import run_dir, settings, start_run

SETTINGS = {"jwks_ttl": "3", "jwks_max_stale": "6", "service_urls": "policy=http://127.0.0.1:9,vuln=http://127.0.0.1:9",
            "outage_seconds": "20"}


def _obs(t: float, policy: tuple[str, int], vuln: tuple[str, int]) -> dict[str, Any]:
    return {"t": t, "elapsed": t - 100, "services": {
        "policy": {"state": policy[0], "valid": {"t01": policy[1]}},
        "vuln": {"state": vuln[0], "valid": {"t01": vuln[1]}}}}


def _recorded(tmp: Path, *observations: dict[str, Any]) -> dict[str, Any]:
    """A run whose outage (100 .. 130) the watch recorded with these observations."""
    conf = start_run(tmp, **SETTINGS)
    with edit_run(run_dir(conf)) as run:
        run.begin_outage(100.0, "ab12cd34", None)
        run.end_outage(130.0, "", None)
    save_notebook(run_dir(conf), Notebook.from_json({"observations": list(observations)}))
    return conf


def test_the_drill_refuses_an_outage_that_cannot_outlast_the_cache(tmp_path: Path) -> None:
    r = fails_closed_after_expiry(configuration=settings(tmp_path, **{**SETTINGS, "outage_seconds": "10"}))
    assert r["ok"] is False and "OUTAGE_SECONDS > 14" in r["why"]
    assert fails_closed_after_expiry(configuration=settings(tmp_path, **SETTINGS))["ok"] is True
    in_run = fails_closed_after_expiry(configuration=start_run(tmp_path, **{**SETTINGS, "outage_seconds": "10"}))
    assert in_run == r  # in a run that recorded no outage yet: the same pre-flight answer, from the run's settings


def test_fails_closed_only_counts_after_each_services_own_expiry(tmp_path: Path) -> None:
    conf = _recorded(tmp_path,
                     _obs(102, ("stale", 200), ("stale", 200)),        # within the lifetime: 200 is right
                     _obs(110, ("expired", 401), ("stale", 200)),
                     _obs(120, ("expired", 401), ("expired", 403)))
    r = fails_closed_after_expiry(configuration=conf)
    assert r["ok"] is True and r["checks"] == 3 and r["expired_services"] == ["policy", "vuln"]


def test_accepting_or_crashing_after_expiry_or_never_expiring_fails(tmp_path: Path) -> None:
    conf = _recorded(tmp_path, _obs(110, ("expired", 200), ("stale", 200)), _obs(120, ("expired", 503), ("stale", 200)))
    r = fails_closed_after_expiry(configuration=conf)
    assert r["ok"] is False and r["never_expired"] == ["vuln"]
    assert [f["status"] for f in r["failures"]] == [200, 503] and "200 = fail-open" in r["why"]
