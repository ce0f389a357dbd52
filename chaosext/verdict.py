"""``chaosext verdict journal.json``: exit 0 only if the experiment really passed.

Chaos Toolkit exits 0 even when the steady state did not hold *before* the method (the method is then skipped) and
when activities of the method failed. The verdict passes only when all of these hold:

- the journal is a complete Chaos Toolkit journal, and it agrees with its run's own record (``run.json``: the judged
  view the safety control sealed at the end, with a per-run key; ``chaosext.core.journal_record``): an edited journal
  is no pass, and says where it differs;
- no forged token was accepted in any phase (baseline, outage, recovery): that is a security finding, shown on top,
  and the run FAILS even when the baseline stopped it before the fault;
- the run's status is ``completed`` and it did not deviate;
- the baseline held, the fault was applied AND verified, the outage was watched, this run's restore succeeded, every
  outage check passed (``judge-outage``), and the recovery held;
- the run was closed cleanly: the safety control's always-restore at the very end lifted the fault and stopped k6
  (``closed`` in the journal's ``chaosext`` entry, sealed with the record). A fault left in place (restore failed,
  rules left) FAILS the run, named on top, even when every probe passed;
- no activity of the method or the rollbacks failed, and the abort guard did not cut the outage short;
- the outage exercised the stale-key path: some service served stale keys (or failed closed). An outage shorter
  than the services' JWKS TTL proves nothing about stale keys: NOT EXERCISED, never a pass;
- every check was judged: a check that could not be judged on this target says so (``not_judged`` and a ``gap``
  naming what to configure: a service without a cache signal, no audit action mapped, expiry alert rules missing or
  not loaded; a dry run's probes) and the run is INCOMPLETE, every gap listed with its check, never a pass.

It prints three blocks — baseline, outage, recovery — with every check, its value, tolerance and pass/fail, then the
method's activities and the reasons. Exit codes (``EXIT_CODES``; the table of docs/experiment.md, "Reading the
verdict", says which to gate on): 0 PASS; 1 FAIL (a finding, a security finding, or a journal that disagrees with its
run's record); 2 UNREADABLE (not a complete journal) or UNVERIFIED (a journal that would pass, whose run record cannot
be read); 3 NOT RUN (an availability precondition: the baseline was unhealthy for a reason other than security, or
the safety control refused before changing anything); 4 DRY RUN; 5 NOT EXERCISED; 6 INCOMPLETE (nothing failed, but
a check could not be judged on this target: its gap says what to configure).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from chaosext.core import journal_record

__all__ = ["verdict", "judge", "render", "classify", "EXIT_CODES", "forgery_table", "security_findings",
           "closing_findings", "gaps", "journal_problem", "check_record", "RecordCheck"]

#: verdict -> exit code of ``chaosext verdict`` (gate a release on 0 only)
EXIT_CODES = {"PASS": 0, "FAIL": 1, "UNREADABLE": 2, "UNVERIFIED": 2, "NOT RUN": 3, "DRY RUN": 4,
              "NOT EXERCISED": 5, "INCOMPLETE": 6}
#: the keys every journal Chaos Toolkit writes has (a refused run's too)
JOURNAL_KEYS = ("experiment", "status", "steady_states", "run", "rollbacks")
JOURNAL_STATUSES = ("completed", "failed", "aborted", "interrupted")

#: output keys shown first when summarising a probe's value
_KEY_ORDER = ("ok", "phase", "error_rate", "max", "requests", "errors", "note", "cache_expired", "expired_services",
              "firing_prometheus", "in_alertmanager", "affected", "missing", "checks", "failed", "failures",
              "accepted_count", "inconclusive_count", "tried", "why")


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
    cov = res.get("coverage")
    if isinstance(cov, dict) and cov.get("tenants"):
        line = (f"    tenants: {cov.get('attacked')} of {cov['tenants']} attacked, {cov.get('pairs')} of "
                f"{cov.get('pairs_total')} class x tenant pairs")
        if cov.get("bound_ticks") is not None:
            line += (f"; the rotation attacks every class x tenant pair within {cov['bound_ticks']} ticks "
                     f"({cov.get('bound_seconds')}s), this outage had {cov.get('ticks')}")
        lines.append(line)
    for finding in (res.get("accepted") or [])[:3]:
        lines.append(f"    accepted: {finding.get('class')} ({finding.get('variant')}) {finding.get('service')} "
                     f"tenant {finding.get('tenant')} {finding.get('method')} {finding.get('route')} -> "
                     f"{finding.get('status')}")
    if res.get("why"):
        lines.append(f"    why: {res['why']}")
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


def _judge_step(journal: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, output) of the method's judge step (judge-outage, else judge-drill); ('', {}) when none."""
    for name in ("judge-outage", "judge-drill"):
        run = _activity(journal, name)
        if run is not None:
            return name, _output(run)
    return "", {}


