"""The layer rules of DESIGN.md, checked on the code's imports (any depth, lazy ones included)."""

from __future__ import annotations

import ast
import re
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


# -- the top-level folders, as DESIGN.md's first layer table names them ------------------------

def design_rows(header: str) -> list[list[str]]:
    """The cells of each row of the DESIGN.md table whose header row starts with `header`."""
    text = (ROOT / "DESIGN.md").read_text()
    table = text[text.index(header):]
    table = table[:table.index("\n\n")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in table.splitlines()[2:]]


def top_layer_table() -> dict[str, set[str] | None]:
    """Top-level folder -> the modules and packages it may import besides its own (the
    backquoted names of its "may import" cell: project modules, or `prefect`); None for
    "everything" (the tests)."""
    known = set(modules()) | {"prefect"}
    allowed: dict[str, set[str] | None] = {}
    for cells in design_rows("| folder |"):
        folder, may = cells[0].strip("`/"), cells[2]
        names = {n.replace("/", ".").strip(".") for n in re.findall(r"`([^`]+)`", may)}
        assert names <= known, f"DESIGN.md's row of {folder}/ names what is no module: {sorted(names - known)}"
        allowed[folder] = None if may == "everything" else names
    return allowed


def layer_violations(found: dict[str, set[str]], table: dict[str, set[str] | None]) -> list[str]:
    """Every import in `found` (module -> the modules it imports) that its folder's row does
    not allow. A package above an allowed module counts as that module (`from evolver_core
    import config` names both)."""
    bad = []
    for module, imported in sorted(found.items()):
        folder = module.split(".")[0]
        allowed = table[folder]
        if allowed is None:
            continue
        for m in sorted(imported):
            if m.split(".")[0] == folder or any(m == a or m.startswith(a + ".") or a.startswith(m + ".")
                                                for a in allowed):
                continue
            bad.append(f"{module} imports {m}; DESIGN.md lets {folder}/ import {sorted(allowed)}")
    return bad


def test_every_top_level_folder_has_a_row():
    assert set(top_layer_table()) == set(PACKAGES) | {"tests"}


def test_every_import_keeps_to_its_folders_row():
    found = {module: imports(path, module) for module, path in modules().items()}
    assert layer_violations(found, top_layer_table()) == []


def test_the_check_refuses_imports_outside_a_row():
    """The check itself, on imports made up for it, against DESIGN.md's table."""
    outside = {
        "evolver_core.stages.sample": {"infra.serving"}, "evolver_core.judge.stored": {"infra.model_server"},
        "evolver_core.agents.policy": {"tasks.sample"}, "evolver_core.reporting.plots": {"flows.evolve"},
        "evolver_core.llm": {"cli.main"}, "evolver_core.data.storage": {"prefect.artifacts"},
        "infra.serving": {"evolver_core.llm"}, "infra.model_server": {"evolver_core.training.identity"},
        "infra.prefect_server": {"tasks.common"}, "infra.postgres": {"prefect"},
        "tasks.sample": {"flows.evolve"}, "tasks.judge": {"infra.model_server"}, "flows.evolve": {"cli.main"},
    }
    bad = layer_violations(outside, top_layer_table())
    assert [line.split(" imports ")[0] for line in bad] == sorted(outside)
    inside = {
        "infra.serving": {"evolver_core", "evolver_core.config", "evolver_core.models.refs", "infra.model_server"},
        "infra.prefect_server": {"evolver_core.settings", "evolver_core.pids"},
        "tasks.sample": {"evolver_core.stages.sample", "infra.serving", "prefect"},
        "cli.main": {"flows.evolve", "infra.serving", "evolver_core.presets"},
        "evolver_core.stages.judge": {"evolver_core.models.serving"},
    }
    assert layer_violations(inside, top_layer_table()) == []


def test_no_import_cycles():
    graph = {m: imports(p, m) for m, p in modules().items()}
    # A package's __init__ importing its own modules is not a cycle of concepts.
    graph = {m: {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")}
             for m, deps in graph.items()}
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


# -- evolver_core's folders, as DESIGN.md's layer table names them ----------------------------

DOMAIN = "evolver_core"


def folder_of(module: str) -> str | None:
    """The `evolver_core` folder (or top-level module) a module belongs to; None outside it."""
    parts = module.split(".")
    if parts[0] != DOMAIN or len(parts) < 2:
        return None
    return parts[1]


def design_layer_table() -> dict[str, set[str]]:
    """DESIGN.md's `evolver_core` layer table: folder (or module) -> what it may import."""
    allowed: dict[str, set[str]] = {}
    for cells in design_rows("| `evolver_core` folder |"):
        names = [n.strip("`/").removesuffix(".py") for n in cells[0].split(", ")]
        may = cells[2]
        named = {w.strip("`,") for w in may.split() if w.startswith("`")}
        # "every folder above" (stages) / "every folder but `x`" (benchmarks): all but those named
        may_import = ({"*"} | {f"-{n}" for n in named}) if may.startswith("every folder") else named
        for name in names:
            allowed[name] = may_import
    return allowed


def folder_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in modules().items():
        here = folder_of(module)
        if here is None:
            continue
        graph.setdefault(here, set())
        graph[here] |= {f for f in map(folder_of, imports(path, module)) if f is not None and f != here}
    return graph


def test_every_evolver_core_folder_is_in_the_layer_table_and_imports_only_what_it_allows():
    allowed, graph = design_layer_table(), folder_graph()
    assert set(graph) - {"__init__"} <= set(allowed), f"folders missing from DESIGN.md: {set(graph) - set(allowed)}"
    for folder, imported in graph.items():
        rule = allowed.get(folder, set())
        banned = {r[1:] for r in rule if r.startswith("-")} if "*" in rule else imported - rule
        bad = imported & banned
        assert not bad, f"evolver_core/{folder} imports {sorted(bad)}; DESIGN.md allows {sorted(rule)}"


def test_no_folder_cycles():
    graph = folder_graph()

    def reaches(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    loops = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if a in reaches(b))
    assert not loops, f"folders that import each other: {loops}"
