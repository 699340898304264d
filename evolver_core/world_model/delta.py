r"""The delta format: what the world model writes in `delta` mode instead of the whole next page.

A 135M model copies a 100-300 token tree badly (it loops to the token cap), while most web
actions change a line or two (a typed value, a focus, an appended "START" when a MiniWoB
episode ends). So the world model writes what changes, and `apply_delta` turns it into the
complete next page in code: every prediction is a full tree with ids 1..n in document order.

Grammar (one change a line; `format_delta` writes this order, `parse_delta` takes any order):

    = episode ends[: success|failure]   first line when the action ends the episode
    = page replaced                     then the whole next page, verbatim, to the end
    = no change                         the page stays as it is
    ~ Tab 1 (current): <title>          every tab line of the next page, when any changed
    - [3]   or   - [3-9]                elements of the CURRENT page that are gone (a range is inclusive)
    ~ \t[4] textbox '' focused: true    an element kept in place that reads differently now
    + \t[9] StaticText 'START'          a new element

`~` and `+` lines are lines of the NEXT page as they will read there (depth by leading tabs,
the next page's id), as in a unified diff, where `-` lines speak of the old text and `+` of
the new. Ids shift when an element appears or goes away in the middle; the delta needs no
renumbering: the kept elements of the current page, in order, fill the next page's ids that
no `+` line takes, and a `~` line replaces the kept element at its id. Without insertions or
removals before an element, its id is the same in both pages (the common case). A `~` line
past the next page's end is read as a `+` (the one thing it can mean).

`diff` writes "page replaced" when fewer than half of the next page's elements (same role and
name, properties aside) were on the current page: a navigation (WMA, Chae et al. 2025, also
describe changes and fall back to the whole page when most of it changed); and when a page is
not in the observation format. `\t` above is a tab (tree depth).
Round trip, tested on real MiniWoB and sandbox transitions:
``apply_delta(cur, parse_delta(format_delta(diff(cur, nxt)))) == nxt``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from itertools import groupby

from evolver_core.contracts.observation import ELEMENT_ID, ELEMENT_LINE

ENDS = "= episode ends"
REPLACED = "= page replaced"
NO_CHANGE = "= no change"
ADDED, UPDATED = "+", "~"
OUTCOMES = {"success": True, "failure": False}  # the words of `ends_line`
_TAB = "Tab "
_ENDS_LINE = re.compile(r"^= episode ends(?:: (success|failure))?$")
_REMOVED_LINE = re.compile(r"^- \[(\d+)(?:-(\d+))?\]$")

# The same grammar for constrained decoding (vLLM structured output), as `REPLY_REGEX`.
_ELEMENT_REGEX = r"\t*\[[0-9]+\] [^ \n]+ '[^\n]*"
_CHANGE_REGEX = rf"(- \[[0-9]+(-[0-9]+)?\]|~ Tab [^\n]*|[+~] {_ELEMENT_REGEX})"
PAGE_REGEX = rf"((Tab [^\n]*\n)+\n)?{_ELEMENT_REGEX}(\n{_ELEMENT_REGEX})*"
_BODY_REGEX = rf"({REPLACED}\n{PAGE_REGEX}|{_CHANGE_REGEX}(\n{_CHANGE_REGEX})*)"
DELTA_REGEX = rf"{ENDS}(: (success|failure))?(\n{_BODY_REGEX})?|{NO_CHANGE}|{_BODY_REGEX}"


class DeltaError(ValueError):
    """Text that is not a delta, or a delta that does not fit the current page."""


@dataclass(frozen=True)
class Change:
    """A `+` (new) or `~` (updated) element: its line in the next page."""

    op: str  # ADDED | UPDATED
    line: str  # as the next page has it: indent, [next-page id], role, name, properties

    @property
    def id(self) -> int:
        return int(ELEMENT_LINE.match(self.line).group(2))  # type: ignore[union-attr]


@dataclass(frozen=True)
class Delta:
    removed: tuple[int, ...] = ()  # ids in the current page, ascending
    changes: tuple[Change, ...] = ()  # by next-page id, ascending
    tabs: tuple[str, ...] = ()  # the next page's tab lines when they changed, else ()
    page: str | None = None  # the whole next page when it is replaced
    ends: bool = False  # the action ends the episode
    success: bool | None = None  # how it ended, when known (a real transition's gold reward)

    def __post_init__(self) -> None:
        if self.success is not None and not self.ends:
            raise ValueError("an outcome needs `ends`")
        if self.page is not None and (self.removed or self.changes or self.tabs):
            raise ValueError("a replaced page carries no changes")


@dataclass(frozen=True)
class _Page:
    tabs: tuple[str, ...] | None  # None: a bare tree without the tab block
    lines: tuple[str, ...]  # element lines, ids 1..n


def _split(text: str) -> _Page | None:
    """The tab and element lines of an observation text; None unless in the format (ids 1..n)."""
    tabs: tuple[str, ...] | None = None
    tree = text
    if "\n\n" in text:
        head, tree = text.split("\n\n", 1)
        tabs = tuple(head.split("\n")) if head else ()
        if not all(t.startswith(_TAB) for t in tabs):
            return None
    lines = tuple(tree.split("\n")) if tree else ()
    for i, line in enumerate(lines, 1):
        m = ELEMENT_LINE.match(line)
        if m is None or int(m.group(2)) != i:
            return None
    return _Page(tabs, lines)


def _render(page: _Page) -> str:
    tree = "\n".join(page.lines)
    return tree if page.tabs is None else "\n".join(page.tabs) + "\n\n" + tree


def _content(line: str) -> str:
    """An element line without its id: what stays the same when only the id shifts."""
    return ELEMENT_ID.sub(r"\1", line, count=1)


def _renumber(line: str, new_id: int) -> str:
    return ELEMENT_ID.sub(rf"\g<1>[{new_id}] ", line, count=1)


def _identity(line: str) -> tuple[str, str]:
    """Role and name: an element whose properties changed is still the same element."""
    m = ELEMENT_LINE.match(line)
    return m.group(3), m.group(4)  # type: ignore[union-attr]


def _edits(cur: _Page, nxt: _Page) -> tuple[Delta, int] | None:
    """The changes, and how many elements of the next page are elements of the current one."""
    tabs: tuple[str, ...] = ()
    if nxt.tabs != cur.tabs:
        if not nxt.tabs:  # a page that loses its tab block is no change of tab lines
            return None
        tabs = nxt.tabs
    removed: list[int] = []
    changes: list[Change] = []
    old, new = [_content(line) for line in cur.lines], [_content(line) for line in nxt.lines]
    same = 0
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            same += i2 - i1
            continue
        paired = min(i2 - i1, j2 - j1) if tag == "replace" else 0  # read as updates in place
        changes += [Change(UPDATED, nxt.lines[j]) for j in range(j1, j1 + paired)]
        same += sum(_identity(cur.lines[i1 + k]) == _identity(nxt.lines[j1 + k]) for k in range(paired))
        changes += [Change(ADDED, nxt.lines[j]) for j in range(j1 + paired, j2)]
        removed += range(i1 + paired + 1, i2 + 1)
    return Delta(removed=tuple(removed), changes=tuple(changes), tabs=tabs), same


def edits(current: str, next_page: str) -> Delta | None:
    """Every element-level change from `current` to `next_page`, never "page replaced"; None when
    either page is not in the observation format, or the tab lines cannot be said as changes.
    (`diff` picks between this and the whole page; fidelity compares edits element by element.)"""
    cur, nxt = _split(current), _split(next_page)
    found = None if cur is None or nxt is None else _edits(cur, nxt)
    return None if found is None else found[0]


def diff(current: str, next_page: str, *, ends: bool = False, success: bool | None = None) -> Delta:
    """The delta of a real transition (a training target): its changes, or the whole next page
    when fewer than half of its elements (same role and name) were on the current page, or a
    page is not in the format (module docstring). `ends`/`success` come from the episode (the
    last transition of one that the page ended, and its gold reward), not from the pages."""
    cur, nxt = _split(current), _split(next_page)
    if cur is not None and nxt is not None and (found := _edits(cur, nxt)) is not None:
        delta, same = found
        if 2 * same >= len(nxt.lines):
            return replace(delta, ends=ends, success=success)
    return Delta(page=next_page, ends=ends, success=success)


def _runs(ids: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """Ascending ids as inclusive runs of consecutive ids."""
    for _, group in groupby(enumerate(ids), key=lambda p: p[1] - p[0]):
        run = [i for _, i in group]
        yield run[0], run[-1]


def ends_line(success: bool | None) -> str:
    """The line that says the action ends the episode (and how, when known)."""
    return ENDS if success is None else f"{ENDS}: {'success' if success else 'failure'}"


def read_ends_line(line: str) -> tuple[bool, bool | None]:
    """(ends, success) of a line that may be `ends_line`'s."""
    m = _ENDS_LINE.match(line.rstrip())
    return (False, None) if m is None else (True, None if m.group(1) is None else OUTCOMES[m.group(1)])


