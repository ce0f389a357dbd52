"""``FAULT_VIA`` + ``FAULT_TARGET``: where the fault goes, parsed once, by this module only.

=======================  ==========================================================================================
``FAULT_VIA``            ``FAULT_TARGET``
=======================  ==========================================================================================
``iptables``             ``local`` (this network namespace), ``netns:<name or glob>``, ``pid:<pid>`` (the network
                         namespace of a process), ``k8s-pod:<namespace>/<pod or label selector>``; several
                         comma-separated (``netns:a,b`` is two namespaces, ``pid:10,11`` two processes,
                         ``k8s-pod:ns/app=x,tier=web`` one selector of two labels, ``k8s-pod:ns/p1,p2`` two pods)
``envoy``                the Envoy admin URL (``envoy:<url>`` or the bare URL); ``local``: ``ENVOY_ADMIN_URL``, else
                         ``http://127.0.0.1:9901``
``k8s-networkpolicy``    ``<namespace>/<label selector>`` (``k8s-pod:`` or ``k8s:`` in front is accepted)
``istio``                the same
=======================  ==========================================================================================

:func:`parse_fault_target` checks the form and returns a :class:`FaultTarget` whose ``items`` the drivers, the
approval gate, the lock and ``chaosext doctor`` use as they are; it never looks at the system (globs are expanded
by the driver against the namespaces that exist then).
"""
from __future__ import annotations

from dataclasses import dataclass

from chaosext.core.errors import ConfigError
from chaosext.core.names import FAULT_VIAS

__all__ = ["FaultTarget", "TargetError", "ITEM_KINDS", "VIA_FORMS", "parse_fault_target", "default_via",
           "split_items", "k8s_namespace_selector", "DEFAULT_ENVOY_ADMIN_URL"]

#: kinds of an iptables target item (``local`` has no name)
ITEM_KINDS = ("local", "netns", "pid", "k8s-pod")
#: what each fault method takes, for messages and ``chaosext doctor --help``
VIA_FORMS: dict[str, str] = {
    "iptables": "local, netns:<name|glob>, pid:<pid> or k8s-pod:<namespace>/<pod|selector> (comma-separated for "
                "several)",
    "envoy": "envoy:<admin-url> (or the bare admin URL)",
    "k8s-networkpolicy": "<namespace>/<label selector> (or k8s-pod:<namespace>/<selector>)",
    "istio": "<namespace>/<label selector> (or k8s-pod:<namespace>/<selector>)",
}


class TargetError(ConfigError):
    """FAULT_TARGET cannot be read for this FAULT_VIA; the message shows the accepted forms."""


@dataclass(frozen=True)
class FaultTarget:
    """A parsed ``FAULT_VIA`` / ``FAULT_TARGET``.

    ``text`` is the target as records, locks and approvals name it; ``items`` are its parts: iptables items
    (``local``, ``netns:a``, ``pid:10``, ``k8s-pod:ns/sel``), the Envoy admin URL, or the Kubernetes
    ``<namespace>/<selector>``."""

    via: str
    text: str
    items: tuple[str, ...]

    @property
    def is_local(self) -> bool:
        """iptables in this very network namespace."""
        return self.via == "iptables" and self.items == ("local",)

    @property
    def admin_url(self) -> str:
        """Envoy: the admin base URL ('' for the other methods)."""
        return self.items[0] if self.via == "envoy" else ""


def k8s_namespace_selector(item: str) -> tuple[str, str]:
    """``(namespace, selector or pod name)`` of ``[k8s:|k8s-pod:]<namespace>/<selector>``."""
    for prefix in ("k8s-pod:", "k8s:"):
        item = item.removeprefix(prefix)
    namespace, _, selector = item.partition("/")
    if not namespace or namespace == "local" or ":" in namespace:
        raise TargetError(f"Kubernetes target {item!r} must look like <namespace>/<label selector>, e.g. "
                          "tenancy/app=orders")
    return namespace, selector


def split_items(target: str) -> tuple[str, ...]:
    """The iptables items of a comma-separated target, in order, without duplicates (see the module table)."""
    items: list[str] = []
    for raw in str(target or "local").split(","):
        part = raw.strip()
        if not part:
            raise TargetError(f"target {target!r} has an empty item; separate targets with single commas")
        kind, sep, name = part.partition(":")
        if part == "local" or (sep and kind in ITEM_KINDS):
            if sep and not name:
                raise TargetError(f"target item {part!r} names nothing: give {kind}:<name>")
            items.append(part)
            continue
        if not items or items[-1] == "local":
            raise TargetError(f"unknown target {part!r}: use {VIA_FORMS['iptables']}")
        prev_kind, _, prev_name = items[-1].partition(":")
        if prev_kind == "k8s-pod":
            namespace, _, selector = prev_name.partition("/")
            if "=" in part and "=" in selector:
                items[-1] = f"{items[-1]},{part}"  # one more label of the same selector
            else:
                items.append(f"k8s-pod:{namespace}/{part}")
        else:
            items.append(f"{prev_kind}:{part}")
    for item in items:
        if item.startswith("k8s-pod:"):
            k8s_namespace_selector(item)
    return tuple(dict.fromkeys(items))


def default_via(target: str) -> str:
    """The fault method a target implies when FAULT_VIA is not given (``chaosext doctor``)."""
    if target.startswith(("http://", "https://", "envoy:")):
        return "envoy"
    if "/" in target and ":" not in target.split("/", 1)[0]:
        return "k8s-networkpolicy"
    return "iptables"


#: Envoy's admin address when FAULT_TARGET=local and ENVOY_ADMIN_URL is unset
DEFAULT_ENVOY_ADMIN_URL = "http://127.0.0.1:9901"


def parse_fault_target(via: str, target: str, envoy_admin_url: str = "") -> FaultTarget:
    """Check ``target`` against the forms ``via`` takes (module table); TargetError says what to give instead.
    ``envoy_admin_url`` (ENVOY_ADMIN_URL) is the admin URL of ``FAULT_VIA=envoy FAULT_TARGET=local``."""
    if via not in FAULT_VIAS:
        raise TargetError(f"FAULT_VIA={via!r} is unknown; use one of {', '.join(FAULT_VIAS)}")
    target = str(target or "").strip()
    if not target:
        raise TargetError(f"FAULT_TARGET is empty; for FAULT_VIA={via} give {VIA_FORMS[via]}")
    if via == "iptables":
        if target.startswith(("http://", "https://", "envoy:")):
            raise TargetError(f"FAULT_VIA=iptables works on {VIA_FORMS['iptables']}, not {target!r} (an Envoy admin "
                              f"URL is FAULT_VIA=envoy)")
        items = split_items(target)
        return FaultTarget(via, ",".join(items), items)
    if via == "envoy":
        if target == "local":
            url = (envoy_admin_url or DEFAULT_ENVOY_ADMIN_URL).rstrip("/")
            return FaultTarget(via, "local", (url,))
        url = target.removeprefix("envoy:").rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise TargetError(f"FAULT_VIA=envoy needs FAULT_TARGET={VIA_FORMS['envoy']}, not {target!r}")
        return FaultTarget(via, url, (url,))
    namespace, selector = k8s_namespace_selector(target)
    item = f"{namespace}/{selector}"
    return FaultTarget(via, item, (item,))
