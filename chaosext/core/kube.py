"""The one Kubernetes client of chaosext: the fault drivers, the k6-operator, the probes and ``chaosext doctor`` all
get theirs from :func:`api_client`.

It is built the way chaostoolkit-kubernetes builds its own, from the same names and by its own factory
(``chaosk8s.create_k8s_api_client``), so an experiment that mixes chaosext and chaostoolkit-kubernetes activities
talks to one cluster with one set of credentials. In this order:

1. ``KUBE_API_URL`` (a run setting; chaosext's own): an API URL that needs no authentication, e.g.
   ``kubectl proxy``'s ``http://127.0.0.1:8001``. Nothing below is read then.
2. a kubeconfig file (``$KUBECONFIG``, default ``~/.kube/config``) when it exists, in context ``KUBE_CONTEXT``
   (a run setting; chaosext's name, kept as an alias) else ``KUBERNETES_CONTEXT`` (secrets, else env;
   chaostoolkit-kubernetes' name), else the kubeconfig's current context;
3. the pod's service account when ``CHAOSTOOLKIT_IN_POD=true`` (chaostoolkit-kubernetes), or -- chaosext's addition --
   inside a pod (``KUBERNETES_SERVICE_HOST`` is set) with neither a kubeconfig nor ``KUBERNETES_HOST``;
4. ``KUBERNETES_HOST`` with ``KUBERNETES_API_KEY`` (sent as ``Authorization: <KUBERNETES_API_KEY_PREFIX, default
   Bearer> <key>``), or ``KUBERNETES_CERT_FILE`` + ``KUBERNETES_KEY_FILE``, or ``KUBERNETES_USERNAME`` +
   ``KUBERNETES_PASSWORD``; TLS is verified only when ``KUBERNETES_VERIFY_SSL`` is set (to any value; CA:
   ``KUBERNETES_CA_CERT_FILE``) -- chaostoolkit-kubernetes' default, which ``chaosext doctor`` warns about.

``KUBE_API_URL`` and ``KUBE_CONTEXT`` are the run's settings, handed in as ``options`` (``kube_api_url``,
``kube_context``: a fault driver's options, or ``ExperimentConfig``'s values). ``KUBERNETES_*`` values come from the
activity's ``secrets`` (chaostoolkit-kubernetes' upper-case names; lower case accepted; scope ``chaosext`` or any scope
the activity asks for), else the environment; like chaostoolkit-kubernetes, the client is built for each activity
from what it is handed and nothing is kept. Where chaostoolkit-kubernetes would silently ignore an
explicit ``KUBERNETES_HOST`` (a kubeconfig exists and no context is named, or ``CHAOSTOOLKIT_IN_POD=true``), chaosext
refuses instead: a chaos tool must never pick a cluster the operator did not mean. Nothing here logs a credential.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chaosext.core import urls
from chaosext.core.errors import ConfigError
from chaosext.core.settings import Secrets, is_unset

__all__ = ["KUBE_SECRET_KEYS", "KubeConfigError", "KubeSource", "KubeOptions", "kube_secrets", "source",
           "api_client", "credential_env", "describe"]

#: chaostoolkit-kubernetes' credential names (``chaosk8s.create_k8s_api_client``)
KUBE_SECRET_KEYS = (
    "KUBERNETES_CONTEXT", "KUBERNETES_HOST", "KUBERNETES_API_KEY", "KUBERNETES_API_KEY_PREFIX",
    "KUBERNETES_CERT_FILE", "KUBERNETES_KEY_FILE", "KUBERNETES_USERNAME", "KUBERNETES_PASSWORD",
    "KUBERNETES_VERIFY_SSL", "KUBERNETES_CA_CERT_FILE", "KUBERNETES_DEBUG",
)
#: ``kube_api_url`` / ``kube_context`` (KUBE_API_URL / KUBE_CONTEXT): a driver's options or the run's settings
KubeOptions = Mapping[str, Any] | None


class KubeConfigError(ConfigError):
    """No usable or no unambiguous way to reach the Kubernetes API; the message says what to set."""


@dataclass(frozen=True)
class KubeSource:
    """Where the client's API address and credentials come from (never holds a credential)."""

    #: ``proxy`` (KUBE_API_URL), ``kubeconfig``, ``in-pod`` (service account) or ``host`` (KUBERNETES_HOST)
    kind: str
    #: the API URL (proxy, host), or the kubeconfig path
    where: str = ""
    context: str = ""
    #: how the client authenticates: ``none``, ``kubeconfig``, ``service account``, ``bearer``, ``client cert``,
    #: ``basic``
    auth: str = ""
    #: False only for an https KUBERNETES_HOST without KUBERNETES_VERIFY_SSL (chaostoolkit-kubernetes' default)
    tls_verified: bool = True


