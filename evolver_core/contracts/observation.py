"""The observation record the agent sees (DESIGN.md "Contracts").

`Observation.text` is what goes into prompts: one line per open tab, a blank line, then the
accessibility tree of the viewport, `[id] role 'name' prop: value`, indented by depth.
`elements` keeps the same lines in structured form (for scripted solvers and tests), and
`node_map` maps each id to the backend DOM node the executor acts on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

INDENT = "\t"
# The parsers of the same format (for text that claims to be an observation: a world model's
# predicted page): an element line as `Element.line` writes it (groups: indent, id, role,
# name), its id prefix, and where a tree (or its tab lines) starts.
ELEMENT_LINE = re.compile(r"^(\t*)\[(\d+)\] (\S+) '(.*?)'(?: [\w-]+: .*)?$")
ELEMENT_ID = re.compile(r"^(\t*)\[\d+\] ")
TREE_START = re.compile(r"^(\[1\] |Tab )", re.MULTILINE)


@dataclass(frozen=True)
class Element:
    id: int
    role: str
    name: str
    depth: int
    props: dict[str, str] = field(default_factory=dict)
    backend_node_id: int = 0

    def line(self) -> str:
        props = "".join(f" {k}: {v}" for k, v in self.props.items())
        name = self.name.replace("\n", " ")
        return f"{INDENT * self.depth}[{self.id}] {self.role} '{name}'{props}"


@dataclass(frozen=True)
class Tab:
    index: int
    title: str
    current: bool

    def line(self) -> str:
        return f"Tab {self.index}{' (current)' if self.current else ''}: {self.title}"


@dataclass
class Observation:
    url: str
    tabs: list[Tab]
    elements: list[Element]
    error: str | None = None  # what went wrong with the previous action, shown to the agent
    truncated: bool = False  # True when the element cap cut the tree

    @property
    def tree(self) -> str:
        return "\n".join(e.line() for e in self.elements)

    @property
    def text(self) -> str:
        tabs = "\n".join(t.line() for t in self.tabs)
        return f"{tabs}\n\n{self.tree}"

    @property
    def node_map(self) -> dict[int, int]:
        return {e.id: e.backend_node_id for e in self.elements}

    def find(self, role: str | None = None, name: str | None = None, *, contains: str | None = None) -> list[Element]:
        """Elements matching a role and/or an exact name (or a name substring)."""
        out = []
        for e in self.elements:
            if role is not None and e.role != role:
                continue
            if name is not None and e.name != name:
                continue
            if contains is not None and contains.lower() not in e.name.lower():
                continue
            out.append(e)
        return out

    def first(self, role: str | None = None, name: str | None = None, *, contains: str | None = None) -> Element | None:
        found = self.find(role, name, contains=contains)
        return found[0] if found else None
