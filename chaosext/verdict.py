"""``chaosext verdict journal.json``: exit 0 only if the experiment really passed.

Chaos Toolkit exits 0 even when the steady state did not hold *before* the method (the method is then skipped) and
when activities of the method failed. The verdict passes only when all of these hold:

- the run's status is ``completed`` and it did not deviate;
- the baseline (the hypothesis before the fault) held, the fault was applied AND verified, the outage was watched,
  this run's restore succeeded, every outage check passed (``judge-outage``), and the recovery (the hypothesis after
  the restore) held;
- no activity of the method or the rollbacks failed, and the abort guard did not cut the outage short.

It prints three blocks — baseline, outage, recovery — with every check, its value, tolerance and pass/fail, then the
method's activities and the reasons. Exit codes (``EXIT_CODES``): 0 pass; 1 fail; 2 unreadable journal; 3 not run
(the baseline was unhealthy, or the safety control refused before changing anything: no fault was injected); 4 dry
run (nothing was injected, never a pass).
"""
from __future__ import annotations

import json
import sys
from typing import Any

import click

__all__ = ["verdict", "judge", "render", "classify", "EXIT_CODES", "forgery_table", "per_service_lines"]

#: verdict -> exit code of ``chaosext verdict``
EXIT_CODES = {"PASS": 0, "FAIL": 1, "UNREADABLE": 2, "NOT RUN": 3, "DRY RUN": 4}

#: output keys shown first when summarising a probe's value
_KEY_ORDER = ("ok", "phase", "error_rate", "max", "requests", "errors", "cache_expired", "expired_services",
              "firing_prometheus", "in_alertmanager", "affected", "missing", "checks", "failed", "failures",
              "accepted_count", "inconclusive_count", "tried", "why", "note")


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


def forgery_table(res: dict[str, Any]) -> list[str]:
    """The no-fail-open check per forgery class: tried, refused, accepted, inconclusive, first acceptance."""
    when = {"baseline": "live, before the fault", "recovery": "live, after the restore"}.get(
        str(res.get("phase")), "every watch tick of the outage")
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
        lines.append(f"    accepted: {finding.get('class')} ({finding.get('variant')}) {finding.get('service')} "
                     f"tenant {finding.get('tenant')} {finding.get('method')} {finding.get('route')} -> "
                     f"{finding.get('status')}")
    if res.get("why"):
        lines.append(f"    why: {res['why']}")
    return lines


def per_service_lines(out: dict[str, Any]) -> list[str]:
    """judge-outage's JWKS_FAILURE mode and which service failed which check (``per_service``): each service's line,
    then the failures no service is named in."""
    view = out.get("per_service")
    if not isinstance(view, dict) or not isinstance(view.get("services"), dict):
        return []
    lines = ["", f"  per service (JWKS_FAILURE={out.get('mode', 'unreachable')}):"]
    for service, failed in view["services"].items():
        lines.append(f"    {service:<16} {'FAILED ' + ', '.join(failed) if failed else 'held'}")
    if view.get("run"):
        lines.append(f"    {'(the run)':<16} FAILED {', '.join(view['run'])}")
    return lines


def _failed_forgery_tables(state: dict[str, Any]) -> list[str]:
    """The per-class table of a failing live forgery probe (baseline / recovery)."""
    lines: list[str] = []
    for p in state.get("probes") or []:
        out = p.get("output")
        if not p.get("tolerance_met") and isinstance(out, dict) and isinstance(out.get("classes"), dict):
            lines += forgery_table(out)
    return lines


def _activity(journal: dict[str, Any], name: str, where: str = "run") -> dict[str, Any] | None:
    """The journal entry of the (last) activity called ``name`` in the method (or the rollbacks)."""
    found = None
    for run in journal.get(where) or []:
        if (run.get("activity") or {}).get("name") == name:
            found = run
    return found


def _output(run: dict[str, Any] | None) -> dict[str, Any]:
    """The output of a journal entry when it is an object, else {}."""
    out = (run or {}).get("output")
    return out if isinstance(out, dict) else {}


def _failed_probes(state: dict[str, Any] | None) -> list[str]:
    return [(p.get("activity") or {}).get("name", "?") for p in (state or {}).get("probes") or []
            if not (p.get("tolerance_met") and p.get("status") == "succeeded")]


