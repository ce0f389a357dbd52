"""``chaosext verdict journal.json``: exit 0 only if the experiment really passed.

Chaos Toolkit exits 0 even when the steady state did not hold *before* the method (the method is then skipped) and
when activities of the method failed. The verdict passes only when all of these hold:

- the run's status is ``completed`` and it did not deviate;
- the steady-state hypothesis was met before the method and after it;
- no activity of the method or the rollbacks failed, and the abort guard did not cut the outage short.

It prints one screen: every probe of both hypotheses with its value, tolerance and pass/fail, the method's
activities, and the reasons for a failing verdict. Exit codes: 0 pass, 1 fail, 2 unreadable journal.
"""
from __future__ import annotations

import json
import sys
from typing import Any

import click

__all__ = ["verdict", "judge", "render", "forgery_table"]

#: output keys shown first when summarising a probe's value
_KEY_ORDER = ("ok", "phase", "error_rate", "max", "requests", "errors", "cache_expired", "expired_services",
              "firing_prometheus", "in_alertmanager", "affected", "missing", "checks", "failed", "failures",
              "accepted_count", "inconclusive_count", "tried", "why", "note")


def _short(value: Any, width: int) -> str:
    if isinstance(value, dict):
        keys = [k for k in _KEY_ORDER if k in value and value[k] not in ("", None, [], {})]
        keys += [k for k in value if k not in keys and k not in _KEY_ORDER][: max(0, 4 - len(keys))]
        text = ", ".join(f"{k}={_compact(value[k])}" for k in keys)
    else:
        text = _compact(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _compact(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def _tolerance(tol: Any) -> str:
    if isinstance(tol, dict):
        if tol.get("type") == "jsonpath":
            return f"{tol.get('path')} == {json.dumps(tol.get('expect'))}"
        if tol.get("type") == "range":
            return f"{tol.get('target', 'value')} in {tol.get('range')}"
        return json.dumps(tol, separators=(",", ":"))
    return json.dumps(tol)


def forgery_table(res: dict[str, Any]) -> list[str]:
    """The no-fail-open check per forgery class: tried, refused, accepted, inconclusive, first acceptance."""
    when = "before the fault" if res.get("phase") == "before-fault" else "every outage tick + after the restore"
    refusal = "/".join(map(str, res.get("refused_statuses") or []))
    lines = ["", f"  forged tokens (no-fail-open; refusal = {refusal}; {when}):",
             f"    {'class':<15} {'result':<12} {'tried':>6} {'refused':>8} {'accepted':>9} {'inconcl.':>9}  "
             f"first accepted"]
    for name, c in res["classes"].items():
        if c.get("skipped"):
            lines.append(f"    {name:<15} {'SKIPPED':<12} {c['skipped']}")
            continue
        verdict = "FAIL-OPEN" if c.get("accepted") else "INCONCLUSIVE" if c.get("inconclusive") else \
            "refused" if c.get("tried") else "not tried"
        first = c.get("first_accepted_s")
        lines.append(f"    {name:<15} {verdict:<12} {c.get('tried', 0):>6} {c.get('refused', 0):>8} "
                     f"{c.get('accepted', 0):>9} {c.get('inconclusive', 0):>9}  "
                     f"{'' if first is None else f'{first:+.1f}s after the block'}")
    for finding in (res.get("accepted") or [])[:3]:
        lines.append(f"    accepted: {finding.get('class')} ({finding.get('variant')}) {finding.get('service')} tenant "
                     f"{finding.get('tenant')} {finding.get('method')} {finding.get('route')} -> {finding.get('status')}")
    if res.get("why"):
        lines.append(f"    why: {res['why']}")
    return lines


def judge(journal: dict[str, Any]) -> list[str]:
    """Reasons the run did not pass ([] = pass)."""
    reasons: list[str] = []
    status = journal.get("status")
    if status != "completed":
        reasons.append(f"run status is {status!r}, not 'completed'")
    if journal.get("deviated"):
        reasons.append("the steady state deviated after the method")
    states = journal.get("steady_states") or {}
    before, after = states.get("before"), states.get("after")
    if not before:
        reasons.append("no steady-state check before the method")
    elif not before.get("steady_state_met"):
        reasons.append("the steady state did not hold BEFORE the fault (the method was skipped; Chaos Toolkit "
                       "still exits 0)")
    if before and before.get("steady_state_met") and not after:
        reasons.append("no steady-state check after the method")
    elif after and not after.get("steady_state_met"):
        failed = [p["activity"]["name"] for p in after.get("probes") or [] if not p.get("tolerance_met")]
        reasons.append("the steady state did not hold AFTER the fault" + (f": {', '.join(failed)}" if failed else ""))
    for where in ("run", "rollbacks"):
        for run in journal.get(where) or []:
            name = (run.get("activity") or {}).get("name", "?")
            if run.get("status") != "succeeded":
                reasons.append(f"{'method' if where == 'run' else 'rollback'} activity {name!r} {run.get('status')}")
            out = run.get("output")
            if isinstance(out, dict) and out.get("aborted") and out.get("reason"):
                reasons.append(f"{name!r}: {out['reason']}")
            if isinstance(out, dict) and isinstance(out.get("checks"), dict) and out.get("failed"):
                reasons.append(f"outage checks failed: {', '.join(out['failed'])}")
    return reasons


def render(journal: dict[str, Any], width: int = 118) -> str:
    """The one-screen report."""
    lines = []
    exp = journal.get("experiment") or {}
    lines.append(f"chaosext verdict: {exp.get('title', '?')}")
    dur = journal.get("duration")
    lines.append(f"status={journal.get('status')} deviated={journal.get('deviated')} "
                 f"duration={dur:.0f}s" if isinstance(dur, (int, float)) else
                 f"status={journal.get('status')} deviated={journal.get('deviated')}")
    states = journal.get("steady_states") or {}
    name_w, tol_w = 30, 22
    val_w = max(20, width - name_w - tol_w - 12)
    for when in ("before", "after"):
        st = states.get(when)
        lines.append("")
        if not st:
            lines.append(f"steady state {when.upper()}: not run")
            continue
        lines.append(f"steady state {when.upper()}: {'held' if st.get('steady_state_met') else 'NOT MET'}")
        lines.append(f"  {'probe':<{name_w}} {'result':<6} {'tolerance':<{tol_w}} value")
        for p in st.get("probes") or []:
            name = (p.get("activity") or {}).get("name", "?")
            ok = p.get("tolerance_met") and p.get("status") == "succeeded"
            value = p.get("output") if p.get("status") == "succeeded" else \
                f"ERROR {''.join(p.get('exception') or [])[-200:].strip()}"
            tol = _tolerance((p.get("activity") or {}).get("tolerance"))
            lines.append(f"  {name[:name_w]:<{name_w}} {'PASS' if ok else 'FAIL':<6} {tol[:tol_w]:<{tol_w}} "
                         f"{_short(value, val_w)}")
            if not ok and isinstance(value, dict) and isinstance(value.get("classes"), dict) and \
                    value.get("phase") == "before-fault":
                lines.extend(forgery_table(value))
    for run in journal.get("run") or []:
        out = run.get("output")
        if isinstance(out, dict) and isinstance(out.get("checks"), dict):
            lines.append("")
            lines.append(f"outage checks ({(run.get('activity') or {}).get('name')}: every check, even after the "
                         f"first failure)")
            for name, res in out["checks"].items():
                ok = isinstance(res, dict) and res.get("ok") is True
                lines.append(f"  {name[:name_w]:<{name_w}} {'PASS' if ok else 'FAIL':<6} {'$.ok == true':<{tol_w}} "
                             f"{_short(res, val_w)}")
            res = out["checks"].get("no-fail-open")
            if isinstance(res, dict) and isinstance(res.get("classes"), dict):
                lines.extend(forgery_table(res))
    for where, title in (("run", "method"), ("rollbacks", "rollbacks")):
        runs = journal.get(where) or []
        if runs:
            lines.append("")
            lines.append(f"{title}: " + ", ".join(
                f"{(r.get('activity') or {}).get('name', '?')}={r.get('status')}" for r in runs))
    reasons = judge(journal)
    lines.append("")
    if reasons:
        lines.append("VERDICT: FAIL")
        lines.extend(f"  - {r}" for r in reasons)
    else:
        lines.append("VERDICT: PASS (steady state held before and after the outage; no activity failed)")
    return "\n".join(lines)


@click.command("verdict")
@click.argument("journal_path", metavar="JOURNAL", type=click.Path(dir_okay=False), default="journal.json")
@click.option("--json", "as_json", is_flag=True, help="Print {pass, reasons} as JSON instead of the table.")
def verdict(journal_path: str, as_json: bool) -> None:
    """Judge a Chaos Toolkit journal: exit 0 only if the experiment really passed.

    \b
    Fails when the run did not complete, deviated, the steady state did not hold before (Chaos Toolkit exits 0
    then!) or after the fault, or any method/rollback activity failed. Exit codes: 0 pass, 1 fail, 2 bad journal.
    Example: chaos run experiments/jwks-outage.json && chaosext verdict journal.json
    """
    try:
        with open(journal_path, encoding="utf-8") as fh:
            journal = json.load(fh)
        if not isinstance(journal, dict) or "status" not in journal:
            raise ValueError("not a Chaos Toolkit journal (no 'status')")
    except (OSError, ValueError) as exc:
        click.echo(f"chaosext verdict: cannot read {journal_path}: {exc}. Run `chaos run --journal-path "
                   f"{journal_path} experiments/jwks-outage.json` first.", err=True)
        sys.exit(2)
    reasons = judge(journal)
    if as_json:
        click.echo(json.dumps({"pass": not reasons, "reasons": reasons}))
    else:
        click.echo(render(journal))
    sys.exit(1 if reasons else 0)
