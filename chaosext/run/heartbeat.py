"""The dead-man switch's pulse: a file whose modification time the running experiment renews every few seconds.

The experiment process starts a :class:`Heartbeat` (a daemon thread that touches the file every ``interval`` s); the
fault's watchdog (``chaosext.egress.watchdog``) reads :func:`age` and lifts the fault and stops the run's k6 when the
pulse is older than ``HEARTBEAT_GRACE`` (default 10 s) -- i.e. when the experiment process died (SIGKILL, OOM) or
hangs. The file holds nothing secret; it is created 0600 anyway, like every file of a run directory.

The file is created once, root-safe (:mod:`chaosext.core.safefs`: no symlink, in a directory of ours nobody else can
write), and the beat renews the modification time through the descriptor kept open since: a run directory swapped
for a symlink later can neither redirect the beats nor make chaosext touch or chmod another file. :func:`age` reads
the file the same safe way: a heartbeat that is a symlink or another user's counts as missing.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from chaosext.core import safefs
from chaosext.core.errors import ConfigError

__all__ = ["Heartbeat", "age", "HEARTBEAT_INTERVAL", "HEARTBEAT_GRACE"]

#: Seconds between two beats.
HEARTBEAT_INTERVAL = 2.0
#: Seconds without a beat after which the watchdog treats the run as dead (``HEARTBEAT_GRACE``).
HEARTBEAT_GRACE = 10.0


def age(path: str) -> float | None:
    """Seconds since the last beat written to ``path``; None when there is no such file (or it is not a file of ours
    in a safe directory)."""
    mtime = safefs.mtime(path)
    return None if mtime is None else max(0.0, time.time() - mtime)


class Heartbeat:
    """Renew ``path``'s mtime every ``interval`` seconds from a daemon thread until :meth:`stop`.

    A daemon thread dies with its process, so the beats stop exactly when the experiment process dies (or is frozen:
    SIGSTOP stops every thread). ``stop()`` leaves the file in place (its age then tells the truth: no more beats);
    pass ``remove=True`` to delete it.
    """

    def __init__(self, path: str, interval: float = HEARTBEAT_INTERVAL,
                 on_beat: Callable[[], object] | None = None) -> None:
        if interval <= 0:
            raise ConfigError(f"heartbeat interval {interval!r}: give seconds > 0 (default {HEARTBEAT_INTERVAL})")
        self.path = str(path)
        self.interval = float(interval)
        #: called after every beat of the thread (the run's cluster Lease renews with the pulse); must not block long
        self.on_beat = on_beat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd = -1

    def _open(self) -> None:
        if self._fd < 0:
            with safefs.open_dir(os.path.dirname(os.path.abspath(self.path)), create=True) as d:
                self._fd = d.open(os.path.basename(self.path), os.O_WRONLY | os.O_CREAT)

    def beat(self) -> None:
        """Write one beat now (creates the file 0600 the first time; then through the kept descriptor)."""
        self._open()
        os.utime(self._fd)

    def start(self) -> Heartbeat:
        """Beat once (so the file exists on return), then keep beating in a daemon thread. Returns self."""
        self.beat()
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"chaosext-heartbeat:{self.path}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except OSError:  # the run dir went away: nothing to renew; the watchdog will see the pulse stop
                pass
            if self.on_beat is not None:
                try:
                    self.on_beat()
                except Exception:  # a renewal that failed must not stop the pulse the dead-man switch watches
                    pass

    def stop(self, remove: bool = False) -> None:
        """Stop beating (idempotent); with ``remove`` also delete the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)
            self._thread = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if remove:
            safefs.remove(self.path)

    @property
    def running(self) -> bool:
        """True while the beating thread is alive."""
        return self._thread is not None and self._thread.is_alive()
