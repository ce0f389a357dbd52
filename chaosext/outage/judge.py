"""Judging the outage once, after it: ``judge_outage`` (experiments/jwks-outage.json) and ``judge_drill``
(experiments/jwks-expiry-drill.json), the last step of each method.

Chaos Toolkit's steady-state hypothesis stops at its first failing probe, so the journal would not say whether the
later ones (e.g. the alerts) passed. These steps run every outage check, keep the results in the run file
(``Run.judgments``: the checks then return them instead of judging again, see ``chaosext.core.judging``), and return
them all; ``chaosext verdict`` prints every one.
"""
from collections.abc import Callable, Sequence
from typing import Any

from chaoslib.types import Configuration, Secrets

from chaosext.audit.probes import audit_degraded_recorded
from chaosext.auth.drill import expiry_alerts_fired, expiry_audited, fails_closed_after_expiry
from chaosext.auth.probes import cached_key_fallback, no_fail_open
from chaosext.core.config import load_config
from chaosext.core.errors import activity
from chaosext.core.runfile import CheckResult, Judgments, edit_run, load_run
from chaosext.metrics.probes import alerts_match_cache_state, client_error_rate, outage_held, server_error_rate
from chaosext.outage.evidence import save_run_evidence

__all__ = ["judge_outage", "judge_drill"]

#: (check name as the verdict shows it, probe) — a probe takes ``configuration=`` and returns a result dict
Checks = Sequence[tuple[str, Callable[..., CheckResult]]]

#: every outage-behaviour check of the main experiment, in its order
OUTAGE_CHECKS: Checks = (
    ("outage-held", outage_held),
    ("cached-key-fallback", cached_key_fallback),
    ("no-fail-open", no_fail_open),
    ("server-error-rate-below-max", server_error_rate),
    ("client-error-rate-below-max", client_error_rate),
    ("auth-degraded-audited", audit_degraded_recorded),
    ("alerts-fire-iff-cache-expired", alerts_match_cache_state),
)

#: the expiry drill's checks, in its hypothesis's order
DRILL_CHECKS: Checks = (
    ("outage-held", outage_held),
    ("cached-key-fallback", cached_key_fallback),
    ("fails-closed-after-expiry", fails_closed_after_expiry),
    ("no-fail-open", no_fail_open),
    ("auth-expired-audited", expiry_audited),
    ("expiry-alerts-fired", expiry_alerts_fired),
)


def run_checks(configuration: Configuration, checks: Checks) -> dict[str, CheckResult]:
    """Run every check once (a check that raises fails with its error), record the results by probe function in the
    run file and return them by check name."""
    cfg = load_config(configuration)
    with edit_run(cfg.run_dir) as run:
        run.judgments = Judgments()  # judge afresh: no check may return an earlier judgment
    results: dict[str, CheckResult] = {}
    for name, check in checks:
        try:
            results[name] = check(configuration=configuration)
        except Exception as exc:
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    with edit_run(cfg.run_dir) as run:
        run.judgments = Judgments({check.__name__: results[name] for name, check in checks})
    return results


def _summary(results: dict[str, CheckResult]) -> dict[str, Any]:
    failed = [n for n, r in results.items() if not r.get("ok")]
    return {"ok": not failed, "failed": failed, "checks": results}


@activity
def judge_outage(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Run every outage-behaviour check once, after the outage, and keep the results in the run file.

    Chaos Toolkit's steady-state hypothesis stops at its first failing probe, so the journal would not say whether
    the later ones (e.g. the alerts) passed. This step, last in the method, runs them all; the hypothesis probes
    then return these same results, and ``chaosext verdict`` prints every one of them. Also saves the judged series
    for the report (``evidence``).
    """
    cfg = load_config(configuration)
    if load_run(cfg.run_dir).outage_window() is None:
        why = "dry run: nothing was injected" if (configuration or {}).get("chaosext_dry_run") else \
            "no outage was recorded: the fault was not applied"
        return {"ok": False, "judged": False, "failed": ["no-outage"], "why": why, "checks": {}}
    return {**_summary(run_checks(configuration, OUTAGE_CHECKS)), "evidence": save_run_evidence(cfg)}


@activity
def judge_drill(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Run every drill check once, after the restore, and keep the results (the hypothesis probes then return
    them; ``chaosext verdict`` prints every one, even after the first failure)."""
    return _summary(run_checks(configuration, DRILL_CHECKS))
