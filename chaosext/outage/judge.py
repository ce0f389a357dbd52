"""Judging the outage once, after it: ``judge_outage`` (experiments/jwks-outage.json) and ``judge_drill``
(experiments/jwks-expiry-drill.json), the last step of each method.

Chaos Toolkit's steady-state hypothesis stops at its first failing probe, so the journal would not say whether the
later checks (e.g. the alerts) passed. These steps run every outage check once (:mod:`chaosext.outage.checks`,
:mod:`chaosext.outage.drill`), keep the results in the outage notebook (``judgments``: a hypothesis probe that names a
check then returns the recorded result) and return them all; ``chaosext verdict`` prints every one.
"""
from collections.abc import Sequence
from typing import Any

from chaosext.core.settings import Configuration, Secrets
from chaosext.outage import checks, drill, modes
from chaosext.outage.evidence import save_run_evidence
from chaosext.outage.judging import Check, judging_of
from chaosext.outage.notebook import Judgments, edit_notebook
from chaosext.outage.services import per_service
from chaosext.run.context import RunContext, run_context
from chaosext.run.record import CheckResult

__all__ = ["judge_outage", "judge_drill"]

#: (check name as the verdict shows it, check) in the order the verdict shows them
Checks = Sequence[tuple[str, Check]]

#: every outage-behaviour check of the main experiment, in its order
OUTAGE_CHECKS: Checks = (
    ("outage-held", checks.outage_held),
    ("cached-key-fallback", checks.cached_key_fallback),
    ("no-fail-open", checks.no_fail_open),
    ("server-error-rate-below-max", checks.server_error_rate),
    ("client-error-rate-below-max", checks.client_error_rate),
    ("auth-degraded-audited", checks.audit_degraded_recorded),
    ("alerts-fire-iff-cache-expired", checks.alerts_match_cache_state),
)

#: the expiry drill's checks, in its hypothesis's order
DRILL_CHECKS: Checks = (
    ("outage-held", checks.outage_held),
    ("cached-key-fallback", checks.cached_key_fallback),
    ("fails-closed-after-expiry", drill.fails_closed),
    ("no-fail-open", checks.no_fail_open),
    ("auth-expired-audited", drill.expiry_audited),
    ("expiry-alerts-fired", drill.expiry_alerts_fired),
)


def run_checks(ctx: RunContext, which: Checks) -> dict[str, CheckResult] | None:
    """Run every check once over the recorded outage (a check that raises fails with its error), record the results
    by check function in the notebook and return them by check name; None when no outage was recorded."""
    judging = judging_of(ctx)
    if judging is None:
        return None
    results: dict[str, CheckResult] = {}
    for name, check in which:
        try:
            results[name] = check(judging)
        except Exception as exc:
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    with edit_notebook(ctx.run_dir) as notebook:
        notebook.judgments = Judgments({check.__name__: results[name] for name, check in which})
    return results


def _summary(ctx: RunContext, results: dict[str, CheckResult] | None) -> dict[str, Any]:
    if results is None:
        why = "dry run: nothing was injected" if ctx.dry_run else "no outage was recorded: the fault was not applied"
        return {"ok": False, "judged": False, "failed": ["no-outage"], "why": why, "checks": {}}
    failed = [n for n, r in results.items() if not r.get("ok")]
    # checks that could not be judged on this target (their ``gap`` says why): ok, yet no pass (the verdict's
    # INCOMPLETE)
    unjudged = [n for n, r in results.items() if r.get("not_judged") is True]
    return {"ok": not failed, "failed": failed, "not_judged": unjudged, "mode": ctx.cfg.jwks_failure,
            "checks": results, "per_service": per_service(results, ctx.cfg.services)}


def judge_outage(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Run every outage-behaviour check once, after the outage, and keep the results in the run directory.

    Chaos Toolkit's steady-state hypothesis stops at its first failing probe, so the journal would not say whether
    the later ones (e.g. the alerts) passed. This step, last in the method, runs them all and ``chaosext verdict``
    prints every one of them, with JWKS_FAILURE's own checks (``chaosext.outage.modes``) and which service failed
    which check (``per_service``, the scorecard's cells). Also saves the judged series for the report
    (``evidence``).
    """
    ctx = run_context(configuration, secrets)
    # JWKS_FAILURE's own checks (latency where judged) after them
    which = (*OUTAGE_CHECKS, *modes.mode_checks(ctx.cfg.jwks_failure, ctx.cfg.latency_judged))
    summary = _summary(ctx, run_checks(ctx, which))
    return {**summary, "evidence": save_run_evidence(ctx)} if summary.get("checks") else summary


def judge_drill(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Run every drill check once, after the restore, and keep the results (the hypothesis probe then returns its
    result; ``chaosext verdict`` prints every one, even after the first failure)."""
    ctx = run_context(configuration, secrets)
    return _summary(ctx, run_checks(ctx, DRILL_CHECKS))
