"""One experiment run: its context (the one lookup every activity makes), its record and its files.

- :mod:`chaosext.run.context` — ``run_context(configuration, secrets)``: the run's settings (resolved once by the
  safety control), its record, its in-memory secrets and the activity's credentials;
- :mod:`chaosext.run.record` — ``run.json``, the run's timeline;
- :mod:`chaosext.run.store` — the run directory and its files (0700 / 0600, atomic);
- :mod:`chaosext.run.memory` — what stays in the ``chaos`` process's memory only (tokens, lock, heartbeat);
- :mod:`chaosext.run.heartbeat` — the pulse the dead-man switch watches.
"""
