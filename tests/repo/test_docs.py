"""The README and docs/*.md say what the code does: commands and options that exist, every experiment setting with its
default, the thresholds with their real values, the benchmark figures of the committed result, the names the
footprint page lists, links that resolve, and CI running exactly the README's test command."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, ROOT / "deploy" / "README.md", *DOCS]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.json"))
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def section(path: Path, heading: str) -> str:
    """The body of the markdown section whose heading line starts with ``heading`` (up to the next heading)."""
    body = text(path)
    found = re.search(rf"^#+ {re.escape(heading)}.*?$(.*?)(?=^#+ |\Z)", body, re.M | re.S)
    assert found, f"{rel(path)} has no section {heading!r}"
    return found.group(1)


def table_rows(markdown: str) -> list[list[str]]:
    """Cells of every markdown table row (separator rows left out)."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-| :]+\|$", line):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


# ---------------------------------------------------------------- the README's commands and CI


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", text(README), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    setup_and_lab, setup_and_test = readme_commands()[:2]
    assert setup_and_lab == "bash scripts/setup && scripts/lab-experiment"
    ci = [line.strip() for line in text(ROOT / ".ci" / "run").splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == setup_and_test, f".ci/run ends with {ci[-1]!r}, the README says {setup_and_test!r}"
    for script in ("scripts/setup", "scripts/lab-experiment", "scripts/test"):
        assert (ROOT / script).is_file(), script


def test_readme_first_screen_links_the_footprint_page() -> None:
    first_screen = "\n".join(text(README).splitlines()[:40])
    assert "(docs/footprint.md)" in first_screen
    assert "(docs/security.md)" in first_screen, "the first screen must link the security model (it runs as root)"
    assert ".venv/bin" in first_screen and "PATH" in first_screen, "the first screen must say how to get chaos on PATH"


# ---------------------------------------------------------------- every command shown exists, with its options


def _code(path: Path) -> Iterator[str]:
    """Shell command lines shown in ``path``: fenced shell blocks (continuations joined) and inline code spans."""
    body = text(path)
    for lang, block in re.findall(r"^```(\w*)\n(.*?)^```", body, re.M | re.S):
        if lang in SHELL_LANGS:
            yield from block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"^```.*?^```", "", body, flags=re.M | re.S)
    yield from re.findall(r"`((?:chaosext|chaos) [^`]+)`", prose.replace("\n", " "))


def shown_commands(path: Path) -> Iterator[tuple[str, list[str]]]:
    """``(line, argv)`` of every ``chaosext ...`` / ``chaos ...`` invocation shown in ``path``."""
    for line in _code(path):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        cmd: list[str] = []
        for word in [*words, ";"]:
            if word in ("&&", "||", ";", "|") or word.endswith(";"):
                if word.endswith(";") and len(word) > 1:
                    cmd.append(word[:-1])
                while cmd and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[0]):  # VAR=value prefixes
                    cmd.pop(0)
                if cmd and cmd[0].rsplit("/", 1)[-1] in ("chaosext", "chaos"):
                    yield line.strip(), [cmd[0].rsplit("/", 1)[-1], *cmd[1:]]
                cmd = []
            else:
                cmd.append(word)


def _root(name: str) -> click.Command:
    if name == "chaosext":
        from chaosext.cli import main
        return main
    from chaostoolkit.cli import cli
    return cli


