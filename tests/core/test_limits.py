"""The fault's lifetime (chaosext.core.limits): MAX_OUTAGE_SECONDS caps OUTAGE_SECONDS itself, refused with the
largest outage that fits; the fault's deadline is the outage plus a margin that is small next to it (max 15 s, 5 %),
never longer than the deadline of the cap. The watchdog and the drivers enforce the deadline
(tests/egress/test_deadman.py); this is its arithmetic."""
from __future__ import annotations

import pytest

from chaosext.core import limits
from chaosext.core.errors import ConfigError


def test_the_cap_is_on_the_outage_and_the_deadline_adds_a_small_margin() -> None:
    assert limits.deadline_seconds(20) == 35 and limits.deadline_seconds(120) == 135
    assert limits.deadline_seconds(300) == 315 and limits.deadline_seconds(1000) == 1050
    assert limits.check_outage(3600) == 3780 == limits.max_deadline_seconds()  # the cap itself fits
    with pytest.raises(ConfigError, match=r"^OUTAGE_SECONDS=3601 is above MAX_OUTAGE_SECONDS=3600; use "
                                         r"OUTAGE_SECONDS=3600 or less, or raise MAX_OUTAGE_SECONDS to 3601 \(the "
                                         r"fault's own deadline adds 181 s to it\)$"):
        limits.check_outage(3601)
    with pytest.raises(ConfigError, match="OUTAGE_SECONDS=3500"):
        limits.check_outage(3500, 3400)
    assert limits.check_outage(3500, 3600) == 3675
    for bad in (0, -5, "abc"):
        with pytest.raises(ConfigError, match="OUTAGE_SECONDS"):
            limits.check_outage(bad)  # type: ignore[arg-type]  # settings arrive as text


@pytest.mark.parametrize("outage, deadline", [
    (1, 16), (299, 314), (300, 315), (301, 317), (320, 336), (3000, 3150),
])
def test_the_margin_is_15_s_up_to_300_s_then_5_percent_rounded_up(outage: int, deadline: int) -> None:
    assert limits.deadline_seconds(outage) == deadline
    assert limits.deadline_seconds(str(outage)) == deadline  # type: ignore[arg-type]  # settings arrive as text


def test_the_suggested_outage_is_the_largest_that_fits_the_cap() -> None:
    for cap in (100, 316, 1000, 3600, 7200):
        with pytest.raises(ConfigError, match=r"use OUTAGE_SECONDS=(\d+) or less") as caught:
            limits.check_outage(cap + 1, cap)
        fits = int(caught.value.args[0].split("use OUTAGE_SECONDS=")[1].split()[0])
        assert fits == cap and limits.check_outage(fits, cap) == limits.max_deadline_seconds(cap)
        assert all(limits.deadline_seconds(o) <= limits.max_deadline_seconds(cap) for o in (1, cap // 2, cap))


def test_a_cap_below_the_outage_names_the_cap_the_outage_needs() -> None:
    with pytest.raises(ConfigError, match=r"raise MAX_OUTAGE_SECONDS to 10 \(the fault's own deadline adds 15 s"):
        limits.check_outage(10, 5)


def test_settings_given_as_text_are_whole_seconds_or_refused() -> None:
    assert limits.check_outage("120", "200") == 135  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"MAX_OUTAGE_SECONDS='lots'.*whole seconds"):
        limits.check_outage(120, "lots")  # type: ignore[arg-type]


def test_k6_rate_has_a_documented_upper_bound_refused_before_anything_starts() -> None:
    """K6_RATE=999999999999 used to be stopped only by the lock: the configuration check refuses it, saying the
    limit (docs/experiment.md), and so does start_k6 itself, before k6 runs."""
    from chaosext.core.config import load_config, validate
    from chaosext.load.actions import start_k6

    assert limits.k6_rate_problem(limits.MAX_K6_RATE) == "" and limits.k6_rate_problem(200) == ""
    problems = validate(load_config({"chaosext_lab_dir": "/nonexistent-lab", "k6_rate": "999999999999"}))
    assert any(f"K6_RATE=999999999999 is above the limit of {limits.MAX_K6_RATE}" in p for p in problems), problems
    assert any("must be a positive number" in p for p in validate(load_config({
        "chaosext_lab_dir": "/nonexistent-lab", "k6_rate": "0"})))
    with pytest.raises(ConfigError, match=f"above the limit of {limits.MAX_K6_RATE}"):
        start_k6(rate=limits.MAX_K6_RATE + 1, configuration={"chaosext_lab_dir": "/nonexistent-lab"})