def classify(journal: dict[str, Any]) -> tuple[str, list[str]]:
    """(``PASS`` | ``FAIL`` | ``NOT RUN`` | ``DRY RUN``, reasons)."""
    if ((journal.get("experiment") or {}).get("dry")):
        return "DRY RUN", [f"chaos run --dry {journal['experiment']['dry']}: nothing was injected, nothing judged"]
    states = journal.get("steady_states") or {}
    before = states.get("before")
    if before and not before.get("steady_state_met"):
        return "NOT RUN", ["baseline unhealthy: no fault was injected; failing: " + ", ".join(
            _failed_probes(before) or ["?"])]
    if not before and not journal.get("run"):
        return "NOT RUN", [f"refused before any change (run status {journal.get('status')!r}): see the safety "
                           f"control's messages in the chaos output"]
    reasons = judge(journal)
    return ("FAIL" if reasons else "PASS"), reasons


def judge(journal: dict[str, Any]) -> list[str]:
    """Reasons the run did not pass ([] = pass)."""
    reasons: list[str] = []
    status = journal.get("status")
    if status != "completed":
        reasons.append(f"run status is {status!r}, not 'completed'")
    if journal.get("deviated"):
        reasons.append("the steady state deviated after the method (recovery failed)")
    states = journal.get("steady_states") or {}
    before, after = states.get("before"), states.get("after")
    if not before:
        reasons.append("no baseline (steady-state check before the fault)")
    elif not before.get("steady_state_met"):
        reasons.append("baseline unhealthy: the steady state did not hold BEFORE the fault")
    if before and before.get("steady_state_met") and not after:
        reasons.append("no recovery check (steady state after the restore)")
    elif after and not after.get("steady_state_met"):
        failed = _failed_probes(after)
        reasons.append("recovery failed: the steady state did not hold AFTER the restore"
                       + (f": {', '.join(failed)}" if failed else ""))
    block = _activity(journal, "block-jwks-egress")
    block_out = _output(block)
    if block is None:
        reasons.append("the fault was never applied (no block-jwks-egress in the method)")
    elif block.get("status") != "succeeded" or not (block_out.get("verification") or {}).get("blocked") \
            or block_out.get("dry_run"):
        err = "".join(block.get("exception") or []).strip().splitlines()[-1:] or [""]
        reasons.append(f"fault not applied: {err[0] or 'not verified as blocking from the target'}")
    watch_out = _output(_activity(journal, "watch-outage"))
    if block_out.get("verification", {}).get("blocked") and not (watch_out.get("watched") and watch_out.get("ticks")):
        reasons.append("the outage was not watched")
    restore = _activity(journal, "restore-jwks-egress")
    if block_out.get("verification", {}).get("blocked") and (restore is None or restore.get("status") != "succeeded"):
        reasons.append("this run's restore did not succeed")
    judge_run = _activity(journal, "judge-outage") or _activity(journal, "judge-drill")
    if block_out.get("verification", {}).get("blocked") and judge_run is None:
        reasons.append("the outage was not judged (no judge-outage)")
    for where in ("run", "rollbacks"):
        for run in journal.get(where) or []:
            name = (run.get("activity") or {}).get("name", "?")
            if run.get("status") != "succeeded":
                reasons.append(f"{'method' if where == 'run' else 'rollback'} activity {name!r} {run.get('status')}")
            out = run.get("output")
            if isinstance(out, dict) and out.get("aborted") and out.get("reason"):
                reasons.append(f"{name!r}: {out['reason']}")
            if isinstance(out, dict) and isinstance(out.get("checks"), dict) and out.get("failed"):
                reasons.append(f"outage checks failed: {', '.join(out['failed'])}"
                               + (f" ({out['why']})" if out.get("why") else ""))
    return list(dict.fromkeys(reasons))


def _probe_lines(st: dict[str, Any], name_w: int, tol_w: int, val_w: int | None, cut_name: int | None,
                 cut_tol: int | None) -> list[str]:
    lines = [f"  {'check':<{name_w}} {'result':<6} {'tolerance':<{tol_w}} value"]
    for p in st.get("probes") or []:
        name = (p.get("activity") or {}).get("name", "?")
        ok = p.get("tolerance_met") and p.get("status") == "succeeded"
        value = p.get("output") if p.get("status") == "succeeded" else \
            f"ERROR {''.join(p.get('exception') or [])[-200:].strip()}"
        tol = _tolerance((p.get("activity") or {}).get("tolerance"))
        lines.append(f"  {_cut(name, cut_name):<{name_w}} {'PASS' if ok else 'FAIL':<6} "
                     f"{_cut(tol, cut_tol):<{tol_w}} {_short(value, val_w)}")
    return lines


