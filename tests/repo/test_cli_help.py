"""Command-line polish: every chaosext command shows examples in --help, and every `chaosext ...` example line
names only commands and options that exist (so the help cannot drift from the code)."""
from __future__ import annotations

import re
import shlex

import click
import pytest
from click.testing import CliRunner

from chaosext.cli import main


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += _commands(cmd, prefix + (name,))
        else:
            out.append(prefix + (name,))
    return out


COMMANDS = _commands(main)


def test_every_domain_registered_its_commands() -> None:
    assert {c[0] for c in COMMANDS if c} >= {"lab", "restore", "verdict", "report", "doctor"}


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "chaosext")
def test_help_has_examples_that_parse(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`chaosext {' '.join(path)} --help` shows no example"
    text = result.output.replace("\\\n", " ")
    for line in text.splitlines():
        m = re.match(r"\s*chaosext\s+(.*?)(\s+#.*)?$", line)
        if not m or "|" in m.group(1):
            continue
        argv = shlex.split(m.group(1))
        cmd: click.Command = main
        while isinstance(cmd, click.Group) and argv and argv[0] in cmd.commands:
            cmd = cmd.commands[argv.pop(0)]
        known = {opt for p in cmd.params for opt in p.opts + p.secondary_opts}
        for word in argv:
            if word.startswith("--"):
                assert word.split("=")[0] in known, f"example `{line.strip()}` uses unknown option {word}"
