"""The `chaosext` command line: wires each domain's subcommands under one root.

Each domain owns its commands (``chaosext/<domain>/cli.py``); this module only registers them.
"""
from __future__ import annotations

import importlib

import click

from chaosext import __version__

#: (module, attribute) of every subcommand; a domain adds its line here.
SUBCOMMANDS: tuple[tuple[str, str], ...] = (
    ("chaosext.lab.cli", "lab"),
    ("chaosext.egress.cli", "restore"),
    ("chaosext.verdict", "verdict"),
    ("chaosext.report.cli", "report"),
    ("chaosext.doctor", "doctor"),
)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog="""\b
Examples:
  chaosext lab up                      # start the embedded lab on loopback
  chaos run experiments/jwks-outage.json
  chaosext verdict journal.json        # exit 0 only if the run really passed
  chaosext restore --all               # panic button: remove every fault chaosext made
""",
)
@click.version_option(__version__, prog_name="chaosext")
def main() -> None:
    """chaosext: prove that multi-tenant APIs survive an outage of their JWKS endpoint."""


def _register() -> None:
    for module, attr in SUBCOMMANDS:
        main.add_command(getattr(importlib.import_module(module), attr))


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
