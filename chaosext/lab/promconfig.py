"""Generated Prometheus and Alertmanager configuration for the lab.

Prometheus scrapes every lab component (one job each) every few seconds, loads every rule file found in the rules
directory (default: the repository's ``ops/devops/tenant/``) and sends alerts to the lab's Alertmanager.

Production ``for:`` durations stay in ``alerts.yaml``; the lab writes a rewritten copy of each rule file into
``<state>/prometheus/rules/`` where every ``for:`` and ``keep_firing_for:`` is capped at ``--alert-for`` seconds, so
an alert fires (and clears) within a short experiment.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from chaosext.core import safefs
from chaosext.core.rulefiles import SERVICES_RULES_FILE, expected_services_rules

__all__ = [
    "PromConfigError",
    "default_rules_dir",
    "find_rule_files",
    "parse_duration",
    "cap_rule_durations",
    "set_runbook_base",
    "write_rule_copies",
    "write_services_rules",
    "prometheus_config",
    "alertmanager_config",
    "write_yaml",
    "check_config",
]

_DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class PromConfigError(ValueError):
    """A rule file or generated configuration is unusable; the message says which and why."""


def default_rules_dir() -> Path:
    """``ops/devops/tenant/`` of the repository this package lives in (exists in a source checkout)."""
    return Path(__file__).resolve().parents[2] / "ops" / "devops" / "tenant"


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as ``5m``, ``1h30m``, ``500ms`` (raises PromConfigError if invalid)."""
    text = str(text).strip()
    if not text or _DURATION.sub("", text) != "":
        raise PromConfigError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(text))


def find_rule_files(rules_dir: Path) -> list[Path]:
    """Top-level ``*.yaml``/``*.yml`` files in rules_dir that are Prometheus rule files (have ``groups:``)."""
    if not rules_dir.is_dir():
        return []
    found = []
    for path in sorted(list(rules_dir.glob("*.yaml")) + list(rules_dir.glob("*.yml"))):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise PromConfigError(f"rule file {path} is not valid YAML: {exc}") from exc
        if isinstance(doc, dict) and isinstance(doc.get("groups"), list):
            found.append(path)
    return found


def cap_rule_durations(doc: dict[str, Any], cap_seconds: int) -> int:
    """Cap every ``for:``/``keep_firing_for:`` in a rule document at cap_seconds, in place; returns how many changed."""
    changed = 0
    for group in doc.get("groups") or []:
        for rule in (group or {}).get("rules") or []:
            for key in ("for", "keep_firing_for"):
                if key in rule and parse_duration(rule[key]) > cap_seconds:
                    rule[key] = f"{cap_seconds}s"
                    changed += 1
    return changed


#: The base every shipped ``runbook_url`` starts with (``<base>#<anchor>``; deploy/README.md, "Runbook links").
SHIPPED_RUNBOOK_BASE = "https://git.stellaops.example/stellaops/chaosext/blob/main/docs/runbook.md"


def set_runbook_base(doc: dict[str, Any], base: str) -> int:
    """Point every ``runbook_url`` of a rule document at ``<base>#<anchor>``, in place; returns how many changed.

    Only URLs built from the shipped base change (their anchor is kept); base must be an absolute http(s) or file URL.
    """
    if not re.match(r"^(https?|file)://\S+$", base) or "#" in base:
        raise PromConfigError(f"runbook base {base!r} must be an absolute http(s):// or file:// URL without '#'")
    changed = 0
    for group in doc.get("groups") or []:
        for rule in (group or {}).get("rules") or []:
            notes = rule.get("annotations") or {}
            url = notes.get("runbook_url")
            if isinstance(url, str) and url.startswith(SHIPPED_RUNBOOK_BASE + "#"):
                notes["runbook_url"] = base.rstrip("/") + url[len(SHIPPED_RUNBOOK_BASE):]
                changed += 1
    return changed


