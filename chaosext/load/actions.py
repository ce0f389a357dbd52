"""Chaos Toolkit actions: run k6 in the background during the experiment, and stop it gracefully.

``start_k6`` returns at once (it is a plain action: no ``background: true`` needed, the method goes on while k6 runs
under its supervisor ``chaosext.load.runner``, which stops k6 when the process that started it dies). Each k6 run
records the experiment run that owns it (``owner_run_id``, D2). ``stop_k6`` belongs in the method after the outage
AND in the rollbacks: it stops only its own run's k6 (by ``run_id`` or ``owner_run_id``), is idempotent, and stops
k6 with SIGINT so k6 still writes its summary (exit code 105, "stopped by signal").
For load beyond one machine, ``start_k6_testrun`` / ``stop_k6_testrun`` submit a k6-operator TestRun instead.
"""
import json
import os
import re
import secrets as _secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from chaosext.core import safefs
from chaosext.core.config import ExperimentConfig
from chaosext.core.errors import ActivityMapping, ActivityResult, ConfigError
from chaosext.core.limits import k6_rate_problem
from chaosext.core.names import check_run_id
from chaosext.core.procs import free_port, minimal_env, proc_start_time
from chaosext.core.settings import Configuration, Secrets
from chaosext.core.tokens import k6_token_env
from chaosext.load import k6 as k6mod
from chaosext.load import operator
from chaosext.load.plan import PLAN_FILE, plan_json, write_plan
from chaosext.run.context import RunContext, run_context

#: the Chaos Toolkit actions; ``start`` / ``stop`` are the same for a run context (the safety control)
__all__ = ["start_k6", "stop_k6", "start_k6_testrun", "stop_k6_testrun"]

DURATION_RE = re.compile(r"^(\d+(\.\d+)?(ms|s|m|h))+$")
#: Popen objects of the k6 runs this process started, so their exit is reaped: a handle only this process can hold
_CHILDREN: dict[str, subprocess.Popen[bytes]] = {}
RUNNER = k6mod.RUNNER


def _check_duration(duration: str) -> None:
    if duration and not DURATION_RE.match(duration):
        raise ConfigError(f"duration={duration!r}: give a k6 duration such as 90s, 6m or 1h")


def _script_env(env: object) -> dict[str, Any]:
    """``env`` as the experiment gives it: an object of script variables (None: none)."""
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise ConfigError(f"env must be an object of script variables, got {type(env).__name__}")
    return env


def _script_vars(rate: int, duration: str, summary_file: str, vus: int, max_vus: int, env: dict[str, Any],
                 cfg: ExperimentConfig, plan: str) -> dict[str, str]:
    """The ``-e`` variables of k6-tenant-load.js, from the run's settings plus ``env``; ``plan``: where the script
    finds the load plan (``TARGET_JSON``: the services, routes, tenants and tenant header, ``chaosext.load.plan``)."""
    out = {
        "K6_RATE": str(rate or cfg.k6_rate),
        "LOAD_DURATION": duration or f"{cfg.outage_seconds + 60}s",
        "TARGET_JSON": plan,
        "AUTHORITY_URL": cfg.authority_url,
        "SUMMARY_FILE": summary_file,
        **k6_token_env(cfg)[0],  # non-secret token settings; the client secret goes by environment
    }
    if cfg.token.tokens_file:
        out["TOKENS_FILE"] = str(Path(cfg.token.tokens_file).resolve())
    if vus:
        out["LOAD_VUS"] = str(vus)
    if max_vus:
        out["LOAD_MAX_VUS"] = str(max_vus)
    for k, v in env.items():
        out[str(k)] = str(v)
    try:
        problem = k6_rate_problem(int(out["K6_RATE"]))
    except ValueError:
        problem = f"K6_RATE={out['K6_RATE']!r} is not a whole number of requests per second"
    if problem:
        raise ConfigError(problem)
    return out