def _state_block(title: str, st: dict[str, Any] | None, name_w: int, tol_w: int, val_w: int | None,
                 cut_name: int | None, cut_tol: int | None) -> list[str]:
    """One steady-state block (baseline or recovery): its title line, every probe, failed forgery tables."""
    if not st:
        return ["", f"{title}: not run"]
    return (["", f"{title}: {'held' if st.get('steady_state_met') else 'NOT MET'}"]
            + _probe_lines(st, name_w, tol_w, val_w, cut_name, cut_tol) + _failed_forgery_tables(st))


def render(journal: dict[str, Any], width: int = 118, wide: bool = False) -> str:
    """The one-screen report: baseline, outage and recovery blocks, then the verdict; ``wide``: nothing cut."""
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
    lines += _state_block("BASELINE (before the fault)", states.get("before"), name_w, tol_w, val_w, cut_name,
                          cut_tol)
    lines.append("")
    judge_run = _activity(journal, "judge-outage") or _activity(journal, "judge-drill")
    out = (judge_run or {}).get("output")
    if isinstance(out, dict) and out.get("checks"):
        lines.append(f"OUTAGE: {'held' if not out.get('failed') else 'FAILED'} (every check, even after the first "
                     f"failure)")
        lines.append(f"  {'check':<{name_w}} {'result':<6} {'tolerance':<{tol_w}} value")
        for name, res in out["checks"].items():
            ok = isinstance(res, dict) and res.get("ok") is True
            lines.append(f"  {_cut(name, cut_name):<{name_w}} {'PASS' if ok else 'FAIL':<6} "
                         f"{'$.ok == true':<{tol_w}} {_short(res, val_w)}")
        forged = out["checks"].get("no-fail-open")
        if isinstance(forged, dict) and isinstance(forged.get("classes"), dict):
            lines += forgery_table(forged)
        lines += per_service_lines(out)
    else:
        why = out.get("why") if isinstance(out, dict) else ""
        lines.append(f"OUTAGE: not judged{f' ({why})' if why else ''}")
    lines += _state_block("RECOVERY (after the restore)", states.get("after"), name_w, tol_w, val_w, cut_name,
                          cut_tol)
    for where, title in (("run", "method"), ("rollbacks", "rollbacks")):
        runs = journal.get(where) or []
        if runs:
            lines.append("")
            lines.append(f"{title}: " + ", ".join(
                f"{(r.get('activity') or {}).get('name', '?')}={r.get('status')}" for r in runs))
    kind, reasons = classify(journal)
    lines.append("")
    if kind == "PASS":
        lines.append("VERDICT: PASS (baseline held, the outage held and passed every check, the services recovered)")
    else:
        lines.append(f"VERDICT: {kind}")
        lines.extend(f"  - {r}" for r in reasons)
    return "\n".join(lines)


@click.command("verdict")
@click.argument("journal_path", metavar="JOURNAL", type=click.Path(dir_okay=False), default="journal.json")
@click.option("--json", "as_json", is_flag=True, help="Print {pass, reasons} as JSON instead of the table.")
@click.option("--wide", is_flag=True, help="Cut nothing: every probe name, tolerance and value whole (long lines).")
def verdict(journal_path: str, as_json: bool, wide: bool) -> None:
    """Judge a Chaos Toolkit journal: exit 0 only if the experiment really passed.

    \b
    PASS only when the baseline held, the fault was applied and verified, the outage held and passed every check,
    this run's restore succeeded and the services recovered. Exit codes: 0 pass, 1 fail, 2 bad journal, 3 not run
    (baseline unhealthy or refused before any change: no fault injected), 4 dry run.
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
    kind, reasons = classify(journal)
    if as_json:
        click.echo(json.dumps({"pass": kind == "PASS", "verdict": kind, "reasons": reasons}))
    else:
        click.echo(render(journal, wide=wide))
    sys.exit(EXIT_CODES[kind])