def check_invocation(argv: list[str]) -> list[str]:
    """Problems with ``argv`` against the real click command tree (unknown command, option or choice)."""
    cmd = _root(argv[0])
    path = [argv[0]]
    problems = []
    words = argv[1:]
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if isinstance(cmd, click.Group) and not word.startswith("-"):
            if word.endswith(":"):  # a log line's prefix ("chaosext safety: ..."), not an invocation
                break
            if "/" in word and all(w in cmd.commands for w in word.split("/")):  # "lab up/down/status"
                word = word.split("/")[0]
            if word not in cmd.commands:
                problems.append(f"`{' '.join(path)} {word}`: no such command")
                break
            cmd = cmd.commands[word]
            path.append(word)
            continue
        if not word.startswith("-") or word == "-":
            continue
        name, _, inline = word.partition("=")
        params = {o: p for p in cmd.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}
        if name in ("--help", "-h"):
            continue
        if name not in params:
            problems.append(f"`{' '.join(path)}` has no option {name}")
            continue
        param = params[name]
        if param.is_flag or param.count:
            continue
        value = inline if inline else (words[i] if i < len(words) else "")
        i += 0 if inline else 1
        if isinstance(param.type, click.Choice) and not re.search(r"[<$]", value) \
                and value not in param.type.choices:
            problems.append(f"`{' '.join(path)} {name} {value}`: not one of {', '.join(param.type.choices)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_command_shown_exists_with_its_options(page: Path) -> None:
    problems = [f"{line}  ->  {p}" for line, argv in shown_commands(page) for p in check_invocation(argv)]
    assert not problems, f"{rel(page)} shows commands the code does not have:\n" + "\n".join(problems)


def test_the_command_check_catches_a_wrong_command_option_or_choice(tmp_path: Path) -> None:
    assert check_invocation(["chaosext", "restore", "--all"]) == []
    assert check_invocation(["chaos", "run", "--rollback-strategy", "always", "x.json"]) == []
    assert check_invocation(["chaosext", "lab", "upp"])
    assert check_invocation(["chaosext", "restore", "--everything"])
    assert check_invocation(["chaosext", "doctor", "--via", "nftables"])
    assert check_invocation(["chaos", "run", "--no-such-flag", "x.json"])
    assert check_invocation(["chaosext", "lab", "up/down/status"]) == []
    assert check_invocation(["chaosext", "lab", "up/dwn"])
    page = tmp_path / "page.md"
    page.write_text("```bash\nFAULT_VIA=envoy chaosext restore --all --nope && chaosext lab down\n```\n"
                    "Prose with `chaosext lab bogus` in it.\n")
    found = [argv for _, argv in shown_commands(page)]
    assert found == [["chaosext", "restore", "--all", "--nope"], ["chaosext", "lab", "down"],
                     ["chaosext", "lab", "bogus"]]


# ---------------------------------------------------------------- every experiment setting documented with its default


def documented_settings() -> dict[str, str]:
    """``{ENV_KEY: default cell}`` of docs/experiment.md's Configuration table."""
    out = {}
    for cells in table_rows(section(ROOT / "docs" / "experiment.md", "Configuration")):
        if len(cells) >= 2:
            for key in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]):
                out[key] = cells[1].replace("`", "").strip()
    return out


def built_in_default(key: str) -> str:
    """The default ``load_config`` falls back to for the setting ``key`` (as the docs would write it; '' when the
    setting has no plain default)."""
    from chaosext.core.config import SETTINGS, ExperimentConfig

    name = SETTINGS.get(key.lower())
    if name is None:
        return ""
    value = getattr(ExperimentConfig(), name)
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=rel)
def test_every_configuration_key_is_in_docs_experiment_md_with_its_default(experiment: Path) -> None:
    documented = documented_settings()
    problems = []
    for name, entry in json.loads(text(experiment))["configuration"].items():
        if not (isinstance(entry, dict) and entry.get("type") == "env"):
            key, default = name, entry
        else:
            key, default = entry["key"], entry.get("default", "")
        if key not in documented:
            problems.append(f"{key} (configuration.{name}) is not in the table")
        elif str(default) != "" and documented[key] != str(default) and not (
                documented[key].split(" (")[0] == str(default)  # "0.5 (jwks-expiry-drill: 2)": per-experiment
                or f"{experiment.stem}: {default})" in documented[key]):
            problems.append(f"{key}: the experiment's default is {default!r}, the docs say {documented[key]!r}")
        elif str(default) == "" and documented[key] and not re.search(r"lab|target|<|\+", documented[key]) \
                and documented[key] != built_in_default(key):
            problems.append(f"{key}: no default in the experiment (the target's value, the built-in default or "
                            f"computed), the docs say {documented[key]!r}, the built-in default is "
                            f"{built_in_default(key)!r}")
    assert not problems, f"docs/experiment.md, Configuration vs {rel(experiment)}:\n" + "\n".join(problems)


# ---------------------------------------------------------------- the runbook


