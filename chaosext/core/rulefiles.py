"""The one part of the tenancy rules that names a target's services: the services it runs.

``ops/devops/tenant/alerts.yaml`` names no service: ``tenant_service_metrics_absent`` pages for every service the
series :data:`EXPECTED_SERVICES_RECORD` names whose request counter has been absent for 5 minutes. That series comes
from a small rule file, ``services.yaml``, written per target: ``chaosext render rules`` writes it from the target
description, and ``chaosext lab up`` writes the lab's (both through :func:`expected_services_rules`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable

from chaosext.core.errors import ConfigError

__all__ = ["EXPECTED_SERVICES_RECORD", "SERVICES_RULES_FILE", "expected_services_rules"]

#: one series per service the target runs (value 1), labelled with the service label
EXPECTED_SERVICES_RECORD = "service:tenant_service_expected:info"
#: the rule file that records it
SERVICES_RULES_FILE = "services.yaml"
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def expected_services_rules(services: Iterable[str], service_label: str = "service", source: str = "") -> str:
    """The text of ``services.yaml`` for ``services`` (names as the service label's values); ``source`` names where
    the list came from (a comment)."""
    names = list(services)
    if not names:
        raise ConfigError("no service to list in the rules: describe the target's services (docs/target.md)")
    if not _LABEL_RE.match(service_label):
        raise ConfigError(f"{service_label!r} is not a label name (METRIC_SERVICE_LABEL)")
    branches = "\n            or\n".join(
        f"          label_replace(vector(1), {json.dumps(service_label)}, {json.dumps(name)}, \"\", \"\")"
        for name in names)
    origin = f" from {source}" if source else ""
    return (f"# The services this target runs{origin}: one series each, {EXPECTED_SERVICES_RECORD}.\n"
            f"# tenant_service_metrics_absent (alerts.yaml) pages for each one whose request counter is absent for\n"
            f"# 5 minutes. Load it with recording-rules.yaml and alerts.yaml; render it again when services change.\n"
            f"groups:\n"
            f"  - name: tenant-services\n"
            f"    rules:\n"
            f"      - record: {EXPECTED_SERVICES_RECORD}\n"
            f"        expr: |\n"
            f"{branches}\n")
