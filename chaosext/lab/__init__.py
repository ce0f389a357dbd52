"""chaosext.lab: the embedded target (Authority, tenant services, JWKS cache) and its supervisor.

`chaosext lab up|down|status` (``chaosext.lab.cli``) runs it: ``supervisor`` orchestrates ``plan`` (settings ->
validated components), ``configs`` (the files they read) and ``processes`` (start, health, stop).
``chaosext.core.labstate.load_state`` finds a running lab; ``chaosext.lab.testing.running_lab`` gives tests a lab of
their own on free ports.
"""