def format_delta(delta: Delta) -> str:
    """The delta's text (module docstring)."""
    lines = []
    if delta.ends:
        lines.append(ends_line(delta.success))
    if delta.page is not None:
        return "\n".join([*lines, REPLACED, delta.page])
    lines += [f"{UPDATED} {t}" for t in delta.tabs]
    lines += [f"- [{a}]" if a == b else f"- [{a}-{b}]" for a, b in _runs(delta.removed)]
    lines += [f"{c.op} {c.line}" for c in delta.changes]
    return "\n".join(lines) or NO_CHANGE


def parse_delta(text: str) -> Delta:
    """The delta a text says; raises `DeltaError` on an empty text, any line outside the grammar,
    an id named twice, or a change line whose element is not in the tree-line format."""
    lines = text.split("\n")
    ends, success = False, None
    if (m := _ENDS_LINE.match(lines[0])) is not None:
        ends, success = True, None if m.group(1) is None else OUTCOMES[m.group(1)]
        lines = lines[1:]
    if lines and lines[0] == REPLACED:
        return Delta(page="\n".join(lines[1:]), ends=ends, success=success)
    removed: list[int] = []
    changes: list[Change] = []
    tabs: list[str] = []
    body = [line for line in lines if line.strip()]  # a model's stray blank lines say nothing
    if not body and not ends:
        raise DeltaError("an empty delta (no change is said `= no change`)")
    if body == [NO_CHANGE]:
        body = []
    for line in body:
        if (m := _REMOVED_LINE.match(line)) is not None:
            first, last = int(m.group(1)), int(m.group(2) or m.group(1))
            if last < first:
                raise DeltaError(f"empty range: {line!r}")
            removed += range(first, last + 1)
        elif line.startswith(f"{UPDATED} {_TAB}"):
            tabs.append(line[2:])
        elif line[:2] in (f"{ADDED} ", f"{UPDATED} ") and ELEMENT_LINE.match(line[2:]):
            changes.append(Change(line[0], line[2:]))
        else:
            raise DeltaError(f"not a delta line: {line!r}")
    if len(set(removed)) != len(removed) or len({c.id for c in changes}) != len(changes):
        raise DeltaError("an id is named twice")
    return Delta(removed=tuple(sorted(removed)), changes=tuple(sorted(changes, key=lambda c: c.id)),
                 tabs=tuple(tabs), ends=ends, success=success)


