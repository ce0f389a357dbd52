"""The expiry drill's judging on recorded observations (no lab): fails closed means refused after expiry, by every
service; and the drill refuses to start when the outage cannot outlast the cache."""
from __future__ import annotations

from pathlib import Path

from chaosext.auth.drill import fails_closed_after_expiry
from chaosext.core.runfile import Run, save_run


def _conf(tmp: Path, **extra: str) -> dict:
    return {"chaosext_lab_dir": str(tmp / "nolab"), "chaosext_run_dir": str(tmp / "run"), "jwks_ttl": "3",
            "jwks_max_stale": "6", "service_urls": "policy=http://127.0.0.1:9,vuln=http://127.0.0.1:9",
            "outage_seconds": "20", **extra}


def _obs(t: float, policy: tuple[str, int], vuln: tuple[str, int]) -> dict:
    return {"t": t, "elapsed": t - 100, "services": {
        "policy": {"state": policy[0], "valid": {"t01": policy[1]}},
        "vuln": {"state": vuln[0], "valid": {"t01": vuln[1]}}}}


def test_the_drill_refuses_an_outage_that_cannot_outlast_the_cache(tmp_path: Path) -> None:
    r = fails_closed_after_expiry(configuration=_conf(tmp_path, outage_seconds="10"))
    assert r["ok"] is False and "OUTAGE_SECONDS > 14" in r["why"]
    assert fails_closed_after_expiry(configuration=_conf(tmp_path))["ok"] is True


def test_fails_closed_only_counts_after_each_services_own_expiry(tmp_path: Path) -> None:
    save_run(str(tmp_path / "run"), Run.from_json({"outage": {"start": 100.0, "end": 130.0}, "observations": [
        _obs(102, ("stale", 200), ("stale", 200)),        # within the lifetime: 200 is right
        _obs(110, ("expired", 401), ("stale", 200)),
        _obs(120, ("expired", 401), ("expired", 403))]}))
    r = fails_closed_after_expiry(configuration=_conf(tmp_path))
    assert r["ok"] is True and r["checks"] == 3 and r["expired_services"] == ["policy", "vuln"]


def test_accepting_or_crashing_after_expiry_or_never_expiring_fails(tmp_path: Path) -> None:
    save_run(str(tmp_path / "run"), Run.from_json({"outage": {"start": 100.0, "end": 130.0}, "observations": [
        _obs(110, ("expired", 200), ("stale", 200)), _obs(120, ("expired", 503), ("stale", 200))]}))
    r = fails_closed_after_expiry(configuration=_conf(tmp_path))
    assert r["ok"] is False and r["never_expired"] == ["vuln"]
    assert [f["status"] for f in r["failures"]] == [200, 503] and "200 = fail-open" in r["why"]