def start_k6(script: str = "", rate: int = 0, duration: str = "", summary_file: str = "",
             env: ActivityMapping = None, vus: int = 0, max_vus: int = 0, run_dir: str = "", owner_run_id: str = "",
             heartbeat_file: str = "", configuration: Configuration = None, secrets: Secrets = None) -> ActivityResult:
    """Start k6 as a detached background process and return at once.

    ``script`` defaults to the shipped ops/devops/tenant/k6-tenant-load.js; ``rate`` (requests/s, 90/10 read/write)
    to the configuration's K6_RATE; ``duration`` (a k6 duration, e.g. 6m) to OUTAGE_SECONDS + 60 s; ``summary_file``
    to ``summary.json`` in the run's directory (``run_dir``, else $CHAOSEXT_K6_DIR, else <experiment run dir>/k6).
    The services, their routes, the tenants and the tenant header come from the target description (the run's
    settings): ``k6-load-plan.json`` (0600) in the k6 run's directory, passed as ``TARGET_JSON``; the Authority and
    the token settings from the configuration; ``env`` adds or overrides script variables. k6's REST API listens on
    127.0.0.1:<free port> (k6 cannot authenticate it: any local user can read its metrics or pause/stop the load;
    docs/footprint.md). k6 gets a minimal environment (``chaosext.core.procs.minimal_env``, k6's own ``K6_*``
    options, the client credentials), never root's whole one. The run directory and its files are created root-safe
    (0700 / 0600, ``chaosext.core.safefs``).
    ``owner_run_id`` (default: the experiment run's id) is the experiment run this k6 belongs to;
    ``heartbeat_file`` (default: the experiment run's heartbeat) that run's heartbeat:
    ``chaosext restore --all`` stops a k6 whose owner process is gone or whose heartbeat is stale. k6 runs under
    ``python3 -m chaosext.load.runner``, which stops it within seconds when this process dies.
    Returns ``{"run_id", "owner_run_id", "pid", "address", "summary_file", "log_file", "rate", "duration", ...}``.
    """
    return start(run_context(configuration, secrets), script, rate, duration, summary_file, env, vus, max_vus, run_dir,
                 owner_run_id, heartbeat_file)


def start(ctx: RunContext, script: str = "", rate: int = 0, duration: str = "", summary_file: str = "",
          env: dict[str, Any] | None = None, vus: int = 0, max_vus: int = 0, run_dir: str = "",
          owner_run_id: str = "", heartbeat_file: str = "") -> dict[str, Any]:
    """:func:`start_k6` for a run context (the safety control starts the run's k6 with it)."""
    secrets = ctx.secrets
    if rate < 0:
        raise ConfigError(f"rate={rate}: give requests per second (> 0), or 0 for the configuration's K6_RATE")
    _check_duration(duration)
    script_env = _script_env(env)
    script = script or k6mod.default_script()
    if not os.path.isfile(script):
        raise ConfigError(f"k6 script {script} does not exist; pass script=<path to k6-tenant-load.js>")
    _script_vars(rate, duration, "", vus, max_vus, script_env, ctx.cfg, "")  # K6_RATE etc.: refused before any change
    binary = k6mod.find_k6()
    plan_json(ctx.cfg)  # a target with nothing to drive is refused before anything is written
    secret_env = k6_token_env(ctx.cfg, secrets)[1]

    owner_run_id = str(owner_run_id or ctx.run_id)
    if owner_run_id:
        check_run_id(owner_run_id, "owner_run_id")
    heartbeat_file = str(heartbeat_file or ctx.heartbeat_file)
    run_id = _secrets.token_hex(4)
    base_dir = k6mod.runs_dir(run_dir, ctx)
    with safefs.open_dir(base_dir, create=True) as base:  # root-safe, 0700
        os.mkdir(run_id, 0o700, dir_fd=base.fd)  # a fresh id: never an existing directory
        base.subdir(run_id).close()
        path = Path(base.shown(run_id))
    try:
        variables = _script_vars(rate, duration, "", vus, max_vus, script_env, ctx.cfg,
                                 str(write_plan(ctx.cfg, path)))
        summary = Path(os.path.abspath(summary_file)) if summary_file else path / "summary.json"
        with safefs.open_dir(summary.parent, create=True) as d:  # k6 writes it as root: a safe directory
            d.unlink(summary.name)
        variables["SUMMARY_FILE"] = str(summary)
        eargs = [a for k, v in variables.items() for a in ("-e", f"{k}={v}")]
        _inspect(binary, eargs, script, secret_env)
    except BaseException:
        with safefs.open_dir(base_dir) as base:  # a refused start leaves no run behind
            base.rmtree(run_id)
        raise

    child_env = _child_env(secret_env)

    address = f"127.0.0.1:{free_port()}"
    cmd = [binary, "run", "--quiet", "--no-color", "--address", address, *eargs, script]
    exit_file = path / "exit_code"
    log_file = path / "k6.log"
    # PR_SET_PDEATHSIG follows the forking *thread*: ask for it only from the main thread (see runner.py)
    supervisor = [sys.executable, "-m", RUNNER, "--exit-file", str(exit_file), "--pid-file", str(path / "k6.pid"),
                  "--parent-pid", str(os.getpid()),
                  *(["--pdeathsig"] if threading.current_thread() is threading.main_thread() else []), "--", *cmd]
    with safefs.open_dir(path) as rundir:
        log_fd = rundir.append_fd(log_file.name)
        try:
            # umask 077: what k6 writes (summary.json) is 0600 like every file of a run directory
            proc = subprocess.Popen(supervisor, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT,
                                    env=child_env, start_new_session=True, umask=0o077)
        finally:
            os.close(log_fd)
        _CHILDREN[run_id] = proc
        record = {
            "run_id": run_id, "pid": proc.pid, "pgid": proc.pid, "start_time": proc_start_time(proc.pid),
            "owner_run_id": owner_run_id, "owner_pid": os.getpid(), "owner_start_time": proc_start_time(os.getpid()),
            "heartbeat_file": heartbeat_file, "supervisor": RUNNER,
            "address": address, "summary_file": str(summary), "log_file": str(log_file),
            "exit_file": str(exit_file), "run_dir": str(path), "script": str(Path(script).resolve()),
            "rate": int(variables["K6_RATE"]), "duration": variables["LOAD_DURATION"], "started_at": time.time(),
            "k6": binary, "cmd": cmd, "plan_file": variables["TARGET_JSON"],
        }
        rundir.write("run.json", json.dumps(record, indent=2))
    return {k: record[k] for k in ("run_id", "owner_run_id", "pid", "address", "summary_file", "log_file",
                                    "run_dir", "rate", "duration")}