def apply_delta(current: str, delta: Delta) -> str:
    """The complete next page: `current` with the delta applied, ids renumbered 1..n in
    document order (a `~` past the next page's end adds the element). Raises `DeltaError`
    when the delta names ids the pages do not have."""
    if delta.page is not None:
        return delta.page
    page = _split(current)
    if page is None:
        raise DeltaError("the current page is not in the observation format")
    if any(not 1 <= i <= len(page.lines) for i in delta.removed):
        raise DeltaError(f"removes an id the current page does not have (1..{len(page.lines)})")
    gone = set(delta.removed)
    kept = iter(line for i, line in enumerate(page.lines, 1) if i not in gone)
    end = len(page.lines) - len(gone) + sum(c.op == ADDED for c in delta.changes)
    # An update past the next page's last element can only mean a new element there: the
    # small world model's usual slip for an appended one (MiniWoB's 'START' at an episode end).
    changes = [replace(c, op=ADDED) if c.op == UPDATED and c.id > end else c for c in delta.changes]
    size = len(page.lines) - len(gone) + sum(c.op == ADDED for c in changes)
    by_id = {c.id: c for c in changes}
    if any(not 1 <= i <= size for i in by_id):
        raise DeltaError(f"changes an id the next page does not have (1..{size})")
    lines = []
    for i in range(1, size + 1):
        change = by_id.get(i)
        if change is not None and change.op == ADDED:
            lines.append(change.line)
        else:
            line = next(kept)
            lines.append(change.line if change is not None else _renumber(line, i))
    return _render(_Page(delta.tabs or page.tabs, tuple(lines)))


def change_items(delta: Delta) -> list[str]:
    """The delta's changes one element at a time (a removal range is one item per id): what
    changed-element F1 compares. A replaced page has none: compare `edits`, not `diff`."""
    return ([f"{UPDATED} {t}" for t in delta.tabs] + [f"- [{i}]" for i in delta.removed]
            + [f"{c.op} {c.line}" for c in delta.changes])