def write_rule_copies(sources: list[Path], dest_dir: Path, cap_seconds: int,
                      runbook_base: str | None = None) -> list[Path]:
    """Write each rule file, durations capped, into dest_dir (emptied first); returns the written paths.

    With ``runbook_base`` every shipped ``runbook_url`` is rewritten to ``<runbook_base>#<anchor>``."""
    with safefs.open_dir(dest_dir.parent, create=True) as parent:
        parent.rmtree(dest_dir.name)
        parent.subdir(dest_dir.name).close()
    written = []
    for src in sources:
        doc = yaml.safe_load(src.read_text(encoding="utf-8"))
        changed = cap_rule_durations(doc, cap_seconds)
        if runbook_base:
            set_runbook_base(doc, runbook_base)
        dest = dest_dir / src.name
        header = (f"# Generated by `chaosext lab up` from {src}\n"
                  f"# Lab override (--alert-for {cap_seconds}): every for:/keep_firing_for: capped at "
                  f"{cap_seconds}s ({changed} changed). Production values live in the source file.\n")
        safefs.write_file(dest, header + yaml.safe_dump(doc, sort_keys=False, width=4096))
        written.append(dest)
    return written


def write_services_rules(dest_dir: Path, services: tuple[str, ...] | list[str]) -> Path:
    """Write ``services.yaml`` (the services the lab runs, for ``tenant_service_metrics_absent``) into dest_dir."""
    dest = dest_dir / SERVICES_RULES_FILE
    safefs.write_file(dest, expected_services_rules(services, source="`chaosext lab up` (the services it runs)"))
    return dest


#: Scrape backstop for tenant cardinality: a target exposing more samples than this fails its scrape (``up`` = 0,
#: "sample limit exceeded") instead of flooding the TSDB. ~70 series per tenant x the 1000-tenant cap = 70k.
SAMPLE_LIMIT = 100_000


def _scrape_job(job: str, target: str, sample_limit: int, service: bool) -> dict[str, Any]:
    """One scrape job. A tenant service's target carries the target label ``service`` (so ``up`` of a dead target
    still names its service: ``tenant_service_target_down`` joins on it), with ``honor_labels`` so the ``service``
    label the process sets on its own series stays as it is (without it Prometheus renames it ``exported_service``)."""
    if not service:
        return {"job_name": job, "sample_limit": sample_limit, "static_configs": [{"targets": [target]}]}
    return {"job_name": job, "sample_limit": sample_limit, "honor_labels": True,
            "static_configs": [{"targets": [target], "labels": {"service": job}}]}


def prometheus_config(targets: dict[str, str], rule_files: list[Path], alertmanager: str | None,
                      interval_seconds: int = 2, sample_limit: int = SAMPLE_LIMIT,
                      services: tuple[str, ...] = ()) -> dict[str, Any]:
    """prometheus.yml as a dict: one scrape job per component (``{job: "host:port"}``), rules, alerting; the jobs
    named in ``services`` are tenant services (target label ``service``)."""
    interval = f"{interval_seconds}s"
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval,
                   "external_labels": {"lab": "chaosext"}},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [_scrape_job(job, target, sample_limit, job in services) for job, target in targets.items()],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


def alertmanager_config() -> dict[str, Any]:
    """alertmanager.yml: everything to a null receiver, grouped fast so alerts show in ``/api/v2/alerts`` quickly."""
    return {
        "route": {"receiver": "null", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [{"name": "null"}],
    }


def write_yaml(path: Path, doc: dict[str, Any], comment: str) -> Path:
    """Write doc as YAML with a leading comment line (root-safe, 0600: chaosext.core.safefs)."""
    safefs.write_file(path, f"# {comment}\n" + yaml.safe_dump(doc, sort_keys=False, width=4096))
    return path


def check_config(argv: list[str], what: str) -> None:
    """Run a checker (``promtool check config FILE``, ``amtool check-config FILE``); PromConfigError with its output."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as exc:
        raise PromConfigError(f"{argv[0]} not found: install it with `apt-get install prometheus "
                              f"prometheus-alertmanager`, or run `chaosext lab up --no-prometheus`") from exc
    except subprocess.TimeoutExpired as exc:
        raise PromConfigError(f"`{' '.join(argv)}` did not finish in 60 s") from exc
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip()
        raise PromConfigError(f"the generated {what} does not pass `{' '.join(argv)}`:\n{out}")
