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

__all__ = ["verdict", "judge", "render"]

#: output keys shown first when summarising a probe's value
_KEY_ORDER = ("ok", "phase", "error_rate", "max", "requests", "errors", "cache_expired", "expired_services",
              "firing_prometheus", "in_alertmanager", "affected", "missing", "checks", "failed", "failures",
              "accepted", "accepted_count", "why", "note")


def _cut(text: str, width: int | None) -> str:
    """``text`` cut to ``width`` with an ellipsis; whole when width is None (``--wide``)."""
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def _short(value: Any, width: int | None) -> str:
    if isinstance(value, dict):
        keys = [k for k in _KEY_ORDER if k in value and value[k] not in ("", None, [], {})]
        rest = [k for k in value if k not in keys and k not in _KEY_ORDER]
        keys += rest if width is None else rest[: max(0, 4 - len(keys))]
        text = ", ".join(f"{k}={_compact(value[k])}" for k in keys)
    else:
        text = _compact(value)
    return _cut(text, width)


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


def render(journal: dict[str, Any], width: int = 118, wide: bool = False) -> str:
    """The one-screen report; ``wide``: nothing cut (long lines instead)."""
    lines = []
    exp = journal.get("experiment") or {}
    lines.append(f"chaosext verdict: {exp.get('title', '?')}")
    dur = journal.get("duration")
    lines.append(f"status={journal.get('status')} deviated={journal.get('deviated')} "
                 f"duration={dur:.0f}s" if isinstance(dur, (int, float)) else
                 f"status={journal.get('status')} deviated={journal.get('deviated')}")
    states = journal.get("steady_states") or {}
    name_w, tol_w = 30, 22
    val_w: int | None = None if wide else max(20, width - name_w - tol_w - 12)
    cut_name, cut_tol = (None, None) if wide else (name_w, tol_w)
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
            lines.append(f"  {_cut(name, cut_name):<{name_w}} {'PASS' if ok else 'FAIL':<6} "
                         f"{_cut(tol, cut_tol):<{tol_w}} {_short(value, val_w)}")
    for run in journal.get("run") or []:
        out = run.get("output")
        if isinstance(out, dict) and isinstance(out.get("checks"), dict):
            lines.append("")
            lines.append(f"outage checks ({(run.get('activity') or {}).get('name')}: every check, even after the "
                         f"first failure)")
            for name, res in out["checks"].items():
                ok = isinstance(res, dict) and res.get("ok") is True
                lines.append(f"  {_cut(name, cut_name):<{name_w}} {'PASS' if ok else 'FAIL':<6} "
                             f"{'$.ok == true':<{tol_w}} {_short(res, val_w)}")
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
@click.option("--wide", is_flag=True, help="Cut nothing: every probe name, tolerance and value whole (long lines).")
def verdict(journal_path: str, as_json: bool, wide: bool) -> None:
    """Judge a Chaos Toolkit journal: exit 0 only if the experiment really passed.

    \b
    Fails when the run did not complete, deviated, the steady state did not hold before (Chaos Toolkit exits 0
    then!) or after the fault, or any method/rollback activity failed. Exit codes: 0 pass, 1 fail, 2 bad journal.
    Example: chaos run experiments/jwks-outage.json && chaosext verdict journal.json
    Example: chaosext verdict --wide journal.json | less -S
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
        click.echo(render(journal, wide=wide))
    sys.exit(1 if reasons else 0)