def _child_env(secret_env: dict[str, str]) -> dict[str, str]:
    """k6's environment: a minimal one (``chaosext.core.procs.minimal_env``: an allow-list, none of this process's
    secrets), k6's own ``K6_*`` options but those that would replace the scenarios, plus the client credentials
    (k6's ``__ENV``, never argv)."""
    k6_options = [k for k in os.environ if k.startswith("K6_") and k not in k6mod.CONFLICTING_ENV]
    child_env = minimal_env({"K6_NO_USAGE_REPORT": "true"}, keep=k6_options)
    child_env.update(secret_env)
    return child_env


def _inspect(binary: str, eargs: list[str], script: str, secret_env: dict[str, str]) -> None:
    """Check script and options first (``k6 inspect`` runs the init code, which reads the plan): a bad setting fails
    here, before any fault."""
    try:
        check = subprocess.run([binary, "inspect", *eargs, script], capture_output=True, text=True, timeout=60,
                               env=_child_env(secret_env), check=False)
    except subprocess.TimeoutExpired:
        raise k6mod.K6RunError(f"`k6 inspect {script}` did not finish in 60 s; check that {binary} runs (`{binary} "
                               f"version`) and that the script's init code does not block") from None
    if check.returncode != 0:
        raise k6mod.K6RunError(f"k6 rejects the script or its settings: "
                               f"{(check.stderr or check.stdout).strip()[-600:]}; fix the script or its settings")


