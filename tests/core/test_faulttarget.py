"""FAULT_VIA + FAULT_TARGET through their one parser (chaosext.core.faulttarget): every form of the module's table is
accepted as the drivers, the lock and the approval use it; anything else is refused with a TargetError naming the
forms the method takes. No system is looked at (globs stay globs)."""
from __future__ import annotations

from pathlib import Path

import pytest

from chaosext.core.config import load_config, validate
from chaosext.core.errors import ConfigError
from chaosext.core.faulttarget import (
    DEFAULT_ENVOY_ADMIN_URL,
    VIA_FORMS,
    FaultTarget,
    TargetError,
    default_via,
    parse_fault_target,
    split_items,
)
from chaosext.core.names import FAULT_VIAS
from chaosext.egress.base import FaultError, split_targets
from tests.targetutil import target_config


@pytest.mark.parametrize("target, items", [
    ("local", ("local",)),
    ("netns:chaosext-lab", ("netns:chaosext-lab",)),
    ("netns:tenant-*", ("netns:tenant-*",)),  # a glob, expanded by the driver when it applies the fault
    ("pid:4242", ("pid:4242",)),
    ("k8s-pod:tenancy/policy-0", ("k8s-pod:tenancy/policy-0",)),
    ("k8s-pod:tenancy/app=policy", ("k8s-pod:tenancy/app=policy",)),
    ("netns:a,b", ("netns:a", "netns:b")),  # a part without a kind continues the one before
    ("pid:10,11", ("pid:10", "pid:11")),
    ("k8s-pod:tenancy/app=x,tier=web", ("k8s-pod:tenancy/app=x,tier=web",)),  # one selector of two labels
    ("k8s-pod:tenancy/p1,p2", ("k8s-pod:tenancy/p1", "k8s-pod:tenancy/p2")),  # two pods
    (" netns:a , pid:7 ,netns:a", ("netns:a", "pid:7")),  # spaces trimmed, each item once, in order
])
def test_every_iptables_form_is_accepted(target: str, items: tuple[str, ...]) -> None:
    parsed = parse_fault_target("iptables", target)
    assert parsed == FaultTarget("iptables", ",".join(items), items)
    assert parsed.is_local is (items == ("local",)) and parsed.admin_url == ""
    assert split_items(target) == items and split_targets(target) == list(items)  # the drivers' view: the same


@pytest.mark.parametrize("target, url", [
    ("envoy:http://127.0.0.1:9901", "http://127.0.0.1:9901"),
    ("http://envoy.internal:9901/", "http://envoy.internal:9901"),
    ("https://[::1]:9901", "https://[::1]:9901"),
])
def test_every_envoy_form_is_its_admin_url(target: str, url: str) -> None:
    parsed = parse_fault_target("envoy", target, envoy_admin_url="http://127.0.0.1:1")  # only for local
    assert parsed == FaultTarget("envoy", url, (url,)) and parsed.admin_url == url and not parsed.is_local


def test_envoy_local_is_envoy_admin_url_else_the_default(tmp_path: Path) -> None:
    assert parse_fault_target("envoy", "local", "http://127.0.0.1:19901/").admin_url == "http://127.0.0.1:19901"
    assert parse_fault_target("envoy", "local").admin_url == DEFAULT_ENVOY_ADMIN_URL == "http://127.0.0.1:9901"
    assert parse_fault_target("envoy", "local").text == "local"
    cfg = load_config(target_config(tmp_path, fault_via="envoy", fault_target="local",
                                    envoy_admin_url="http://127.0.0.1:19902"))
    assert cfg.fault.admin_url == "http://127.0.0.1:19902" and not validate(cfg)  # the run's settings: the same


@pytest.mark.parametrize("via", ["k8s-networkpolicy", "istio"])
@pytest.mark.parametrize("target", ["tenancy/app=policy", "k8s-pod:tenancy/app=policy", "k8s:tenancy/app=policy"])
def test_every_kubernetes_form_is_namespace_and_selector(via: str, target: str) -> None:
    assert parse_fault_target(via, target) == FaultTarget(via, "tenancy/app=policy", ("tenancy/app=policy",))


@pytest.mark.parametrize("via, target, message", [
    ("iptables", "moon:base", "unknown target 'moon:base': use " + VIA_FORMS["iptables"]),
    ("iptables", "bogus", "unknown target 'bogus': use " + VIA_FORMS["iptables"]),
    ("iptables", "http://127.0.0.1:9901", "FAULT_VIA=iptables works on " + VIA_FORMS["iptables"]),
    ("iptables", "envoy:http://127.0.0.1:9901", "an Envoy admin URL is FAULT_VIA=envoy"),
    ("iptables", "netns:a,,netns:b", "empty item"),
    ("iptables", "netns:", "names nothing: give netns:<name>"),
    ("iptables", "k8s-pod:local/app=x", "<namespace>/<label selector>"),
    ("envoy", "netns:lab", "FAULT_VIA=envoy needs FAULT_TARGET=" + VIA_FORMS["envoy"]),
    ("envoy", "127.0.0.1:9901", "FAULT_VIA=envoy needs FAULT_TARGET=" + VIA_FORMS["envoy"]),
    ("k8s-networkpolicy", "local", "must look like <namespace>/<label selector>"),
    ("istio", "netns:x/app=y", "must look like <namespace>/<label selector>"),
    ("ebpf", "local", "FAULT_VIA='ebpf' is unknown; use one of iptables, envoy, k8s-networkpolicy, istio"),
])
def test_a_target_the_method_does_not_take_is_refused_naming_the_forms(via: str, target: str, message: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_fault_target(via, target)
    assert message in str(caught.value)
    assert isinstance(caught.value, ConfigError)  # a setting that cannot be used


@pytest.mark.parametrize("via", FAULT_VIAS)
def test_an_empty_target_is_refused_with_the_forms_of_its_method(via: str) -> None:
    with pytest.raises(TargetError, match="FAULT_TARGET is empty") as caught:
        parse_fault_target(via, "  ")
    assert VIA_FORMS[via] in str(caught.value)


def test_every_method_has_its_forms_and_the_drivers_see_a_fault_error() -> None:
    assert list(VIA_FORMS) == list(FAULT_VIAS)  # `chaosext doctor --via` offers exactly these
    with pytest.raises(FaultError, match="unknown target 'moon:base'"):
        split_targets("moon:base")


@pytest.mark.parametrize("target, via", [
    ("local", "iptables"), ("netns:lab", "iptables"), ("pid:10", "iptables"), ("k8s-pod:tenancy/app=x", "iptables"),
    ("envoy:http://127.0.0.1:9901", "envoy"), ("http://127.0.0.1:9901", "envoy"), ("https://envoy:9901", "envoy"),
    ("tenancy/app=policy", "k8s-networkpolicy"),
])
def test_the_method_a_target_implies_when_none_is_given(target: str, via: str) -> None:
    assert default_via(target) == via
    parse_fault_target(via, target)  # and that method takes it
