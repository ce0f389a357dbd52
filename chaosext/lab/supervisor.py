"""Start, check and stop the lab: `chaosext lab up | down | status` (chaosext.lab.cli) in short steps.

``up(config)`` checks everything it can before starting anything (flag values, free ports, binaries, the generated
Prometheus config; chaosext.lab.plan and chaosext.lab.configs), then starts the Authority, the tenant services,
Alertmanager and Prometheus detached (new session, output to ``<state>/logs/<name>.log``), waits until each answers
its health URL and records them in ``state.json`` (chaosext.lab.processes). If any component fails, the ones already
started are stopped again. ``down(state_dir)`` stops every process of that lab (found through state.json and, as a
fallback, by command line) and only ever signals a pid whose command line still names the lab's state directory.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from chaosext.core import procs, safefs
from chaosext.core.labstate import STATE_VERSION, StateError, clear_state, load_state, resolve_state_dir, save_state
from chaosext.lab import configs, processes
from chaosext.lab import target as lab_target
from chaosext.lab.common import base_url
from chaosext.lab.plan import (
    APT_HINT,
    CACHE_MODES,
    HOLES,
    SERVICES,
    Component,
    LabConfig,
    LabError,
    plan,
    preflight,
    waves,
)
from chaosext.lab.processes import Health, Started, find_lab_processes

__all__ = [
    "SERVICES",
    "CACHE_MODES",
    "HOLES",
    "APT_HINT",
    "LabConfig",
    "LabError",
    "Component",
    "plan",
    "up",
    "down",
    "status",
    "find_lab_processes",
    "to_json",
]

Echo = Callable[[str], Any]


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One `up`/`down` at a time per state directory. The directory is opened root-safe (chaosext.core.safefs: ours,
    nobody else can write it or any directory above it) and the lock file is opened in it without following a
    symlink and without truncating anything."""
    try:
        with safefs.open_dir(state_dir, create=True) as d:
            fd = d.open(".lock", os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise LabError(f"cannot use {state_dir} as the lab state directory ({exc}); pick another with "
                       f"--state-dir or CHAOSEXT_LAB_DIR") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise LabError(f"another `chaosext lab` command is working on {state_dir}; wait for it to finish") \
                from exc
        yield
    finally:
        os.close(fd)


def _health_of(state: dict[str, Any], state_dir: Path) -> dict[str, Health]:
    """Each component of a state (as load_state returns it: ``components`` maps names to entries with a pid)."""
    return {name: processes.health(comp, state_dir) for name, comp in state["components"].items()}


# ---------------------------------------------------------------------------------------------------- up

def up(cfg: LabConfig, echo: Echo = print) -> dict[str, Any]:
    """Start the lab described by cfg (or find it already running); returns the state dict.

    Raises LabError, with nothing of this attempt left running, when anything is wrong.
    """
    cfg.validate()
    state_dir = cfg.state_path
    with _locked(state_dir):
        running = _running_lab(cfg, echo)
        if running is not None:
            return running
        _stop_leftovers(state_dir)
        comps = plan(cfg)
        preflight(cfg, comps)
        client = configs.write_all(cfg, comps)
        started = _start_all(comps, state_dir, cfg.ready_timeout, echo)
        records = {s.comp.name: processes.record(s) for s in started}
        state = _state_for(cfg, records, client)
        state["target_file"] = str(lab_target.write(cfg, records))
        save_state(state_dir, state)
        return state


def _running_lab(cfg: LabConfig, echo: Echo) -> dict[str, Any] | None:
    """The state of a healthy lab already running in the state directory with the same settings (marked
    ``already_running``), else None. LabError when it runs with other settings; StateError when state.json is
    corrupt (its message says to run `down`)."""
    state_dir = cfg.state_path
    previous = load_state(state_dir)
    if previous is None:
        return None
    health = _settled_health(previous, state_dir)
    if all(h.healthy for h in health.values()):
        _refuse_other_settings(cfg, previous)
        previous["already_running"] = True
        return previous
    if any(h.alive for h in health.values()):
        bad = ", ".join(f"{n} ({h.detail})" for n, h in health.items() if not h.healthy)
        echo(f"lab in {state_dir} is only partly running ({bad}); restarting it cleanly")
    else:
        echo(f"state in {state_dir} is left over from a lab that no longer runs; starting afresh")
    return None


def _settled_health(state: dict[str, Any], state_dir: Path, tries: int = 3) -> dict[str, Health]:
    """Each component's health; while all run but one is not healthy, look again (up to ``tries`` times, 1 s
    apart): a busy service may miss one health check, and that is no reason to restart a lab."""
    health = _health_of(state, state_dir)
    for _ in range(tries):
        if all(h.healthy for h in health.values()) or not all(h.alive for h in health.values()):
            break
        time.sleep(1.0)
        health = _health_of(state, state_dir)
    return health


def _refuse_other_settings(cfg: LabConfig, state: dict[str, Any]) -> None:
    """LabError naming each setting in which the running lab differs from ``cfg``."""
    wanted = cfg.identity()
    running = {k: v for k, v in (state.get("config") or {}).items() if k not in LabConfig.RUNTIME_ONLY}
    diff = [k for k in wanted if wanted[k] != running.get(k)]
    if diff:
        details = ", ".join(f"{k}: running {running.get(k)!r}, asked {wanted[k]!r}" for k in diff)
        raise LabError(f"a lab is already running in {cfg.state_dir} with other settings ({details}); "
                       f"run `chaosext lab down --state-dir {cfg.state_dir}` first")


def _stop_leftovers(state_dir: Path) -> None:
    """Stop whatever still runs of an earlier lab in this state directory and clear its state."""
    leftovers = find_lab_processes(state_dir)
    if leftovers:
        still = processes.terminate(leftovers, str(state_dir), grace=10.0)
        if still:
            raise LabError(f"cannot stop old lab processes {still} of {state_dir}; stop them by hand")
    clear_state(state_dir)


def _start_all(comps: list[Component], state_dir: Path, ready_timeout: float, echo: Echo) -> list[Started]:
    """Start the components wave by wave, each wave ready before the next; on any failure (or interrupt) stop what
    was started and re-raise."""
    started: list[Started] = []
    deadline = time.monotonic() + ready_timeout
    try:
        for wave in waves(comps):
            batch = [processes.start(comp, state_dir) for comp in wave]
            started += batch
            processes.wait_ready(batch, deadline)
    except BaseException:
        left = processes.stop_started(started, state_dir)
        if left:
            echo(f"warning: could not stop {left}")
        raise
    return started


def _state_for(cfg: LabConfig, comps: dict[str, dict[str, Any]], client: dict[str, str]) -> dict[str, Any]:
    """state.json of a lab that just came up (schema: docs/architecture.md, chaosext.core.labstate)."""
    state_dir = cfg.state_path
    return {
        "version": STATE_VERSION,
        "started_at": time.time(),
        "state_dir": str(state_dir),
        "config": cfg.as_dict(),
        "components": comps,
        "jwks_url": cfg.jwks_url,
        "authority_url": cfg.issuer,
        "token_url": f"{cfg.issuer}/token",
        **client,  # client_id / client_secret: the lab's test client (state.json is 0600)
        "service_urls": {name: comps[name]["url"] for name in cfg.services},
        "tenant_header": cfg.tenant_header,
        "audience": cfg.audience,
        "audit_file": str(state_dir / "audit.jsonl"),
        "prometheus_url": comps["prometheus"]["url"] if "prometheus" in comps else None,
        "alertmanager_url": comps["alertmanager"]["url"] if "alertmanager" in comps else None,
        "fault": {"via": "iptables", "target": "local", "host": cfg.authority_host, "port": cfg.authority_port},
        # the scenarios' hooks (ROTATE_URL, COLD_START_URL): the Authority's key rotation, a service's cold start
        "rotate_url": f"{base_url(cfg.ops_host, cfg.ops_port)}/admin/rotate",
        "cold_start_url": "{service_url}/admin/cold-start",
        # the network namespace the lab's processes run in: what makes loopback URLs the lab's (chaosext.core.labid)
        "netns": procs.netns_id(comps["authority"]["pid"]) if "authority" in comps else "",
        **_envoy_state(comps, cfg),
    }


def _envoy_state(comps: dict[str, dict[str, Any]], cfg: LabConfig) -> dict[str, Any]:
    """With ``--egress envoy``: the admin URL and the fault hint (the fault goes to Envoy's admin API)."""
    if cfg.egress != "envoy" or "envoy" not in comps:
        return {}
    admin = comps["envoy"]["admin_url"]
    return {"envoy_admin_url": admin, "fault": {"via": "envoy", "target": admin, "host": cfg.host,
                                                  "port": cfg.envoy_port}}


# ---------------------------------------------------------------------------------------------------- down, status

def down(state_dir: str | os.PathLike[str] | None = None, grace: float = 10.0) -> dict[str, Any]:
    """Stop every process of the lab in state_dir and clear state.json.

    Works with a missing or corrupt state.json too (finds the processes by command line). Returns
    ``{"stopped": [names/pids], "left": [pids]}``; ``left`` is non-empty only if a process would not die.
    """
    sd = resolve_state_dir(state_dir)
    with _locked(sd):
        pids = _recorded_pids(sd)
        for pid in find_lab_processes(sd):
            pids.setdefault(pid, f"pid {pid}")
        order = list(reversed(pids))  # reverse start order: prometheus first, the authority last
        left = processes.terminate(order, str(sd), grace) if order else []
        if not left:
            clear_state(sd)
        return {"state_dir": str(sd), "stopped": [pids[p] for p in order if p not in left], "left": left}


def _recorded_pids(state_dir: Path) -> dict[int, str]:
    """pid -> component name of the components in state.json that still run (none when it is missing or corrupt)."""
    try:
        state = load_state(state_dir)
    except StateError:
        return {}
    components = (state or {}).get("components", {})
    return {int(comp["pid"]): name for name, comp in components.items() if processes.recorded_alive(comp, state_dir)}


def status(state_dir: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """state.json plus each component's live health (``components.<name>.alive/healthy/detail``); None if no lab.

    Raises StateError when state.json is corrupt.
    """
    sd = resolve_state_dir(state_dir)
    state = load_state(sd)
    if state is None:
        return None
    health = _health_of(state, sd)
    for name, h in health.items():
        state["components"][name].update(alive=h.alive, healthy=h.healthy, detail=h.detail)
    state["healthy"] = all(h.healthy for h in health.values())
    return state


def to_json(data: dict[str, Any]) -> str:
    """Pretty JSON for the CLI."""
    return json.dumps(data, indent=2, sort_keys=False)
