"""The runner emulator's expressions (tests/deploy/ghrunner.py) follow GitHub's documented semantics, so the
workflow test judges `if:` conditions the way GitHub does."""
from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.ghrunner import evaluate, substitute

CTX: dict[str, Any] = {"inputs": {"dry_run": False, "environment": "lab", "outage_seconds": 15},
                       "vars": {"CHAOSEXT_RUNS_ON": ""}, "steps": {"run": {"outcome": "failure"}},
                       "secrets": {}, "env": {}}


@pytest.mark.parametrize("expr,value", [
    ("inputs.environment != 'kind'", True),
    ("inputs.environment == 'LAB'", True),  # string comparison ignores case
    ("!inputs.dry_run", True),
    ("vars.CHAOSEXT_RUNS_ON || 'ubuntu-24.04'", "ubuntu-24.04"),  # || returns the first truthy operand
    ("steps.run.outcome != 'skipped' && inputs.outage_seconds", 15),
    ("steps.nope.outcome", None),
    ("inputs.outage_seconds >= 15", True),
    ("(1 == '1') && !('' || null)", True),  # loose equality coerces to numbers; '' and null are falsy
])
def test_expressions(expr: str, value: Any) -> None:
    assert evaluate(expr, CTX) == value


def test_substitution_formats_like_the_runner() -> None:
    assert substitute("n=${{ inputs.outage_seconds }} dry=${{ inputs.dry_run }} x=${{ vars.NOPE }}",
                      {**CTX, "vars": {}}) == "n=15 dry=false x="
    with pytest.raises(ValueError, match="not emulated"):
        evaluate("toJSON(inputs)", CTX)
