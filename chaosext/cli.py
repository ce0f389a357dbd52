"""The `chaosext` command line: wires each domain's subcommands under one root.

Each domain owns its commands (``chaosext/<domain>/cli.py``); this module only registers them. It is the one module
allowed to import the lab (its ``lab`` command group): the import contract in pyproject.toml names this edge.
"""
from __future__ import annotations

import click

from chaosext import __version__
from chaosext.doctor import doctor
from chaosext.egress.cli import restore
from chaosext.lab.cli import lab
from chaosext.render.cli import render
from chaosext.report.cli import report
from chaosext.verdict import verdict

#: every subcommand; a domain adds its command here
SUBCOMMANDS: tuple[click.Command, ...] = (lab, restore, verdict, report, doctor, render)


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


for command in SUBCOMMANDS:
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
