"""The JWKS_FAILURE misbehaviour knobs of `chaosext lab up` (LabConfig fields): each names the services it breaks (a
comma list, or all), reaches exactly those services' command lines, and a name that is not a running service is
refused by its flag before anything starts. The lab tells the extension where its scenario hooks and each
service's readiness are (state.json, target.json)."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from chaosext.lab import target as lab_target
from chaosext.lab.cli import lab
from chaosext.lab.plan import SERVICE_KNOBS, LabConfig, LabError, plan


def test_each_knob_reaches_only_the_services_it_names(tmp_path: Path) -> None:
    cfg = LabConfig(state_dir=str(tmp_path), jwks_swap="policy", jwks_fetch_inline="vuln,notify",
                    jwks_unknown_kid_storm="all", jwks_pinned=(), ready_without_keys="notify")
    cfg.validate()
    argv = {c.name: c.argv for c in plan(cfg)}
    assert "--jwks-swap" in argv["policy"] and "--jwks-swap" not in argv["vuln"]
    assert all("--jwks-unknown-kid-storm" in argv[s] for s in ("policy", "vuln", "notify"))
    assert ["--jwks-fetch-inline" in argv[s] for s in ("policy", "vuln", "notify")] == [False, True, True]
    assert not any("--jwks-pinned" in a for a in argv.values())
    assert ["--ready-without-keys" in argv[s] for s in ("policy", "vuln", "notify")] == [False, False, True]
    assert cfg.as_dict()["jwks_unknown_kid_storm"] == ["policy", "vuln", "notify"]


@pytest.mark.parametrize("knob", SERVICE_KNOBS)
def test_a_knob_naming_a_service_that_does_not_run_is_refused_by_its_flag(tmp_path: Path, knob: str) -> None:
    cfg = LabConfig(state_dir=str(tmp_path), services="policy", **{knob: "vuln"})
    with pytest.raises(LabError, match=f"--{knob.replace('_', '-')} vuln"):
        cfg.validate()
    result = CliRunner().invoke(lab, ["up", "--state-dir", str(tmp_path), f"--{knob.replace('_', '-')}", "billing"])
    assert result.exit_code == 2 and "billing unknown" in result.output


def test_the_description_names_each_services_ready_url(tmp_path: Path) -> None:
    cfg = LabConfig(state_dir=str(tmp_path))
    comps = {c.name: {"url": c.url, "health": c.health} for c in plan(cfg)}
    doc = lab_target.describe(cfg, comps)
    for name in cfg.services:
        assert doc["services"][name]["ready"] == comps[name]["health"].replace("/healthz", "/ready")
