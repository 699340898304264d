"""The reply format, one renderer and one parser: ``Thought: <thought>\nAction: <action>``
is what the policy is asked for, trained on (`format_reply`) and read back (`parse_reply`),
and what the suites' scripted solvers produce (`Reply`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

FORMAT_ERROR = "Format ERROR: both Thought and Action needed"

_FENCE_OPEN = re.compile(r"^\s*```[\w-]*[ \t]*\n")  # "```" or "```text" alone on its line
# A label opening a line (possibly decorated: "**Action:**") wins over one inside a line.
_LINE_LABEL = re.compile(r"^[ \t>*#`]*(thought|action)[ \t*]*:\**", re.IGNORECASE | re.MULTILINE)
_ANY_LABEL = re.compile(r"\b(thought|action)[ \t*]*:\**", re.IGNORECASE)


@dataclass(frozen=True)
class Reply:
    """One agent turn: the reasoning and the action text (parsed later by the rollout)."""

    thought: str
    action: str
    error: str | None = None  # FORMAT_ERROR when a part is missing
    raw: str = ""


def format_reply(thought: str, action: str) -> str:
    """The assistant turn: the format the policy is asked for and trained on."""
    return f"Thought: {thought}\nAction: {action}"


def parse_reply(text: str) -> Reply:
    """Thought and action text of a model reply; tolerant, never raises.

    Labels are case-insensitive and may be decorated (``**Action:**``); a label opening a
    line wins over one inside a line, else the first one counts. The action is the first
    non-empty line after its label, without backticks (also a fenced block). Without an
    ``Action:`` label the action text is empty (an invalid action).
    """
    text = text or ""
    labels: dict[str, re.Match] = {}
    for m in [*_LINE_LABEL.finditer(text), *_ANY_LABEL.finditer(text)]:
        labels.setdefault(m.group(1).lower(), m)
    thought = action = ""
    if (t := labels.get("thought")) is not None:
        a = labels.get("action")
        end = a.start() if a is not None and a.start() > t.end() else len(text)
        thought = " ".join(text[t.end():end].split())
    if (a := labels.get("action")) is not None:
        rest = _FENCE_OPEN.sub("", text[a.end():])
        action = next((line.strip().strip("`").strip() for line in rest.splitlines() if line.strip("` \t")), "")
    error = None if thought and action else FORMAT_ERROR
    return Reply(thought=thought, action=action, error=error)
