"""The approval a target outside the lab needs: CHAOSEXT_APPROVE must name exactly that target (every one of a list),
checked on the resolved configuration before anything is injected."""
from __future__ import annotations

from chaosext.core.config import load_config
from chaosext.safety.controls import approval_problem


def test_non_lab_target_needs_approval_naming_it() -> None:
    base = {"chaosext_lab_dir": "/nonexistent", "jwks_url": "https://idp.example.com/.well-known/jwks.json"}
    assert "CHAOSEXT_APPROVE=idp.example.com" in approval_problem(load_config(base))
    assert approval_problem(load_config({**base, "chaosext_approve": "idp.example.com"})) == ""
    k8s = {**base, "fault_via": "k8s-networkpolicy", "fault_target": "prod/app=policy"}
    assert "CHAOSEXT_APPROVE=prod/app=policy" in approval_problem(load_config({**k8s, "chaosext_approve": "other"}))


def test_a_list_of_targets_is_approved_only_when_every_target_is() -> None:
    """FAULT_TARGET=netns:a,b is two targets: approving one of them is not enough."""
    base = {"chaosext_lab_dir": "/nonexistent", "fault_target": "netns:a,b"}
    assert "CHAOSEXT_APPROVE=netns:a,b" in approval_problem(load_config({**base, "chaosext_approve": "netns:a"}))
    assert approval_problem(load_config({**base, "chaosext_approve": "netns:a,netns:b"})) == ""
    assert approval_problem(load_config({**base, "chaosext_approve": "netns:a,b"})) == ""
