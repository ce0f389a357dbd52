"""Run one job of a GitHub Actions workflow here the way a GitHub-hosted runner runs it (for the workflow tests).

What is real: every ``run:`` step runs in order as ``bash --noprofile --norc -eo pipefail <script>`` (the runner's
default shell on Linux) in ``GITHUB_WORKSPACE``, as the runner's own non-root user (a throwaway account with
passwordless sudo, as GitHub's ``runner`` user has), so every ``sudo`` in a step is the real sudo with Debian's
``env_reset`` and ``secure_path``; with the workflow's, the job's and the step's ``env`` (expressions evaluated), the
runner's own variables (``GITHUB_WORKSPACE``, ``RUNNER_TEMP``, ``GITHUB_ENV``, ``GITHUB_PATH``, ``GITHUB_OUTPUT``,
``GITHUB_STEP_SUMMARY``, ``CI``, ``HOME``) and what earlier steps appended to ``GITHUB_ENV`` / ``GITHUB_PATH``;
``if:`` conditions with the runner's implicit ``success() &&``, the status functions, ``steps.<id>.outcome``,
``inputs``, ``vars``, ``secrets`` (unset = empty string), ``env``, ``github``, ``runner`` and ``hashFiles``; a failed
step fails the job and only ``always()``/``failure()`` steps run after it. Optionally every step runs inside a
network namespace (``netns``), so the job's processes, ports and iptables rules stay in it.

What is emulated, minimally (no GitHub service exists here): ``actions/checkout`` copies this checkout's tracked
files (their working-tree content) into the workspace, owned by the runner user; ``actions/upload-artifact`` packs
its ``path`` entries with tar *as the runner user* (as the action's node process would read them) into
``<root>/artifacts/<name>.tar`` and fails when a file is unreadable; any other action fails the step. The
environment's protection rule (the approval) is taken as given; ``timeout-minutes`` bounds each step.
"""
from __future__ import annotations

import glob
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Runner", "StepResult", "JobResult", "evaluate", "substitute", "RUNNER_PATH"]

#: the PATH of a fresh runner (no virtual environment on it)
RUNNER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STATUS_FUNCTIONS = ("success", "failure", "always", "cancelled")


