"""The one way chaosext resolves a setting or a secret.

Order, for every activity, the safety control, the ``chaosext`` CLI and ``jwks-chaos.sh`` alike:

1. the experiment's ``configuration`` (Chaos Toolkit passes its keys as written; chaosext's keys are the environment
   variable names in lower case: ``OUTAGE_SECONDS`` -> ``outage_seconds``; an upper-case key is accepted too);
2. the environment variable ``NAME`` (upper case);
3. the running lab (``chaosext.core.labstate``), where a setting has a lab value, else the documented default.

Values that are empty or an unresolved Chaos Toolkit ``${...}`` reference count as unset. Secrets come from the
experiment's ``secrets`` (scope ``chaosext``, Chaos Toolkit's ``env``/``vault`` secret types), else the environment;
they are never logged.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

__all__ = ["SECRETS_SCOPE", "Configuration", "Secrets", "is_unset", "raw_setting", "setting_origin", "setting",
           "argument_or_setting", "secret_value"]

#: the experiment's ``secrets`` scope chaosext reads (``"secrets": ["chaosext"]`` on its activities)
SECRETS_SCOPE = "chaosext"

if TYPE_CHECKING:
    Configuration: TypeAlias = Mapping[str, Any] | None
    Secrets: TypeAlias = Mapping[str, Any] | None
else:  # what `chaos discover` shows for an entry point's configuration/secrets: a mapping (plain dict), not "object"
    Configuration = dict
    Secrets = dict


def is_unset(value: Any) -> bool:
    """True for None, '' and an unresolved Chaos Toolkit reference such as ``${OUTAGE_SECONDS}``."""
    return value is None or value == "" or (isinstance(value, str) and value.startswith("${") and value.endswith("}"))


def raw_setting(configuration: Configuration, name: str, default: Any = "") -> Any:
    """Setting ``name`` as given (not converted): configuration (lower- or upper-case key), else env var, else
    ``default``."""
    key = name.lower()
    conf = configuration or {}
    for k in (key, key.upper()):
        if not is_unset(conf.get(k)):
            return conf[k]
    env = os.environ.get(key.upper(), "")
    return default if is_unset(env) else env


def setting_origin(configuration: Configuration, name: str) -> str:
    """Where :func:`raw_setting` finds ``name``: ``configuration``, ``env`` (the environment), or '' (not set)."""
    key = name.lower()
    conf = configuration or {}
    if any(not is_unset(conf.get(k)) for k in (key, key.upper())):
        return "configuration"
    return "" if is_unset(os.environ.get(key.upper(), "")) else "env"


def setting(configuration: Configuration, name: str, default: str = "") -> str:
    """Setting ``name`` as a string (see :func:`raw_setting`)."""
    return str(raw_setting(configuration, name, default))


def argument_or_setting(value: Any, configuration: Configuration, name: str, default: Any = "") -> Any:
    """An activity's argument ``value`` unless it is unset (empty or an unresolved ``${...}``), else setting
    ``name`` (:func:`raw_setting`: configuration, env var, ``default``)."""
    return raw_setting(configuration, name, default) if is_unset(value) else value


def _flat_secrets(secrets: Secrets) -> dict[str, Any]:
    """Chaos Toolkit gives activities the merged values of their scopes and controls the scopes themselves."""
    secrets = secrets or {}
    scoped = secrets.get(SECRETS_SCOPE)
    flat = {k: v for k, v in secrets.items() if k != SECRETS_SCOPE}
    if isinstance(scoped, Mapping):
        flat.update(scoped)
    return flat


def secret_value(secrets: Secrets, name: str) -> Any:
    """Secret ``name`` (lower case) from the experiment's secrets, else env var ``NAME``; '' when unset."""
    value = _flat_secrets(secrets).get(name)
    if not is_unset(value):
        return value
    return os.environ.get(name.upper(), "")