def _scoped_items(secrets: Secrets) -> list[tuple[str, Any]]:
    """Every (key, value) of the secrets, flat: Chaos Toolkit hands an activity the merged values of the scopes it
    asked for, and a control the whole ``{scope: {...}}`` mapping; the ``chaosext`` scope and flat values win."""
    if not secrets:
        return []
    nested = [(k, v) for k, v in secrets.items() if isinstance(v, Mapping) and k != "chaosext"]
    ours = secrets.get("chaosext")
    items: list[tuple[str, Any]] = [kv for _, scope in nested for kv in scope.items()]
    if isinstance(ours, Mapping):
        items += list(ours.items())
    return items + [(k, v) for k, v in secrets.items() if not isinstance(v, Mapping)]


def kube_secrets(secrets: Secrets) -> dict[str, str]:
    """The ``KUBERNETES_*`` values of ``secrets`` (keys upper-cased; unset values left out)."""
    out: dict[str, str] = {}
    for key, value in _scoped_items(secrets):
        name = str(key).upper()
        if name in KUBE_SECRET_KEYS and not is_unset(value):
            out[name] = str(value)
    return out


def _option(options: KubeOptions, name: str) -> str:
    value = (options or {}).get(name)
    return "" if is_unset(value) else str(value).strip()


def credential_env(secrets: Secrets = None) -> dict[str, str]:
    """The KUBERNETES_* secrets in effect, as environment variables for a child process that must reach the same
    API (the dead-man watchdog); never for argv or a file."""
    return kube_secrets(secrets)


def _kubeconfig_path() -> str:
    """chaostoolkit-kubernetes' kubeconfig path (``$KUBECONFIG``, else ``~/.kube/config``)."""
    from chaosk8s import get_config_path

    return str(get_config_path())


