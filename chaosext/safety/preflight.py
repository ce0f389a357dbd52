"""The one pre-flight: every check a run must pass before anything changes, in the order a person fixes them.

``chaosext doctor`` prints this list and the safety control refuses a run on any failed required finding of the
same list, so doctor refuses exactly what a run would. Each domain owns its checks (``chaosext.egress.checks``,
``chaosext.load.checks``, ``chaosext.auth.checks``, ``chaosext.metrics.checks``, ``chaosext.audit.checks``); this module
only puts them in order. Two stages: :func:`static_findings` need no network and change nothing (the control runs them
before it takes the target lock), :func:`live_findings` ask the target, the IdP and the backends (after the lock).
"""
from __future__ import annotations

from chaosext.audit.checks import check_audit, check_audit_mapping
from chaosext.auth.checks import (
    check_claim_classes,
    check_discovery,
    check_forgery_skip,
    check_forgery_tokens_file,
    check_jwks,
    check_jwks_uri,
    check_key_url,
    check_services,
    check_tenant_tokens,
    check_token_transport,
)
from chaosext.core import labid
from chaosext.core.config import validate
from chaosext.core.findings import Finding
from chaosext.egress.checks import fault_findings
from chaosext.load.checks import check_k6
from chaosext.metrics.checks import check_judgeable, check_metrics, check_ready
from chaosext.run.context import RunContext
from chaosext.safety.approval import approval_problem

__all__ = ["static_findings", "live_findings", "preflight", "refusals", "warnings"]


def check_approval(ctx: RunContext) -> Finding:
    """CHAOSEXT_APPROVE names the target when it is not the local lab (else the run is refused)."""
    cfg = ctx.cfg
    if cfg.is_lab_target:
        return Finding("approval", True, "the local lab: no approval needed")
    if approval_problem(cfg):
        given = f"CHAOSEXT_APPROVE={cfg.approve!r} does not name" if cfg.approve else "CHAOSEXT_APPROVE is unset for"
        return Finding("approval", False, f"{given} target {cfg.target_name!r} (not the local lab: "
                                          f"{labid.lab_problem(cfg)})",
                       f"export CHAOSEXT_APPROVE={cfg.target_name} once the owners agreed (in CI: the variable "
                       f"CHAOSEXT_APPROVE of the chaos-gameday environment, docs/runbook.md)")
    return Finding("approval", True, f"CHAOSEXT_APPROVE names {cfg.target_name}")


def check_exercised(ctx: RunContext) -> Finding:
    """Warn when the outage cannot exercise the stale-key path: not longer than the services' soft TTL, no cache goes
    stale, nothing is audited as degraded, and the verdict can only say NOT EXERCISED."""
    cfg = ctx.cfg
    if cfg.outage_seconds > cfg.jwks_ttl:
        return Finding("outage vs cache TTL", True, f"OUTAGE_SECONDS={cfg.outage_seconds} outlasts the services' "
                                                    f"JWKS_TTL={cfg.jwks_ttl:g}: their caches go stale during it")
    return Finding("outage vs cache TTL", False,
                   f"OUTAGE_SECONDS={cfg.outage_seconds} is not longer than the services' JWKS_TTL={cfg.jwks_ttl:g}: "
                   f"no cache goes stale, the stale-key path is not exercised, and the verdict can only say NOT "
                   f"EXERCISED",
                   f"make OUTAGE_SECONDS longer than {cfg.jwks_ttl:g} (on the lab, or shorten the TTL: chaosext lab up "
                   f"--jwks-ttl {max(1, cfg.outage_seconds // 5)})", required=False)


def static_findings(ctx: RunContext) -> list[Finding]:
    """The settings themselves (values, limits, the fault target's form) and the approval: no network, no change."""
    problems = validate(ctx.cfg)
    out = [Finding("configuration", False, p, "fix the setting named (docs/experiment.md has the table)")
           for p in problems] or [Finding("configuration", True, "every setting is valid")]
    out.append(check_forgery_skip(ctx))
    out.append(check_key_url(ctx))
    if (tokens_file := check_forgery_tokens_file(ctx)) is not None:
        out.append(tokens_file)
    if not problems:
        out.append(check_exercised(ctx))
        out.append(check_approval(ctx))
        out.append(check_token_transport(ctx))  # tokens only over https outside the lab (docs/security.md)
    return out


def live_findings(ctx: RunContext, need_k6: bool = True) -> list[Finding]:
    """What the run needs from the machine, the target, the IdP and the backends, asked now (changes nothing; the
    tokens it fetches stay in the run's memory)."""
    out = fault_findings(ctx)
    if need_k6:
        out.append(check_k6())
    out.append(check_jwks(ctx))
    out += [check_discovery(ctx), check_jwks_uri(ctx), *check_tenant_tokens(ctx)]
    out += check_claim_classes(ctx)
    out += check_services(ctx)
    prometheus = check_ready(ctx, "prometheus")
    out.append(prometheus)
    if prometheus.ok:
        out += check_metrics(ctx)
        out += check_judgeable(ctx)
    out.append(check_ready(ctx, "alertmanager"))
    out.append(check_audit(ctx))
    out += check_audit_mapping(ctx)
    return out


def preflight(ctx: RunContext, need_k6: bool = True) -> list[Finding]:
    """Every finding, static then live (the live ones only when the static ones passed)."""
    static = static_findings(ctx)
    return static if refusals(static) else static + live_findings(ctx, need_k6)


def refusals(findings: list[Finding]) -> list[Finding]:
    """The findings that stop a run."""
    return [f for f in findings if f.refuses]


def warnings(findings: list[Finding]) -> list[Finding]:
    """The findings a run goes on with but says before it starts (doctor's ``warn`` lines)."""
    return [f for f in findings if not f.ok and not f.required]