# ------------------------------------------------------------------------------------------------ expressions
_TOKEN = re.compile(r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'(?:[^']|'')*')|(?P<op>&&|\|\||==|!=|<=|>=|[!<>().,\[\]])"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))")


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot parse expression at {expr[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _truthy(v: Any) -> bool:
    return not (v is None or v is False or v == 0 or v == "")


def _num(v: Any) -> float:
    if v is None or v is False:
        return 0.0
    if v is True:
        return 1.0
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(str(v).strip() or 0)
    except ValueError:
        return float("nan")


def _equal(a: Any, b: Any) -> bool:
    """GitHub's loose equality: same-type values compare directly (strings case-insensitively), else as numbers."""
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if type(a) is type(b) and not isinstance(a, int | float):
        return bool(a == b)
    return _num(a) == _num(b)


class _Parser:
    def __init__(self, expr: str, ctx: dict[str, Any], functions: dict[str, Callable[..., Any]]) -> None:
        self.toks = _tokens(expr)
        self.i = 0
        self.ctx = ctx
        self.functions = functions

    def peek(self) -> str:
        return self.toks[self.i][1] if self.i < len(self.toks) else ""

    def take(self, want: str = "") -> tuple[str, str]:
        tok = self.toks[self.i]
        if want and tok[1] != want:
            raise ValueError(f"expected {want!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        value = self.or_()
        if self.i != len(self.toks):
            raise ValueError(f"unexpected {self.peek()!r}")
        return value

    def or_(self) -> Any:
        left = self.and_()
        while self.peek() == "||":
            self.take()
            right = self.and_()
            left = left if _truthy(left) else right
        return left

    def and_(self) -> Any:
        left = self.cmp()
        while self.peek() == "&&":
            self.take()
            right = self.cmp()
            left = right if _truthy(left) else left
        return left

    def cmp(self) -> Any:
        left = self.unary()
        while self.peek() in ("==", "!=", "<", "<=", ">", ">="):
            op = self.take()[1]
            right = self.unary()
            if op in ("==", "!="):
                left = _equal(left, right) == (op == "==")
            else:
                a, b = _num(left), _num(right)
                left = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        return left

    def unary(self) -> Any:
        if self.peek() == "!":
            self.take()
            return not _truthy(self.unary())
        return self.postfix()

    def postfix(self) -> Any:
        value = self.primary()
        while self.peek() in (".", "["):
            if self.take()[1] == ".":
                key = self.take()[1]
            else:
                key = self.or_()
                self.take("]")
            value = value.get(str(key)) if isinstance(value, dict) else None
        return value

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if text == "(":
            value = self.or_()
            self.take(")")
            return value
        if kind != "name":
            raise ValueError(f"unexpected {text!r}")
        if text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        if self.peek() == "(":
            self.take()
            args = []
            while self.peek() != ")":
                args.append(self.or_())
                if self.peek() == ",":
                    self.take()
            self.take(")")
            if text not in self.functions:
                raise ValueError(f"function {text}() is not emulated")
            return self.functions[text](*args)
        if text not in self.ctx:
            raise ValueError(f"unknown context {text!r}")
        return self.ctx[text]


def evaluate(expr: str, ctx: dict[str, Any], functions: dict[str, Callable[..., Any]] | None = None) -> Any:
    """The value of a GitHub expression (without ``${{ }}``) in the contexts ``ctx``."""
    return _Parser(expr, ctx, functions or {}).parse()


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def substitute(text: Any, ctx: dict[str, Any], functions: dict[str, Callable[..., Any]] | None = None) -> str:
    """``text`` with every ``${{ expr }}`` replaced by its value as the runner formats it."""
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: _as_text(evaluate(m.group(1), ctx, functions)), _as_text(text))


# ------------------------------------------------------------------------------------------------ results
@dataclass
class StepResult:
    name: str
    id: str
    outcome: str  # success | failure | skipped
    returncode: int | None = None
    output: str = ""
    seconds: float = 0.0
    env: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass
class JobResult:
    name: str
    ran: bool
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.ran and all(s.outcome != "failure" for s in self.steps)

    def step(self, name_part: str) -> StepResult:
        return next(s for s in self.steps if name_part in s.name)

    def order(self) -> list[str]:
        """Names of the steps that ran, in order."""
        return [s.name for s in self.steps if s.outcome != "skipped"]


# ------------------------------------------------------------------------------------------------ the runner
class Runner:
    """A runner for one workflow: ``root`` holds the workspace, the runner's temp, its home and the artifacts."""

    def __init__(self, workflow: dict[str, Any], repo: Path, root: Path, user: str, netns: str = "",
                 runner_env: dict[str, str] | None = None, step_timeout: float = 900,
                 log: Callable[[str], None] = print) -> None:
        self.workflow = workflow
        self.repo = repo
        self.root = root
        self.user = user
        self.pw = pwd.getpwnam(user)
        self.netns = netns
        self.runner_env = dict(runner_env or {})
        self.step_timeout = step_timeout
        self.log = log
        self.workspace = root / "work" / repo.name
        self.temp = root / "temp"
        self.home = root / "home"
        self.artifacts = root / "artifacts"

    # -- helpers
    def _owned_dir(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, self.pw.pw_uid, self.pw.pw_gid)
        return path

    def _as_user(self, argv: list[str]) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return prefix + ["setpriv", f"--reuid={self.pw.pw_uid}", f"--regid={self.pw.pw_gid}", "--init-groups",
                         "--", *argv]

    def _hash_files(self, *patterns: Any) -> str:
        files = sorted({f for p in patterns for f in glob.glob(str(self.workspace / str(p)), recursive=True)
                        if os.path.isfile(f)})
        if not files:
            return ""
        outer = hashlib.sha256()
        for f in files:
            outer.update(hashlib.sha256(Path(f).read_bytes()).digest())
        return outer.hexdigest()

    # -- actions
    def _checkout(self) -> tuple[int, str]:
        tracked = subprocess.run(["git", "-C", str(self.repo), "ls-files", "-z"], capture_output=True, check=True,
                                 timeout=60).stdout.decode().split("\0")
        for rel in filter(None, tracked):
            src = self.repo / rel
            if not src.is_file():
                continue  # deleted in the working tree
            dest = self.workspace / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        subprocess.run(["chown", "-R", f"{self.pw.pw_uid}:{self.pw.pw_gid}", str(self.workspace)], check=True,
                       timeout=60)
        return 0, f"emulated actions/checkout: {len(tracked)} tracked files of {self.repo} copied"

    def _upload(self, with_: dict[str, str]) -> tuple[int, str]:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        paths = [p.strip() for p in with_.get("path", "").splitlines() if p.strip()]
        present = [p for p in paths if (self.workspace / p).exists()]
        dest = self.artifacts / f"{with_.get('name', 'artifact')}.tar"
        if not present:
            code = 1 if with_.get("if-no-files-found") == "error" else 0
            return code, f"emulated actions/upload-artifact: no files found for {paths}"
        # the action's node process runs as the runner user: what it cannot read fails the upload
        proc = subprocess.run(self._as_user(["tar", "-cf", "-", *present]), cwd=self.workspace, capture_output=True,
                              timeout=300, check=False)
        dest.write_bytes(proc.stdout)
        return proc.returncode, f"emulated actions/upload-artifact {present} -> {dest}\n" + proc.stderr.decode()

    # -- the job
    def run_job(self, job_name: str, inputs: dict[str, Any], vars_: dict[str, str] | None = None,
                secrets: dict[str, str] | None = None) -> JobResult:
        job = self.workflow["jobs"][job_name]
        for d in (self.workspace, self.temp, self.home):
            self._owned_dir(d)
        github = {"workspace": str(self.workspace), "event_name": "workflow_dispatch", "job": job_name,
                  "repository": f"owner/{self.repo.name}"}
        runner = {"temp": str(self.temp), "os": "Linux", "arch": "X64"}

        class Vars(dict[str, Any]):
            def get(self, key: str, default: Any = "") -> Any:  # an unset variable/secret is ''
                return super().get(key, "")

        ctx: dict[str, Any] = {"inputs": dict(inputs), "vars": Vars(vars_ or {}), "secrets": Vars(secrets or {}),
                               "github": github, "runner": runner, "env": {}, "steps": {}, "job": {}}
        failed = False
        functions: dict[str, Callable[..., Any]] = {
            "success": lambda: not failed, "failure": lambda: failed, "always": lambda: True,
            "cancelled": lambda: False, "hashFiles": self._hash_files,
            "contains": lambda a, b: str(b).lower() in str(a).lower(),
            "startsWith": lambda a, b: str(a).lower().startswith(str(b).lower()),
        }

        def condition(raw: Any) -> bool:
            expr = str(raw).strip()
            if expr.startswith("${{") and expr.endswith("}}"):
                expr = expr[3:-2]
            if not any(re.search(rf"\b{f}\(", expr) for f in STATUS_FUNCTIONS):
                expr = f"success() && ({expr})"
            return _truthy(evaluate(expr, ctx, functions))

        result = JobResult(job_name, ran=True)
        if "if" in job and not condition(job["if"]):
            result.ran = False
            return result
        env: dict[str, str] = {}
        for scope in (self.workflow.get("env") or {}, job.get("env") or {}):
            for key, value in scope.items():
                ctx["env"] = dict(env)
                env[key] = substitute(value, ctx, functions)
        added_env: dict[str, str] = {}
        added_path: list[str] = []
        timeout = min(self.step_timeout, float(job.get("timeout-minutes", 360)) * 60)
        for index, step in enumerate(job["steps"]):
            name = step.get("name") or step.get("uses") or f"step {index}"
            sid = step.get("id", f"__{index}")
            ctx["env"] = {**env, **added_env}
            if not condition(step.get("if", "success()")):
                result.steps.append(StepResult(name, sid, "skipped"))
                ctx["steps"][sid] = {"outcome": "skipped", "conclusion": "skipped", "outputs": {}}
                continue
            files = {k: self.temp / f"_{k.lower()}_{index}" for k in
                     ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY")}
            for f in files.values():
                f.write_text("")
                os.chown(f, self.pw.pw_uid, self.pw.pw_gid)
            step_env = {}
            for key, value in (step.get("env") or {}).items():
                step_env[key] = substitute(value, {**ctx, "env": {**ctx["env"], **step_env}}, functions)
            full = {**self.runner_env, "HOME": str(self.home), "USER": self.user, "LOGNAME": self.user, "CI": "true",
                    "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(self.workspace), "RUNNER_TEMP": str(self.temp),
                    "RUNNER_OS": "Linux", "GITHUB_JOB": job_name, "LANG": "C.UTF-8",
                    "PATH": ":".join([*reversed(added_path), self.runner_env.get("PATH", RUNNER_PATH)]),
                    **{k: str(v) for k, v in files.items()}, **env, **added_env, **step_env}
            started = time.monotonic()
            self.log(f"[runner] {job_name}: {name}")
            if "uses" in step:
                uses = str(step["uses"])
                with_ = {k: substitute(v, ctx, functions) for k, v in (step.get("with") or {}).items()}
                if uses.startswith("actions/checkout@"):
                    code, output = self._checkout()
                elif uses.startswith("actions/upload-artifact@"):
                    code, output = self._upload(with_)
                else:
                    code, output = 1, f"action {uses} is not emulated here"
            else:
                script = self.temp / f"step_{index}.sh"
                script.write_text(substitute(step["run"], ctx, functions) + "\n")
                os.chown(script, self.pw.pw_uid, self.pw.pw_gid)
                cwd = self.workspace / step.get("working-directory", ".")
                try:
                    proc = subprocess.run(self._as_user(["bash", "--noprofile", "--norc", "-eo", "pipefail",
                                                         str(script)]), cwd=cwd, env=full, capture_output=True,
                                          text=True, timeout=timeout, check=False)
                    code, output = proc.returncode, proc.stdout + proc.stderr
                except subprocess.TimeoutExpired as exc:
                    code, output = 124, f"step timed out after {timeout:.0f} s\n{exc.stdout or ''}{exc.stderr or ''}"
            outcome = "success" if code == 0 else "failure"
            if outcome == "failure" and not step.get("continue-on-error"):
                failed = True
            added_env.update(_parse_env_file(files["GITHUB_ENV"].read_text()))
            added_path += [p.strip() for p in files["GITHUB_PATH"].read_text().splitlines() if p.strip()]
            outputs = _parse_env_file(files["GITHUB_OUTPUT"].read_text())
            ctx["steps"][sid] = {"outcome": outcome, "conclusion": outcome, "outputs": outputs}
            result.steps.append(StepResult(name, sid, outcome, code, output, time.monotonic() - started, full))
            self.log(f"[runner]   -> {outcome} ({code}) in {time.monotonic() - started:.1f} s")
        return result


def _parse_env_file(text: str) -> dict[str, str]:
    """``NAME=value`` lines and ``NAME<<DELIM`` ... ``DELIM`` blocks (GITHUB_ENV / GITHUB_OUTPUT)."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            value = []
            while i < len(lines) and lines[i] != delim:
                value.append(lines[i])
                i += 1
            i += 1
            out[name] = "\n".join(value)
        elif "=" in line:
            name, value_ = line.split("=", 1)
            out[name] = value_
    return out