def _stop_one(rec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Stop one run (``k6.stop_run``) and reap its supervisor if this process started it."""
    result = k6mod.stop_run(rec, timeout)
    proc = _CHILDREN.pop(rec["run_id"], None)
    if proc is not None:
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
    return result


def stop_k6(run_id: str = "", owner_run_id: str = "", timeout: float = 30.0, run_dir: str = "",
            configuration: Configuration = None, secrets: Secrets = None) -> ActivityResult:
    """Stop this experiment run's background k6 gracefully (SIGINT: k6 exits 105 and still writes its summary);
    wait at most ``timeout`` s per run, then SIGTERM, then SIGKILL.

    ``run_id``: that k6 run (as returned by ``start_k6``). ``owner_run_id`` (default: the experiment run's id):
    every k6 run started for that experiment run. With neither, nothing is stopped (another
    run's k6 is never touched) and the result says so. Idempotent: safe in rollbacks; a run that started no k6 stops
    nothing. Returns ``{"stopped", "runs": [...], "exit_code", "exit_meaning", "summary_file"}`` (the last three for
    the latest run stopped or found).
    """
    return stop(run_context(configuration, secrets), run_id, owner_run_id, timeout, run_dir)


def stop(ctx: RunContext, run_id: str = "", owner_run_id: str = "", timeout: float = 30.0,
         run_dir: str = "") -> dict[str, Any]:
    """:func:`stop_k6` for a run context (the safety control stops the run's k6 with it)."""
    if timeout <= 0:
        raise ConfigError(f"timeout={timeout}: give the seconds to wait for k6 to exit (> 0)")
    base = k6mod.runs_dir(run_dir, ctx)
    owner_run_id = str(owner_run_id or ("" if run_id else ctx.run_id))
    if owner_run_id:
        check_run_id(owner_run_id, "owner_run_id")
    if run_id:
        check_run_id(run_id, "k6 run_id")
        if not (base / run_id / "run.json").is_file():
            raise ConfigError(f"no k6 run {run_id!r} recorded in {base}; start_k6 returns the run_id to pass")
        targets = [k6mod.read_run(base / run_id)]
    elif owner_run_id:
        runs = k6mod.owned_runs(base, owner_run_id)
        targets = [r for r in runs if r["alive"]] or runs[-1:]
    else:
        running = [r["run_id"] for r in k6mod.list_runs(base) if r["alive"]]
        return {"stopped": 0, "runs": [], "exit_code": None, "summary_file": "", "running_elsewhere": running,
                "exit_meaning": "nothing stopped: no run_id or owner_run_id (nor chaosext_run_id in the "
                                "configuration) was given, and other runs' k6 are never stopped"}
    results = [_stop_one(rec, timeout) for rec in targets]
    last: dict[str, Any] = results[-1] if results else {}
    return {"stopped": sum(1 for r in results if r["was_running"]), "runs": results,
            "exit_code": last.get("exit_code"),
            "exit_meaning": last.get("exit_meaning", f"no k6 run of experiment run {owner_run_id} recorded in {base}"),
            "summary_file": last.get("summary_file", "")}


def start_k6_testrun(name: str = "chaosext-tenant-load", namespace: str = "default", parallelism: int = 4,
                     configmap: str = "k6-tenant-load", script_file: str = "k6-tenant-load.js",
                     create_configmap: bool = True, script: str = "", rate: int = 0, duration: str = "",
                     env: ActivityMapping = None, configuration: Configuration = None,
                     secrets: Secrets = None) -> ActivityResult:
    """Submit a k6-operator ``TestRun`` (k6.io/v1alpha1) running the tenant load script on ``parallelism`` pods.

    The script and the load plan (``k6-load-plan.json``: the target's services, routes, tenants and tenant header)
    go into ConfigMap ``configmap`` (created or replaced when ``create_configmap``; otherwise the plan is merged into
    the existing one, next to your script); K6_RATE is the total over all pods. The client credentials the script
    gets its tokens with go into a Secret the runner pods read (never the TestRun). Kubernetes credentials as for
    chaostoolkit-kubernetes (kubeconfig, in-pod, or KUBERNETES_HOST ...), or KUBE_API_URL.
    """
    cfg = run_context(configuration, secrets).cfg
    # the plan sits next to the script in the ConfigMap (the runner pods mount it at /test): a path relative to the
    # script, which k6's open() resolves against the script's directory
    variables = _script_vars(rate, duration, "/tmp/k6-summary.json", 0, 0, _script_env(env), cfg, PLAN_FILE)
    _check_duration(duration)
    secret_env = k6_token_env(cfg, secrets)[1]
    return operator.submit_testrun(name=name, namespace=namespace, parallelism=parallelism, configmap=configmap,
                                   script_file=script_file, env=variables,
                                   script_text=Path(script or k6mod.default_script()).read_text()
                                   if create_configmap else "", secrets=secrets, options=_kube_options(cfg),
                                   secret_env=secret_env, files={PLAN_FILE: plan_json(cfg)})


def stop_k6_testrun(name: str = "chaosext-tenant-load", namespace: str = "default",
                    configuration: Configuration = None, secrets: Secrets = None) -> ActivityResult:
    """Delete the k6-operator ``TestRun`` (the operator stops its pods) and its credentials Secret; a missing TestRun
    is not an error."""
    return operator.delete_testrun(name=name, namespace=namespace, secrets=secrets,
                                   options=_kube_options(run_context(configuration, secrets).cfg))


def _kube_options(cfg: ExperimentConfig) -> dict[str, str]:
    """KUBE_API_URL / KUBE_CONTEXT of the run, as the Kubernetes client takes them."""
    return {"kube_api_url": cfg.kube_api_url, "kube_context": cfg.kube_context}
