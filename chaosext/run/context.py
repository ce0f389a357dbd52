"""The run context: everything an activity of one experiment run needs, found through one lookup.

The safety control starts a run: it resolves the settings once (``chaosext.core.config.load_config``), creates the run
id and the run directory and keeps the resolved settings in the run record (``chaosext.run.record``). It puts the run
id and the run base into Chaos Toolkit's ``configuration`` (``chaosext_run_id``, ``chaosext_run_dir``), which Chaos
Toolkit hands, as a copy, to every later activity. :func:`run_context` is the lookup every activity makes::

    ctx = run_context(configuration, secrets)   # the run's settings, record, memory and credentials

It reads the run id from the configuration (the only reader of ``chaosext_run_id``), loads the settings the control
kept, and carries the activity's own ``secrets`` (credentials are built from them, never stored). Outside a run (no
run id: the ``chaosext`` CLI, a Python caller, an experiment without the safety control) it resolves the settings
from the configuration itself and the run's record and directory are empty.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosext.core.backends import Backend, backend
from chaosext.core.config import ExperimentConfig, load_config
from chaosext.core.names import check_run_id
from chaosext.core.settings import Configuration, Secrets, is_unset
from chaosext.run.memory import RunMemory, memory
from chaosext.run.record import Run, edit_run, load_run, new_run
from chaosext.run.store import run_directory

__all__ = ["RunContext", "run_context", "new_run_context", "create_run", "RUN_ID_KEY", "RUN_BASE_KEY", "DRY_RUN_KEY"]

#: the configuration keys the safety control sets for the rest of the run
RUN_ID_KEY = "chaosext_run_id"
RUN_BASE_KEY = "chaosext_run_dir"
DRY_RUN_KEY = "chaosext_dry_run"


@dataclass(frozen=True)
class RunContext:
    """One activity's view of its run: the settings (resolved once), the record, the memory, the secrets."""

    cfg: ExperimentConfig
    #: the activity's own secrets (Chaos Toolkit's ``secrets``); credentials are built from them, never kept
    secrets: Secrets = None
    #: ``chaos run --dry`` mode ('' when not a dry run)
    dry_run: str = ""

    @property
    def run_id(self) -> str:
        """The run's id ('' outside a run)."""
        return self.cfg.run_id

    @property
    def in_run(self) -> bool:
        """True inside an experiment run the safety control started."""
        return bool(self.cfg.run_id)

    @property
    def run_dir(self) -> Path | None:
        """``<run base>/<run id>`` (None outside a run)."""
        return run_directory(self.cfg.run_base, self.cfg.run_id) if self.cfg.run_id else None

    @property
    def heartbeat_file(self) -> str:
        """The run's heartbeat, which the dead-man switch watches ('' outside a run)."""
        return str(self.run_dir / "heartbeat") if self.run_dir else ""

    @property
    def memory(self) -> RunMemory:
        """What the run keeps in this process's memory only (tokens, forgery material, its lock and heartbeat)."""
        return memory(self.cfg.run_id)

    def record(self) -> Run:
        """The run record (an empty :class:`Run` outside a run)."""
        return load_run(self.run_dir) if self.run_dir else Run()

    @contextmanager
    def edit(self) -> Iterator[Run]:
        """``with ctx.edit() as run: ...``: read, change and write back the run record (nothing outside a run)."""
        if self.run_dir is None:
            yield Run()
            return
        with edit_run(self.run_dir) as run:
            yield run

    def backend(self, name: str, url: str = "") -> Backend:
        """Backend ``name`` (prometheus, alertmanager, loki, clickhouse) with this activity's credentials, at ``url``
        (default: the run's PROMETHEUS_URL, ALERTMANAGER_URL or AUDIT_SOURCE location)."""
        where = url or {"prometheus": self.cfg.prometheus_url,
                        "alertmanager": self.cfg.alertmanager_url}.get(name, self.cfg.audit_location)
        return backend(name, where, self.cfg, self.secrets)

    def configuration(self) -> dict[str, Any]:
        """The Chaos Toolkit configuration that names this run (for calling another entry point directly)."""
        conf: dict[str, Any] = {"chaosext_lab_dir": self.cfg.lab_dir, RUN_BASE_KEY: self.cfg.run_base}
        if self.cfg.run_id:
            conf[RUN_ID_KEY] = self.cfg.run_id
        return conf


def _dry(configuration: Configuration) -> str:
    value = (configuration or {}).get(DRY_RUN_KEY)
    return "" if is_unset(value) else str(value)


def run_context(configuration: Configuration = None, secrets: Secrets = None) -> RunContext:
    """THE lookup: the run the configuration names (settings from its record), else settings resolved now."""
    conf = configuration or {}
    run_id = conf.get(RUN_ID_KEY)
    base = conf.get(RUN_BASE_KEY)
    if isinstance(run_id, str) and not is_unset(run_id) and isinstance(base, str) and not is_unset(base):
        kept = load_run(run_directory(base, check_run_id(run_id))).config
        if kept:
            return RunContext(ExperimentConfig.from_json(kept), secrets, _dry(conf))
    return RunContext(load_config(configuration), secrets, _dry(conf))


def new_run_context(cfg: ExperimentConfig, run_id: str, secrets: Secrets = None) -> RunContext:
    """The context of run ``run_id`` with the settings ``cfg``, before anything of it exists on disk (the safety
    control checks the target with it, then :func:`create_run`)."""
    return RunContext(ExperimentConfig.from_json({**cfg.to_json(), "run_id": check_run_id(run_id)}), secrets)


def create_run(ctx: RunContext) -> None:
    """Create the run's directory and record, keeping its settings there for every later activity. The safety
    control's job, once per run."""
    new_run(ctx.cfg.run_base, ctx.run_id, ctx.cfg.to_json())

