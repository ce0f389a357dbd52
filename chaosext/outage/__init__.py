"""The outage itself: watching it tick by tick, deciding whether to abort, and judging what was recorded.

- :mod:`chaosext.outage.watch` — ``watch_outage``, the method step between the block and the restore;
- :mod:`chaosext.outage.observe` — what one watch tick reads (services, fault, counters, alerts, k6);
- :mod:`chaosext.outage.guard` — when the watch ends: a pure function of the observations and a clock;
- :mod:`chaosext.outage.judge` — ``judge_outage`` / ``judge_drill``: every outage check once, kept in the run file;
- :mod:`chaosext.outage.evidence` — the judged series saved next to the run file for ``chaosext report``.

- :mod:`chaosext.outage.hypothesis` — the baseline and recovery probes around the outage;
- :mod:`chaosext.outage.checks`, :mod:`chaosext.outage.drill` — every outage check, over what the run recorded
  (:mod:`chaosext.outage.judging`), in the outage notebook (:mod:`chaosext.outage.notebook`).

The run's record itself is ``chaosext.run.record``; the domains (metrics, auth, audit) export the measurements.
"""