#: where a forgery judgment was made -> how the verdict names that phase
_PHASES = {"before": "in the baseline, before the fault", "after": "in the recovery, after the restore",
           "outage": "during the outage"}


def _forgery_results(journal: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(phase, result) of every forgery judgment in the journal: the live probes of the baseline and the recovery,
    and the outage checks (recognised by their shape: a per-class table)."""
    found: list[tuple[str, dict[str, Any]]] = []
    states = journal.get("steady_states") or {}
    for when in ("before", "after"):
        for p in (states.get(when) or {}).get("probes") or []:
            out = p.get("output")
            if isinstance(out, dict) and isinstance(out.get("classes"), dict):
                found.append((when, out))
    for res in (_judge_step(journal)[1].get("checks") or {}).values():
        if isinstance(res, dict) and isinstance(res.get("classes"), dict):
            found.append(("outage", res))
    return found


def security_findings(journal: dict[str, Any]) -> list[str]:
    """Forged tokens accepted in any phase, key URLs a forged token named that a service fetched, and requests the
    services counted as accepted without a verified key: each a security failure, whatever else happened."""
    findings: list[str] = []
    for phase, res in _forgery_results(journal):
        where = _PHASES[phase]
        accepted = [a for a in res.get("accepted") or [] if isinstance(a, dict)]
        if res.get("accepted_count") or accepted:
            names = sorted({str(a.get("class")) for a in accepted}
                           | {n for n, c in (res.get("classes") or {}).items() if isinstance(c, dict)
                              and c.get("accepted")})
            first = accepted[0] if accepted else {}
            tenants = sorted({str(a.get("tenant")) for a in accepted})
            findings.append(f"SECURITY: {res.get('accepted_count') or len(accepted)} forged token(s) ACCEPTED {where}"
                            f" (classes {', '.join(names)}; tenants {', '.join(tenants)}); first: {first.get('class')}"
                            f" ({first.get('variant')}) on {first.get('service')} tenant {first.get('tenant')} "
                            f"{first.get('method')} {first.get('route')} -> {first.get('status')}")
        if res.get("key_url_fetched"):
            findings.append(f"SECURITY: a service fetched the key URL a forged token named {where} "
                            f"({', '.join(map(str, res['key_url_fetched']))})")
        backstop = res.get("metric_backstop")
        if isinstance(backstop, dict) and backstop.get("exported") and backstop.get("unverified_accepts"):
            findings.append(f"SECURITY: the services counted {backstop['unverified_accepts']:.0f} request(s) accepted "
                            f"without a verified key {where} ({backstop.get('selector')})")
    return list(dict.fromkeys(findings))


def closing_findings(journal: dict[str, Any]) -> list[str]:
    """What the run left behind, as the safety control recorded it when it closed the run (the journal's
    ``chaosext`` entry, ``closed``: sealed with the run's record): its fault not lifted, its k6 not stopped. Each
    fails the run, whatever the probes said."""
    closed = journal_record.closed_of(journal)
    if closed is None:
        return []
    run_id = str(journal_record.entry_of(journal).get("run_id") or "?")
    out = []
    if closed.get("fault_restored") is not True:
        out.append(f"THE FAULT WAS NOT LIFTED: the safety control's restore at the end of run {run_id} failed "
                   f"({closed.get('error') or 'no reason recorded'}); the JWKS may still be blocked from the target: "
                   f"run `chaosext restore --run-id {run_id}` (or `chaosext restore --all`) now")
    if closed.get("k6_stopped") is False:
        out.append(f"the k6 load of run {run_id} was not stopped when the run closed: it may still be driving the "
                   f"target; `chaosext restore --all` stops orphaned k6 runs")
    return out


def _not_judged(res: Any) -> bool:
    return isinstance(res, dict) and res.get("not_judged") is True


def gaps(journal: dict[str, Any]) -> list[str]:
    """Every check of the journal that could not be judged (its result says ``not_judged``), as ``check (phase):
    why`` — the result's ``gap`` names what to configure (a dry run's probes say so in their ``note``): the
    baseline probes, the outage checks of the judge step, the recovery probes, in that order."""
    states = journal.get("steady_states") or {}
    results: list[tuple[str, str, Any]] = [
        ((p.get("activity") or {}).get("name", "?"), "baseline", p.get("output"))
        for p in (states.get("before") or {}).get("probes") or []]
    results += [(name, "outage", res) for name, res in (_judge_step(journal)[1].get("checks") or {}).items()]
    results += [((p.get("activity") or {}).get("name", "?"), "recovery", p.get("output"))
                for p in (states.get("after") or {}).get("probes") or []]
    return list(dict.fromkeys(f"{name} ({phase}): {res.get('gap') or res.get('note') or 'no reason given'}"
                              for name, phase, res in results if _not_judged(res)))


def _not_exercised(journal: dict[str, Any]) -> str:
    """Why the outage did not exercise the stale-key path ('' when it did, or when this is not judge-outage): no
    service was seen serving stale keys or failing closed."""
    name, out = _judge_step(journal)
    checks = out.get("checks")
    if name != "judge-outage" or not isinstance(checks, dict):
        return ""
    degraded: set[str] = set()
    planned = None
    for res in checks.values():
        if isinstance(res, dict):
            for key in ("affected", "expired_services", "expired"):
                if isinstance(res.get(key), list):
                    degraded |= {str(x) for x in res[key]}
            planned = res.get("planned_seconds", planned)
    if degraded:
        return ""
    return (f"NOT EXERCISED: no service served stale keys or failed closed during the outage, so the stale-key path "
            f"was never run; is OUTAGE_SECONDS ({planned if planned is not None else '?'}s) shorter than the "
            f"services' JWKS TTL? Run an outage longer than the TTL (scripts/lab-experiment sets the lab's TTL to a "
            f"fifth of it), or expose the cache state (METRIC_CACHE_STALE) if your services hide it")


def journal_problem(journal: Any) -> str:
    """'' for a complete Chaos Toolkit journal (what `chaos run` writes, a refused run's too); else what is wrong."""
    if not isinstance(journal, dict):
        return "not a Chaos Toolkit journal (not a JSON object)"
    missing = [k for k in JOURNAL_KEYS if k not in journal]
    if missing:
        return f"not a complete Chaos Toolkit journal (no {', '.join(missing)})"
    if journal.get("status") not in JOURNAL_STATUSES:
        return f"not a finished Chaos Toolkit journal (status {journal.get('status')!r})"
    if not isinstance(journal.get("experiment"), dict) or not isinstance(journal.get("steady_states"), dict) \
            or not isinstance(journal.get("run"), list) or not isinstance(journal.get("rollbacks"), list):
        return "not a Chaos Toolkit journal (experiment, steady_states, run or rollbacks of the wrong type)"
    return ""


@dataclass
class RecordCheck:
    """The journal against its run's record: ``verified``, ``mismatch`` (the journal disagrees: ``why``),
    ``unavailable`` (the record cannot be read or trusted) or ``absent`` (the journal names no chaosext run)."""

    status: str
    why: list[str] = field(default_factory=list)
    run_dir: str = ""


def check_record(journal: dict[str, Any], run_dir: str = "") -> RecordCheck:
    """Compare the journal with the judged view its run sealed in ``run.json`` (``chaosext.core.journal_record``):
    the run directory the journal names (or ``run_dir``), its key, the record's own HMAC, the view, and the outage
    judgments the run recorded."""
    ext = journal_record.entry_of(journal)
    run_dir = run_dir or str(ext.get("run_dir") or "")
    if not run_dir:
        return RecordCheck("absent", ["the journal names no chaosext run (no 'chaosext' extension): it was not "
                                      "written by experiments/jwks-outage.json with the chaosext safety control"])
    path = Path(run_dir) / "run.json"
    try:
        run = json.loads(journal_record.read_private(path, "the run file"))
        key = journal_record.read_key(run_dir)
    except (OSError, ValueError) as exc:
        return RecordCheck("unavailable", [f"the run's record {path} cannot be read or trusted ({exc}); run the "
                                           f"verdict as the user who ran chaos, where it ran (or give --run-dir)"],
                           run_dir)
    record = run.get("journal_record") if isinstance(run, dict) else None
    run_id = str(run.get("run_id") or "") if isinstance(run, dict) else ""
    if not isinstance(record, dict) or not isinstance(record.get("view"), dict):
        return RecordCheck("unavailable", [f"run {run_id or '?'} recorded no journal ({path}): its safety control "
                                           f"did not finish"], run_dir)
    if ext.get("run_id") and ext.get("run_id") != run_id:
        return RecordCheck("mismatch", [f"the journal names run {ext.get('run_id')}, {path} is run {run_id}"], run_dir)
    if not journal_record.hmac_ok(key, run_id, record):
        return RecordCheck("mismatch", [f"the run's record in {path} was altered (its seal does not match)"], run_dir)
    why = journal_record.differences(journal_record.judged_view(journal), record["view"])
    why += _judgments_differ(journal, Path(run_dir))
    return RecordCheck("mismatch" if why else "verified", why, run_dir)


def _judgments_differ(journal: dict[str, Any], run_dir: Path) -> list[str]:
    """The judge step's checks in the journal against the judgments the run recorded in its outage notebook
    (``outage.json``; none recorded: nothing to compare)."""
    try:
        notebook = json.loads(journal_record.read_private(run_dir / "outage.json", "the outage notebook"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        return [f"the outage notebook cannot be read or trusted ({exc})"]
    judgments = notebook.get("judgments") if isinstance(notebook, dict) else None
    recorded = sorted(journal_record.canonical(v) for v in (judgments or {}).values())
    judged = _judge_step(journal)[1].get("checks") or {}
    if not recorded or sorted(journal_record.canonical(v) for v in judged.values()) == recorded:
        return []
    changed = [n for n, v in judged.items() if journal_record.canonical(v) not in recorded]
    return [f"the outage checks in the journal are not the judgments the run recorded in outage.json"
            f"{': ' + ', '.join(changed) if changed else ''}"]


def _failed_probes(state: dict[str, Any] | None) -> list[str]:
    return [(p.get("activity") or {}).get("name", "?") for p in (state or {}).get("probes") or []
            if not (p.get("tolerance_met") and p.get("status") == "succeeded")]


def classify(journal: dict[str, Any], record: RecordCheck | None = None) -> tuple[str, list[str]]:
    """(verdict, reasons): ``PASS`` | ``FAIL`` | ``UNREADABLE`` | ``UNVERIFIED`` | ``NOT RUN`` | ``DRY RUN`` |
    ``NOT EXERCISED`` | ``INCOMPLETE`` (``EXIT_CODES``). ``record``: the journal checked against its run's record
    (``check_record``; None = not checked, e.g. the report): a mismatch FAILS, and a journal that would pass (or
    would be NOT EXERCISED or INCOMPLETE) must be ``verified``."""
    if problem := journal_problem(journal):
        return "UNREADABLE", [problem]
    kind, reasons = _classify(journal)
    if record is None or kind in ("DRY RUN", "UNREADABLE"):
        return kind, reasons
    if record.status == "mismatch":
        return "FAIL", [f"THE JOURNAL DISAGREES WITH ITS RUN'S RECORD ({record.run_dir}): {w}" for w in record.why] \
            + reasons
    if kind in ("PASS", "NOT EXERCISED", "INCOMPLETE") and record.status != "verified":
        return "UNVERIFIED", [f"no pass without the run's record: {w}" for w in record.why] + reasons
    return kind, reasons


def _classify(journal: dict[str, Any]) -> tuple[str, list[str]]:
    """The journal alone: (verdict, reasons)."""
    if ((journal.get("experiment") or {}).get("dry")):
        return "DRY RUN", [f"chaos run --dry {journal['experiment']['dry']}: nothing was injected, nothing judged"]
    findings = security_findings(journal) + closing_findings(journal)
    unjudged = [f"not judged: {g}" for g in gaps(journal)]  # listed whatever the outcome; alone: INCOMPLETE
    states = journal.get("steady_states") or {}
    before = states.get("before")
    if before and not before.get("steady_state_met"):
        why = ["baseline unhealthy: no fault was injected; failing: " + ", ".join(_failed_probes(before) or ["?"])]
        return ("FAIL", findings + why + unjudged) if findings else ("NOT RUN", why + unjudged)
    if not before and not journal.get("run"):
        why = [f"refused before any change (run status {journal.get('status')!r}): see the safety control's "
               f"messages in the chaos output"]
        return ("FAIL", findings + why) if findings else ("NOT RUN", why)
    reasons = judge(journal)
    if reasons:
        return "FAIL", reasons + unjudged
    if stale := _not_exercised(journal):
        return "NOT EXERCISED", [stale, *unjudged]
    if unjudged:
        return "INCOMPLETE", unjudged
    return "PASS", []


def judge(journal: dict[str, Any]) -> list[str]:
    """Reasons the run did not pass ([] = pass), security findings first."""
    reasons: list[str] = security_findings(journal) + closing_findings(journal)
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
        closed = journal_record.closed_of(journal)
        if closed is not None and closed.get("fault_restored") is True:
            reasons.append("the method's restore-jwks-egress did not " + ("run" if restore is None else "succeed")
                           + "; the safety control lifted the fault when the run closed")
        elif closed is None:
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
        lines.append(f"  {_cut(name, cut_name):<{name_w}} {_result(ok, value):<6} "
                     f"{_cut(tol, cut_tol):<{tol_w}} {_short(value, val_w)}")
        lines += _top_errors(value, ok)
    return lines


def _result(ok: Any, res: Any) -> str:
    """A check's result column: PASS, FAIL, or GAP (it passed only because it could not be judged here)."""
    return "FAIL" if not ok else "GAP" if _not_judged(res) else "PASS"


def _top_errors(res: Any, ok: Any) -> list[str]:
    """A failing error-rate check's largest errors: status x service x tenant."""
    if ok or not isinstance(res, dict) or not res.get("top_errors"):
        return []
    return ["      top errors (status x service x tenant): " + ", ".join(
        f"{e.get('status')} {e.get('service')} {e.get('tenant') or '-'}: {e.get('errors')}" for e in res["top_errors"])]


def _state_block(title: str, st: dict[str, Any] | None, name_w: int, tol_w: int, val_w: int | None,
                 cut_name: int | None, cut_tol: int | None) -> list[str]:
    """One steady-state block (baseline or recovery): its title line, every probe, failed forgery tables."""
    if not st:
        return ["", f"{title}: not run"]
    unjudged = sum(_not_judged(p.get("output")) for p in st.get("probes") or [])
    return (["", f"{title}: {'held' if st.get('steady_state_met') else 'NOT MET'}"
                 + (f" ({unjudged} not judged: GAP, see the verdict)" if unjudged else "")]
            + _probe_lines(st, name_w, tol_w, val_w, cut_name, cut_tol) + _failed_forgery_tables(st))


def render(journal: dict[str, Any], width: int = 118, wide: bool = False, record: RecordCheck | None = None) -> str:
    """The one-screen report: security findings on top, baseline, outage and recovery blocks, then the verdict;
    ``wide``: nothing cut; ``record``: the journal checked against its run's record (``check_record``)."""
    lines = []
    exp = journal.get("experiment") or {}
    lines.append(f"chaosext verdict: {exp.get('title', '?')}")
    dur = journal.get("duration")
    lines.append(f"status={journal.get('status')} deviated={journal.get('deviated')} "
                 f"duration={dur:.0f}s" if isinstance(dur, (int, float)) else
                 f"status={journal.get('status')} deviated={journal.get('deviated')}")
    findings = security_findings(journal)
    if findings:
        lines += ["", "SECURITY FINDINGS (a forged token got in: the run FAILS, whatever else held):"]
        lines += [f"  ! {_cut(f, None if wide else width - 4)}" for f in findings]
    left = closing_findings(journal)
    if left:
        lines += ["", "LEFT BEHIND (the safety control could not undo this run's changes: the run FAILS):"]
        lines += [f"  ! {_cut(f, None if wide else width - 4)}" for f in left]
    if record is not None:
        lines.append(f"run record: {record.status}" + (f" ({record.run_dir})" if record.run_dir else "")
                     + (f": {record.why[0]}" if record.why and record.status != "verified" else ""))
    if journal_record.closed_of(journal) is not None and not left:
        lines.append("run closed: fault lifted, k6 stopped (the safety control's always-restore)")
    states = journal.get("steady_states") or {}
    name_w, tol_w = 30, 22
    val_w: int | None = None if wide else max(20, width - name_w - tol_w - 12)
    cut_name, cut_tol = (None, None) if wide else (name_w, tol_w)
    lines += _state_block("BASELINE (before the fault)", states.get("before"), name_w, tol_w, val_w, cut_name,
                          cut_tol)
    lines.append("")
    out = _judge_step(journal)[1]
    if out.get("checks"):
        unjudged = sum(_not_judged(r) for r in out["checks"].values())
        lines.append(f"OUTAGE: {'held' if not out.get('failed') else 'FAILED'} (every check, even after the first "
                     f"failure{f'; {unjudged} not judged: GAP, see the verdict' if unjudged else ''})")
        lines.append(f"  {'check':<{name_w}} {'result':<6} {'tolerance':<{tol_w}} value")
        for name, res in out["checks"].items():
            ok = isinstance(res, dict) and res.get("ok") is True
            lines.append(f"  {_cut(name, cut_name):<{name_w}} {_result(ok, res):<6} "
                         f"{'$.ok == true':<{tol_w}} {_short(res, val_w)}")
            lines += _top_errors(res, ok)
        forged = out["checks"].get("no-fail-open")
        if isinstance(forged, dict) and isinstance(forged.get("classes"), dict):
            lines += forgery_table(forged)
    else:
        why = out.get("why", "")
        lines.append(f"OUTAGE: not judged{f' ({why})' if why else ''}")
    lines += _state_block("RECOVERY (after the restore)", states.get("after"), name_w, tol_w, val_w, cut_name,
                          cut_tol)
    for where, title in (("run", "method"), ("rollbacks", "rollbacks")):
        runs = journal.get(where) or []
        if runs:
            lines.append("")
            lines.append(f"{title}: " + ", ".join(
                f"{(r.get('activity') or {}).get('name', '?')}={r.get('status')}" for r in runs))
    kind, reasons = classify(journal, record)
    lines.append("")
    if kind == "PASS":
        lines.append("VERDICT: PASS (baseline held, the outage held, exercised the stale-key path and passed every "
                     "check, the services recovered" + (", the journal matches its run's record)"
                                                        if record is not None else ")"))
    else:
        lines.append(f"VERDICT: {kind} (exit {EXIT_CODES[kind]})")
        lines.extend(f"  - {r}" for r in reasons)
    return "\n".join(lines)


@click.command("verdict")
@click.argument("journal_path", metavar="JOURNAL", type=click.Path(dir_okay=False), default="journal.json")
@click.option("--json", "as_json", is_flag=True, help="Print {pass, verdict, exit_code, reasons, security, gaps, "
                                                      "record} as JSON instead of the table.")
@click.option("--wide", is_flag=True, help="Cut nothing: every probe name, tolerance and value whole (long lines).")
@click.option("--run-dir", default="", metavar="DIR",
              help="The run's directory (<CHAOSEXT_RUN_DIR>/<run id>) holding the record the journal is checked "
                   "against; default: the one the journal names.")
def verdict(journal_path: str, as_json: bool, wide: bool, run_dir: str) -> None:
    """Judge a Chaos Toolkit journal: exit 0 only if the experiment really passed.

    \b
    PASS only when the baseline held, the fault was applied and verified, the outage held, exercised the stale-key
    path and passed every check, this run's restore succeeded and the run closed with its fault lifted, the services
    recovered, no forged token was accepted in any phase, and the journal agrees with its run's own record (run.json;
    run the verdict as the user who ran chaos). Gate a release on exit 0 only. Exit codes: 0 PASS, 1 FAIL (also: a
    forged token accepted in any phase, a fault left in place, or a journal that disagrees with its run's record), 2
    UNREADABLE / UNVERIFIED, 3 NOT RUN (availability precondition: no fault injected), 4 DRY RUN, 5 NOT EXERCISED (no
    cache went stale), 6 INCOMPLETE (a check could not be judged on this target: every gap is listed with what to
    configure). Table: docs/experiment.md.
    Example: chaos run experiments/jwks-outage.json; chaosext verdict journal.json
    Example: chaosext verdict --wide journal.json | less -S
    """
    try:
        with open(journal_path, encoding="utf-8") as fh:
            journal = json.load(fh)
        if problem := journal_problem(journal):
            raise ValueError(problem)
    except (OSError, ValueError) as exc:
        click.echo(f"chaosext verdict: cannot read {journal_path}: {exc}. Run `chaos run --journal-path "
                   f"{journal_path} experiments/jwks-outage.json` first.", err=True)
        sys.exit(EXIT_CODES["UNREADABLE"])
    record = check_record(journal, run_dir)
    kind, reasons = classify(journal, record)
    if as_json:
        click.echo(json.dumps({"pass": kind == "PASS", "verdict": kind, "exit_code": EXIT_CODES[kind],
                               "reasons": reasons, "security": security_findings(journal), "gaps": gaps(journal),
                               "record": {"status": record.status, "run_dir": record.run_dir, "why": record.why}}))
    else:
        click.echo(render(journal, wide=wide, record=record))
    sys.exit(EXIT_CODES[kind])
