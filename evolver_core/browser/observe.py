"""Build an `Observation` from a live page with two CDP calls.

`Accessibility.getFullAXTree` gives the tree; ONE `DOMSnapshot.captureSnapshot` gives every
layout box, so the viewport filter costs no per-node round trips (the reference measured each
node separately, about 10x slower: RESULTS.md R2).

Rules (after the reference implementation, with its bugs left out):
- a node without a layout box, or with less than half of its area inside the viewport, is
  dropped and its children move up to its parent; `option`s of a native <select> have no
  box, so they take the box of their <select> (the agent can pick them with `click`);
- nodes without a name are dropped unless interactive (unnamed textboxes stay: MiniWoB's
  login-user has them);
- StaticText / heading / image / generic / gridcell nodes whose name is contained in the
  nearest kept ancestor's name are dropped (they repeat it);
- ids are 1-based in document order; at most `max_elements` are numbered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evolver_core.contracts.observation import Element, Observation, Tab

INTERACTIVE_ROLES = frozenset({
    "button", "checkbox", "combobox", "link", "listbox", "menuitem", "menuitemcheckbox",
    "menuitemradio", "option", "radio", "searchbox", "slider", "spinbutton", "switch", "tab",
    "textbox", "treeitem", "textarea", "ListBoxOption", "MenuListOption",
})
REDUNDANT_ROLES = frozenset({"StaticText", "heading", "image", "generic", "gridcell"})
SKIP_ROLES = frozenset({"InlineTextBox", "LineBreak", "none", "presentation"})
HIDDEN_PROPS = frozenset({
    "focusable", "editable", "readonly", "level", "settable", "multiline", "invalid",
    "hiddenRoot", "hidden", "controls", "labelledby", "describedby", "url",
})
OPTION_PARENT_ROLES = frozenset({"combobox", "MenuListPopup", "listbox"})
DEFAULT_MAX_ELEMENTS = 300


@dataclass(frozen=True)
class Viewport:
    x: float
    y: float
    width: float
    height: float

    def visible_fraction(self, box: tuple[float, float, float, float]) -> float:
        bx, by, bw, bh = box
        if bw <= 0 or bh <= 0:
            return 0.0
        ix = max(0.0, min(bx + bw, self.x + self.width) - max(bx, self.x))
        iy = max(0.0, min(by + bh, self.y + self.height) - max(by, self.y))
        return (ix * iy) / (bw * bh)


def layout_boxes(snapshot: dict[str, Any]) -> dict[int, tuple[float, float, float, float]]:
    """backend node id -> (x, y, w, h) in document coordinates, main document only."""
    doc = snapshot["documents"][0]
    backend_ids = doc["nodes"]["backendNodeId"]
    layout = doc["layout"]
    return {backend_ids[i]: tuple(b) for i, b in zip(layout["nodeIndex"], layout["bounds"])}  # type: ignore[misc]


def _value(field: dict | None) -> Any:
    return (field or {}).get("value")


def _props(node: dict) -> dict[str, str]:
    props: dict[str, str] = {}
    value = _value(node.get("value"))
    if value not in (None, ""):
        props["value"] = str(value)
    for p in node.get("properties") or []:
        name = p.get("name")
        if name in HIDDEN_PROPS:
            continue
        v = _value(p.get("value"))
        if v in (None, "", False) and name not in ("checked", "expanded", "selected", "pressed"):
            continue
        props[name] = str(v).lower() if isinstance(v, bool) else str(v)
    return props


def build_elements(
    ax_nodes: list[dict],
    boxes: dict[int, tuple[float, float, float, float]],
    viewport: Viewport,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> tuple[list[Element], bool]:
    """Filter and number the AX tree; returns (elements, truncated)."""
    by_id = {n["nodeId"]: n for n in ax_nodes}
    root = ax_nodes[0] if ax_nodes else None
    elements: list[Element] = []
    truncated = False

    def visit(node: dict, depth: int, ancestor_name: str, inherited_box: tuple | None) -> None:
        nonlocal truncated
        if len(elements) >= max_elements:
            truncated = True
            return
        role = _value(node.get("role")) or ""
        name = (_value(node.get("name")) or "").strip()
        backend = node.get("backendDOMNodeId")
        box = boxes.get(backend) if backend is not None else None
        if box is None and role in ("option", "MenuListOption", "ListBoxOption"):
            box = inherited_box
        is_root = node is root
        keep = not node.get("ignored") and role not in SKIP_ROLES and backend is not None
        if keep and not is_root:
            keep = box is not None and viewport.visible_fraction(box) >= 0.5
        if keep and not is_root and not name and role not in INTERACTIVE_ROLES:
            keep = False
        if keep and role in REDUNDANT_ROLES and name and name in ancestor_name:
            keep = False
        child_depth, child_ancestor = depth, ancestor_name
        if keep:
            elements.append(Element(
                id=len(elements) + 1, role=role, name=name, depth=depth,
                props=_props(node), backend_node_id=backend,
            ))
            # The root's name is the page title: not a container whose text children repeat it.
            child_depth, child_ancestor = depth + 1, ("" if is_root else name)
        child_box = (box or inherited_box) if role in OPTION_PARENT_ROLES else inherited_box
        for cid in node.get("childIds") or []:
            child = by_id.get(cid)
            if child is not None:
                visit(child, child_depth, child_ancestor, child_box)

    if root is not None:
        visit(root, 0, "", None)
    return elements, truncated


async def observe(page: Any, cdp: Any, *, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Observation:
    """The observation of `page` (a Playwright Page) through its CDP session `cdp`."""
    ax = await cdp.send("Accessibility.getFullAXTree")
    snapshot = await cdp.send("DOMSnapshot.captureSnapshot", {"computedStyles": []})
    doc = snapshot["documents"][0]
    size = page.viewport_size or {"width": 1280, "height": 720}
    viewport = Viewport(doc.get("scrollOffsetX", 0), doc.get("scrollOffsetY", 0), size["width"], size["height"])
    elements, truncated = build_elements(ax["nodes"], layout_boxes(snapshot), viewport, max_elements)
    tabs = []
    for i, p in enumerate(page.context.pages, start=1):
        try:
            title = await p.title()
        except Exception:  # a tab that is closing or crashed has no title
            title = ""
        tabs.append(Tab(index=i, title=title, current=p is page))
    return Observation(url=page.url, tabs=tabs, elements=elements, truncated=truncated)
