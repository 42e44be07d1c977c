"""The package's import graph, read from the source (module-level and deferred imports alike): the report
knows no backend, and the result of a study does not reach back into the backends that make it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aloss_tune"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every ``aloss_tune`` module ``path`` imports, anywhere in it (``TYPE_CHECKING`` blocks left out: they
    never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("aloss_tune"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aloss_tune"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules} for name, path in modules.items()}


def reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_report_reads_backend_neutral_records_through_the_backend_interface_only():
    edges = graph()
    report = [m for m in edges if m == "aloss_tune.report" or m.startswith("aloss_tune.report.")]
    assert len(report) >= 6
    for module in report:
        backends = {m for m in edges[module] if m.startswith("aloss_tune.backends")}
        assert backends <= {"aloss_tune.backends.base"}, (module, backends)
        assert "aloss_tune.best" not in edges[module], module


def test_a_result_does_not_reach_back_into_best_or_the_backends():
    edges = graph()
    reached = reachable("aloss_tune.result", edges)
    assert not {m for m in reached if m == "aloss_tune.best" or m.startswith("aloss_tune.backends")}, reached
    for module in ("aloss_tune.result", "aloss_tune.best"):
        assert module not in reachable(module, edges), f"{module} imports itself back"