def source(options: KubeOptions = None, secrets: Secrets = None) -> KubeSource:
    """Which API and credentials :func:`api_client` would use (no network). KubeConfigError when there are none, or
    when an explicit ``KUBERNETES_HOST`` would be ignored."""
    proxy = _option(options, "kube_api_url")
    if proxy:
        if why := urls.problem(proxy, "KUBE_API_URL"):  # the one parser that also sends (chaosext.core.urls)
            raise KubeConfigError(why)
        return KubeSource("proxy", proxy.rstrip("/"), auth="none")
    creds = kube_secrets(secrets)

    def lookup(name: str) -> str:
        return creds.get(name) or os.environ.get(name, "")

    context = _option(options, "kube_context") or lookup("KUBERNETES_CONTEXT")
    host = lookup("KUBERNETES_HOST")
    path = _kubeconfig_path()
    in_pod = os.environ.get("CHAOSTOOLKIT_IN_POD") == "true"
    fix_host = ("to use KUBERNETES_HOST instead, point KUBECONFIG at a path that does not exist and leave "
                "CHAOSTOOLKIT_IN_POD unset")
    if os.path.exists(path):
        if host and not context:
            raise KubeConfigError(
                f"both KUBERNETES_HOST ({host}) and a kubeconfig ({path}) are given and no context is named: "
                f"chaostoolkit-kubernetes would use the kubeconfig's current context and ignore KUBERNETES_HOST. "
                f"Name the cluster you mean: KUBE_CONTEXT=<context> for the kubeconfig, or {fix_host}")
        return KubeSource("kubeconfig", path, context=context, auth="kubeconfig")
    if context:
        raise KubeConfigError(f"KUBE_CONTEXT/KUBERNETES_CONTEXT={context!r} names a kubeconfig context, but there is "
                              f"no kubeconfig at {path}: set KUBECONFIG to the file that has it")
    if in_pod:
        if host:
            raise KubeConfigError(f"CHAOSTOOLKIT_IN_POD=true and KUBERNETES_HOST ({host}) are both set: "
                                  f"chaostoolkit-kubernetes would use the pod's service account and ignore "
                                  f"KUBERNETES_HOST; unset one of them")
        return KubeSource("in-pod", auth="service account")
    if host:
        if why := urls.problem(host, "KUBERNETES_HOST"):
            raise KubeConfigError(why)
        auth = "bearer" if lookup("KUBERNETES_API_KEY") else "client cert" if lookup("KUBERNETES_CERT_FILE") \
            else "basic" if lookup("KUBERNETES_USERNAME") else "none"
        verified = not host.startswith("https:") or "KUBERNETES_VERIFY_SSL" in creds \
            or "KUBERNETES_VERIFY_SSL" in os.environ  # chaostoolkit-kubernetes: set at all = verify
        return KubeSource("host", host.rstrip("/"), auth=auth, tls_verified=verified)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return KubeSource("in-pod", auth="service account")
    raise KubeConfigError(
        f"no Kubernetes context: no kubeconfig at {path}, not in a pod, and no KUBERNETES_HOST. Set KUBECONFIG (and "
        f"KUBE_CONTEXT), or KUBERNETES_HOST + KUBERNETES_API_KEY (secrets or env), or KUBE_API_URL with `kubectl "
        f"proxy`")


def api_client(options: KubeOptions = None, secrets: Secrets = None) -> Any:
    """A ``kubernetes.client.ApiClient`` for :func:`source` (see the module docstring); KubeConfigError when there
    is none."""
    from chaosk8s import create_k8s_api_client
    from kubernetes import client, config

    src = source(options, secrets)
    if src.kind == "proxy":
        cfg = client.Configuration()
        cfg.host = src.where
        return client.ApiClient(cfg)
    creds = kube_secrets(secrets)
    if src.context:
        creds["KUBERNETES_CONTEXT"] = src.context
    try:
        if src.kind == "in-pod" and os.environ.get("CHAOSTOOLKIT_IN_POD") != "true":
            incluster: Any = config.load_incluster_config
            incluster()  # a pod that did not say CHAOSTOOLKIT_IN_POD=true
            return client.ApiClient()
        return create_k8s_api_client(creds)
    except (config.ConfigException, OSError, TypeError, ValueError) as exc:
        where = f"kubeconfig {src.where}" + (f" context {src.context!r}" if src.context else "") \
            if src.kind == "kubeconfig" else src.kind
        raise KubeConfigError(f"no Kubernetes context: the {where} is not usable ({exc}); set KUBECONFIG / "
                              f"KUBE_CONTEXT, or KUBERNETES_HOST + KUBERNETES_API_KEY, or KUBE_API_URL with "
                              f"`kubectl proxy`") from None


def describe(options: KubeOptions = None, secrets: Secrets = None) -> str:
    """One line naming the API and how chaosext authenticates to it (no credential), for ``chaosext doctor``."""
    src = source(options, secrets)
    if src.kind == "proxy":
        return f"KUBE_API_URL {src.where} (no authentication, e.g. `kubectl proxy`)"
    if src.kind == "kubeconfig":
        return f"kubeconfig {src.where}, " + (f"context {src.context}" if src.context else "its current context")
    if src.kind == "in-pod":
        return "the pod's service account (in-cluster)"
    return f"KUBERNETES_HOST {src.where} ({src.auth} auth{'' if src.tls_verified else ', TLS NOT verified'})"