def experiment_env_keys() -> set[str]:
    return {e["key"] for x in EXPERIMENTS for e in json.loads(text(x))["configuration"].values()
            if isinstance(e, dict) and e.get("type") == "env"}


def test_runbook_real_environment_list_names_what_a_real_target_needs() -> None:
    body = text(ROOT / "docs" / "runbook.md")
    para = body[body.index("### Against a real environment"):].split("\n\n", 2)[1]  # the paragraph under it
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", para))
    assert named <= experiment_env_keys(), f"not settings of the experiment: {named - experiment_env_keys()}"
    needed = {"FAULT_VIA", "FAULT_TARGET", "CHAOSEXT_APPROVE", "JWKS_URL", "AUTHORITY_URL", "SERVICE_URLS",
              "PROMETHEUS_URL", "ALERTMANAGER_URL", "AUDIT_SOURCE", "TOKENS_FILE", "JWKS_TTL", "JWKS_MAX_STALE",
              "OUTAGE_SECONDS"}
    assert needed <= named, f"missing from the runbook's list: {sorted(needed - named)}"
    assert "experiment.md#configuration" in para, "the list must point at the full table"


def _default(env_key: str) -> float:
    """The main experiment's default (the drill overrides some, e.g. ABORT_ERROR_RATE, and says so in the docs)."""
    for x in [ROOT / "experiments" / "jwks-outage.json"]:
        for e in json.loads(text(x))["configuration"].values():
            if isinstance(e, dict) and e.get("key") == env_key:
                return float(e["default"])
    raise AssertionError(f"{env_key} is not a setting of any experiment")


def _percent(cell: str) -> float:
    return float(re.search(r"([\d.]+) %", cell).group(1)) / 100


def test_thresholds_table_has_the_values_the_code_and_rules_use() -> None:
    from chaosext.core.config import ExperimentConfig

    rows = {cells[0]: cells for cells in table_rows(section(ROOT / "docs" / "runbook.md",
                                                            "Error thresholds"))[1:]}
    assert set(rows) == {"SLO", "experiment tolerance", "a person's abort", "automatic abort guard"}
    alerts = yaml.safe_load(text(ROOT / "ops" / "devops" / "tenant" / "alerts.yaml"))
    slo_rule = next(r for g in alerts["groups"] for r in g["rules"] if r.get("alert") == "tenant_error_rate_gt_0_5pct")
    slo = float(re.search(r">\s*([\d.]+)", slo_rule["expr"]).group(1))
    assert _percent(rows["SLO"][1]) == pytest.approx(slo)
    assert _percent(rows["experiment tolerance"][1]) == pytest.approx(_default("ERROR_RATE_MAX"))
    assert _default("ERROR_RATE_MAX") == pytest.approx(ExperimentConfig().error_rate_max)
    guard = rows["automatic abort guard"]
    assert _percent(guard[1]) == pytest.approx(_default("ABORT_ERROR_RATE")) \
        == pytest.approx(ExperimentConfig().abort_error_rate)
    assert f"for {int(_default('ABORT_AFTER_SECONDS'))} s" in guard[1]
    # the person's abort is the runbook's own rule: the table and the "what to watch" table say the same
    watch = section(ROOT / "docs" / "runbook.md", "During the run")
    assert f"above {rows[chr(97) + ' person' + chr(39) + 's abort'][1]}" in watch
    # the README quotes the same figures
    readme = text(README)
    assert f"`ERROR_RATE_MAX` ({rows['experiment tolerance'][1]})" in readme
    for cells in rows.values():
        assert cells[1].split(" for ")[0] in readme, f"README does not name the {cells[0]} ({cells[1]})"


# ---------------------------------------------------------------- the verdict's exit codes: one table, no contradiction
WORKFLOW = ROOT / ".github" / "workflows" / "jwks-outage.yml"
VERDICT_NAMES = r"(PASS|FAIL|UNREADABLE|UNVERIFIED|NOT RUN|DRY RUN|NOT EXERCISED|INCOMPLETE)"


