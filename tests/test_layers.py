"""The layer rules of DESIGN.md, checked on the code's imports (any depth, lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("evolver_core", "tasks", "flows", "infra", "cli")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def imports(path: Path, module: str, *, top_level_only: bool = False) -> set[str]:
    """Project modules `path` imports (`from pkg import name` counts as pkg.name when that is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    known = modules()
    return {m for m in found if m in known and m != module} | {m for m in found if m.split(".")[0] == "prefect"}


def test_evolver_core_never_imports_prefect_and_reaches_infra_only_for_serving():
    for module, path in modules().items():
        if not module.startswith("evolver_core"):
            continue
        found = imports(path, module)
        assert not {m for m in found if m.startswith("prefect")}, f"{module} imports prefect"
        into_infra = {m for m in found if m.startswith("infra")}
        if module.startswith("evolver_core.stages"):
            assert into_infra <= {"infra.serving"}, f"{module} imports {into_infra}"
        else:
            assert not into_infra, f"{module} imports {into_infra}"
        assert not {m for m in found if m.split(".")[0] in ("tasks", "flows", "cli")}, f"{module} imports upward"


def test_lower_layers_never_import_upper_ones():
    upper = {"infra": ("tasks", "flows", "cli"), "tasks": ("flows", "cli"), "flows": ("cli",)}
    for module, path in modules().items():
        banned = upper.get(module.split(".")[0], ())
        bad = {m for m in imports(path, module) if m.split(".")[0] in banned}
        assert not bad, f"{module} imports {bad}"


def test_no_import_cycles():
    graph = {m: imports(p, m) for m, p in modules().items()}
    # A package's __init__ importing its own modules is not a cycle of concepts.
    graph = {m: {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
