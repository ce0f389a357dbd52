"""The house rules issue 24 set, held by tests: no module-level mutable registry outside the lab (one run's state
lives in its run context and run directory; what only a process can hold is listed below with its reason), and the
run id and FAULT_TARGET each have one reader."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "chaosext"

#: module-level mutable state that a process truly needs, and why
ALLOWED = {
    ("run/memory.py", "_MEMORY"): "a run's tokens and lock/heartbeat handles: secrets that must never reach a file",
    ("load/actions.py", "_CHILDREN"): "Popen handles of the k6 supervisors this process started, to reap them",
    ("core/signals.py", "_previous"): "the SIGTERM handler chaoslib installed before ours, to restore it",
    ("core/signals.py", "_flag"): "whether this process received SIGTERM (set by the signal handler)",
}
MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "deque", "Counter"}
MUTATORS = {"append", "extend", "update", "clear", "setdefault", "pop", "popitem", "add", "discard", "remove",
            "insert"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if not rel.startswith("lab/"):
            yield rel, ast.parse(path.read_text(), rel)


def _mutable(value: ast.expr | None) -> bool:
    if isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)):
        return True
    if isinstance(value, ast.Call):
        fn = value.func
        name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
        return name in MUTABLE_CALLS
    return False


def _mutated(tree: ast.Module, name: str) -> bool:
    """Whether anything in the module changes ``name`` in place (item assignment, del, a mutating method)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            if any(isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == name
                   for t in targets):
                return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == name:
            return True
        if isinstance(node, ast.Global) and name in node.names:
            return True
    return False


def registries() -> dict[tuple[str, str], int]:
    """(module, name) -> line of every module-level mutable container the module changes in place."""
    found = {}
    for rel, tree in _modules():
        for node in tree.body:
            targets: list[ast.expr] = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            for t in targets:
                if isinstance(t, ast.Name) and not t.id.startswith("__") and _mutable(value) \
                        and _mutated(tree, t.id):
                    found[(rel, t.id)] = node.lineno
    return found


def test_no_module_level_registry_outside_the_lab_but_what_a_process_needs() -> None:
    found = registries()
    unexpected = {k: line for k, line in found.items() if k not in ALLOWED}
    assert not unexpected, f"module-level mutable state (keep run state in the run context): {unexpected}"
    assert set(ALLOWED) <= set(found), f"allow-list entries that no longer exist: {set(ALLOWED) - set(found)}"


def test_the_registry_finder_finds_a_registry(tmp_path: Path) -> None:
    """The check can fail: a module with a private dict it fills is found, a constant table is not."""
    tree = ast.parse("_SEEN: dict[str, int] = {}\nTABLE = {'a': 1}\n\ndef note(k):\n    _SEEN[k] = 1\n")
    names = [t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
             for t in ([n.target] if isinstance(n, ast.AnnAssign) else n.targets)
             if isinstance(t, ast.Name) and _mutable(n.value) and _mutated(tree, t.id)]
    assert names == ["_SEEN"]


def _readers(pattern: str) -> set[str]:
    """Modules holding the string ``pattern`` as a literal of their own (not as text inside an f-string message)."""
    out = set()
    for rel, tree in _modules():
        in_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        if any(isinstance(n, ast.Constant) and n.value == pattern and id(n) not in in_fstrings for n in ast.walk(tree)):
            out.add(rel)
    return out


def test_the_run_id_has_one_reader_and_fault_target_one_parser() -> None:
    # the configuration key of the run id is read by the run context only (the control sets it, doctor never)
    assert _readers("chaosext_run_id") <= {"run/context.py", "core/config.py"}, _readers("chaosext_run_id")
    # FAULT_TARGET's grammar (its item kinds) is written down once
    assert _readers("k8s-pod:") <= {"core/faulttarget.py"}, _readers("k8s-pod:")