def _exit_code_claims(body: str) -> set[tuple[str, int]]:
    """(verdict, exit code) pairs a text states: "3 NOT RUN", "NOT EXERCISED (5)", "FAIL (exit 1)", "exit 5 ... "."""
    pairs = {(m.group(2), int(m.group(1))) for m in re.finditer(rf"\b([0-9]) `?{VERDICT_NAMES}\b", body)}
    pairs |= {(m.group(1), int(m.group(2))) for m in re.finditer(rf"\b{VERDICT_NAMES}`? \((?:exit )?([0-9])\)", body)}
    return pairs


def test_the_verdicts_exit_codes_are_one_table_that_says_what_to_gate_on() -> None:
    """docs/experiment.md#exit-codes is THE table (every verdict, its code, whether a gate passes); README, the
    runbook and the gated workflow point at it, say to gate on 0 only, and never state another code for a verdict;
    nor do `chaosext verdict --help` and the verdict module."""
    from click.testing import CliRunner

    from chaosext import verdict as verdict_module

    doc = text(ROOT / "docs" / "experiment.md")
    table = doc.split('<a id="exit-codes"></a>', 1)[1].split("\n\n", 2)[1]
    rows = table_rows(table)
    assert rows[0][:4] == ["exit", "verdict", "meaning", "a gate"]
    listed = {cells[1].strip("`"): int(cells[0]) for cells in rows[1:]}
    assert listed == verdict_module.EXIT_CODES
    gate = {cells[1].strip("`"): cells[3] for cells in rows[1:]}
    assert gate.pop("PASS") == "**pass**" and set(gate.values()) == {"block"}
    helptext = CliRunner().invoke(verdict_module.verdict, ["--help"]).output
    for name, body in (("README.md", text(README)), ("docs/runbook.md", text(ROOT / "docs" / "runbook.md")),
                       ("the workflow", text(WORKFLOW)), ("verdict --help", helptext),
                       ("chaosext/verdict.py", verdict_module.__doc__ or ""), ("docs/experiment.md", doc)):
        wrong = {(v, c) for v, c in _exit_code_claims(body) if verdict_module.EXIT_CODES.get(v) != c}
        assert not wrong, f"{name} states exit codes the verdict does not use: {sorted(wrong)}"
    for name, body in (("README.md", text(README)), ("docs/runbook.md", text(ROOT / "docs" / "runbook.md"))):
        assert "experiment.md#exit-codes" in body and re.search(r"(gate|PASS).{0,40}exit 0 only|exit 0 only", body), \
            name
    workflow = text(WORKFLOW)
    assert "docs/experiment.md#exit-codes" in workflow and "only exit 0 (PASS)" in workflow
    assert "gate on exit 0 only" in helptext.lower().replace("\n", " ").replace("  ", " ") or \
        "Gate a release on exit 0 only" in helptext


def test_the_exit_code_check_catches_a_contradiction() -> None:
    assert _exit_code_claims("exit codes: 3 not run, 3 NOT RUN, `NOT EXERCISED` (5), FAIL (exit 1)") == {
        ("NOT RUN", 3), ("NOT EXERCISED", 5), ("FAIL", 1)}
    assert ("NOT RUN", 2) in _exit_code_claims("2 NOT RUN")


# ---------------------------------------------------------------- benchmark figures come from the committed result


def _bench_readme() -> Any:
    loader = importlib.machinery.SourceFileLoader("bench_readme", str(ROOT / "scripts" / "bench-readme"))
    spec = importlib.util.spec_from_loader("bench_readme", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


BENCH_RESULT = ROOT / "bench-results" / "bench.json"


@pytest.mark.xfail(not BENCH_RESULT.exists(), strict=True,
                   reason="no committed bench-results/bench.json backs the README's benchmark figures yet: run "
                          "scripts/bench on a quiet machine, commit the result, then scripts/bench-readme --write")
def test_readme_benchmark_table_is_the_committed_result() -> None:
    bench = _bench_readme()
    assert BENCH_RESULT.exists(), "bench-results/bench.json is not committed"
    current = bench.readme_block(text(README))
    assert current is not None, "README.md lost its bench:begin/bench:end markers"
    expected = bench.render(json.loads(text(BENCH_RESULT)))
    assert current == expected, "README's Benchmark table differs from the committed result; run " \
                                "`scripts/bench-readme --write`. Expected:\n" + expected


def test_bench_readme_renders_every_part_of_a_result() -> None:
    bench = _bench_readme()
    row = {"target_rate": 5000, "achieved_rate": 4912.4, "p95_read_ms": 23.8, "p95_write_ms": 18.4,
           "error_rate": 0.0, "dropped_iterations": 2641, "requests": 150123, "cpu_cores": {"k6": 0.84, "servers": 0.8}}
    res = {"date": "2026-11-29T10:00:00+00:00",
           "machine": {"cpus": 2, "loadavg_start": [0.13, 0, 0], "k6": "k6 v1.1.0"},
           "a": {"lab": row, "bare": {**row, "achieved_rate": 4964.0},
                 "ratio_lab_over_bare": {"achieved_rate": 0.989, "p95_read_ms": 1.31, "p95_write_ms": 1.48}},
           "b": {"apply_median_ms": 19.1, "apply_max_ms": 25.2, "revert_median_ms": 24.8, "revert_max_ms": 38.7,
                 "runs": 20},
           "c": {"skipped": "RuntimeError: no netns"},
           "d": {"overhead_seconds": 9.2, "wall_seconds": 19.2, "outage_seconds": 10}}
    block = bench.render(res)
    for shown in ("lab 4,912", "bare aiohttp+uvloop 4,964", "19.1 ms", "max 38.7 ms", "| (c) block->degraded, "
                  "expiry->alert | skipped | RuntimeError: no netns |", "9.2 s", "Measured 2026-11-29 on a 2-CPU",
                  "load average 0.13"):
        assert shown in block, shown
    assert bench.readme_block("x\n" + block + "\ny") == block


SCALE_RESULT = ROOT / "bench-results" / "egress-scale.json"


def test_readme_fleet_scale_table_is_the_committed_result() -> None:
    bench = _bench_readme()
    assert SCALE_RESULT.exists(), "bench-results/egress-scale.json is not committed"
    current = bench.readme_block(text(README), bench.SCALE_BEGIN, bench.SCALE_END)
    assert current is not None, "README.md lost its bench-scale:begin/bench-scale:end markers"
    expected = bench.render_scale(json.loads(text(SCALE_RESULT)))
    assert current == expected, "README's fleet-scale table differs from the committed result; run " \
                                "`scripts/bench-readme --write`. Expected:\n" + expected


def test_bench_readme_renders_a_fleet_scale_result() -> None:
    bench = _bench_readme()
    row = {"runs": 3, "apply_spread_s": 0.009, "apply_cpu_s": 2.42, "revert_spread_s": 0.142, "revert_cpu_s": 2.18,
           "cli_block_s": 4.06, "cli_restore_s": 3.6}
    res = {"date": "2026-12-07T01:31:54+00:00", "runs": 3, "verify_timeout_s": 1.0, "local_verify_timeout_s": 0.2,
           "machine": {"cpus": 2, "loadavg_start": [3.33, 0, 0], "loadavg_end": [25.1, 0, 0],
                       "iptables": "iptables v1.8.9 (nf_tables)"},
           "rows": [{**row, "targets": 100, "mode": "drop", "apply_s": 0.502, "revert_s": 0.244},
                    {**row, "targets": 1000, "mode": "drop", "apply_s": 3.347, "revert_s": 2.87}],
           "growth": {"drop": {"apply_ms_per_target": {"100->1000": 3.161},
                               "revert_ms_per_target": {"100->1000": 2.918}}}}
    block = bench.render_scale(res)
    for shown in ("| 1,000 | drop | 3,347 ms | 9 ms | 2,870 ms | 142 ms | 2.42 s / 2.18 s | 4.06 s / 3.60 s |",
                  "| 100 | drop | 502 ms |", "Growth, drop (ms per extra target, apply + verify / revert + verify): "
                  "100→1000: 3.16 / 2.92.", "Measured 2026-12-07 on a 2-CPU machine (load average 3.33 at the start",
                  "median of 3 runs", "drop-mode check 0.2 s"):
        assert shown in block, shown
    assert bench.readme_block("x\n" + block + "\ny", bench.SCALE_BEGIN, bench.SCALE_END) == block


# ---------------------------------------------------------------- no contradictions left over


def test_no_page_is_written_for_the_readme() -> None:
    left = [rel(p) for p in PAGES if "for the README" in text(p)]
    assert not left, f"pages still saying 'for the README': {left}"


def test_docs_run_tests_through_scripts_test() -> None:
    """On a stock distribution `python3` has no pytest (and must not get one): tests run from .venv via scripts/test."""
    bare = [f"{rel(p)}: {m}" for p in PAGES for m in re.findall(r"`(python3 -m pytest[^`]*)`", text(p))]
    assert not bare, "use scripts/test instead:\n" + "\n".join(bare)


def test_iptables_latency_figures_are_written_only_in_the_readme() -> None:
    pattern = re.compile(r"(apply|revert)\s*\+\s*verify[^|\n]*?\d+(\.\d+)?\s*ms", re.I)
    elsewhere = [rel(p) for p in DOCS if pattern.search(text(p))]
    assert not elsewhere, f"iptables latency figures outside the README's benchmark table: {elsewhere}"


def test_lab_md_says_what_lab_experiment_does() -> None:
    line = next(ln for ln in text(ROOT / "docs" / "lab.md").splitlines() if ln.startswith("scripts/lab-experiment"))
    script = text(ROOT / "scripts" / "lab-experiment")
    assert "chaos run" in script and "chaosext verdict" in script and "lab down" in script
    for what in ("experiment", "verdict", "down"):
        assert what in line, f"docs/lab.md: `{line}` does not mention the {what}"


# ---------------------------------------------------------------- the footprint page names what the code creates


def test_footprint_names_what_the_code_creates() -> None:
    import inspect

    from chaosext.core.config import ExperimentConfig
    from chaosext.core.labstate import DEFAULT_STATE_DIR
    from chaosext.core.safefs import ROOT_STATE_DIR
    from chaosext.egress import watchdog
    from chaosext.egress.envoy import DEFAULT_PREFIX, EnvoyDriver
    from chaosext.egress.kubernetes import DEBUG_CONTAINER
    from chaosext.load.actions import start_k6_testrun

    page = text(ROOT / "docs" / "footprint.md")
    k6_defaults = {n: p.default for n, p in inspect.signature(start_k6_testrun).parameters.items()}
    run_base = getattr(ExperimentConfig(), "run_base", "") or ExperimentConfig().run_dir
    names = [DEFAULT_STATE_DIR, run_base, "~/.chaosext/faults", "CHAOSEXT-<run_id>",
             "chaosext:<run_id>", "chaosext-jwks-<run_id>", watchdog.MODULE, "<run_id>.watchdog.log",
             k6_defaults["name"], k6_defaults["configmap"], ".venv", "journal.json", "chaostoolkit.log",
             "app.kubernetes.io/managed-by=chaosext", "chaosext.io/expires-at", "ip6tables", "position 1 of OUTPUT",
             # issue 27: root's own places, and the debug container Kubernetes cannot remove
             ROOT_STATE_DIR, DEBUG_CONTAINER, "security.md"]
    names += [k.replace(DEFAULT_PREFIX, "chaosext.jwks") for k in EnvoyDriver({}).all_keys()
              if k.endswith(("run_id", "expires_at"))]
    names += [k.rsplit(".", 2)[-2] + "." + k.rsplit(".", 1)[-1] for k in EnvoyDriver({}).all_keys()
              if ".abort." in k or ".delay." in k]
    missing = [n for n in names if n not in page]
    assert not missing, f"docs/footprint.md does not name: {missing}"
    setup = text(ROOT / "scripts" / "setup")
    packages = re.search(r"APT_PACKAGES=\(([^)]*)\)", setup).group(1).split()
    assert f"`{' '.join(packages)}`" in page, "docs/footprint.md's Debian package list differs from scripts/setup"


# ---------------------------------------------------------------- links


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text(page)):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve()
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md":
            body = text(dest)
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                     for h in re.findall(r"^#+ (.*)$", body, re.M)}
            slugs |= set(re.findall(r'<a id="([^"]+)"', body))
            if anchor not in slugs:
                broken.append(target)
    assert not broken, f"{rel(page)}: links that do not resolve: {broken}"
