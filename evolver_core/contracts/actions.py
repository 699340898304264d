"""The action grammar: one parser, one formatter, and a regex/JSON-schema of the same grammar.

Grammar (DESIGN.md "Contracts")::

    click [id]
    type [id] [text] [press_enter_after=0|1]     (the flag is optional; default 1)
    scroll [up|down]                             (``scroll [direction=down]`` also accepted)
    goback
    restart
    wait
    stop [answer]                                (``stop`` alone = no answer)

Text and answers may contain ``]``: the bracket that closes a text is the last ``]`` before
the optional ``[press_enter_after=..]`` (for type) or the end of the action (for stop).
Newlines are not allowed inside an action; the formatter refuses them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

_FLAG_TEXT = re.compile(r"\]\s*\[\s*press_enter_after\s*=")

ActionName = Literal["click", "type", "scroll", "goback", "restart", "wait", "stop"]
ACTION_NAMES: tuple[str, ...] = ("click", "type", "scroll", "goback", "restart", "wait", "stop")


# How each action is written, as the policy's prompt lists them (`describe_actions`): the
# prompt is generated from the grammar, so the two cannot drift.
ACTION_SIGNATURES: dict[str, str] = {
    "click": "click [id]", "type": "type [id] [text] [press_enter_after=0|1]", "scroll": "scroll [up|down]",
    "goback": "goback", "restart": "restart", "wait": "wait", "stop": "stop [answer]",
}


def describe_actions() -> str:
    """The grammar in one line, for prompts: ``click [id] | type [id] [text] ... | stop [answer]``."""
    return " | ".join(ACTION_SIGNATURES[name] for name in ACTION_NAMES)


class ActionParseError(ValueError):
    """The text is not an action of the grammar; the message says what is wrong."""


@dataclass(frozen=True)
class Action:
    name: ActionName
    element_id: int | None = None
    text: str | None = None  # typed text for `type`, answer for `stop`
    press_enter_after: bool = True
    direction: Literal["up", "down"] | None = None

    def __post_init__(self) -> None:
        if self.name not in ACTION_NAMES:
            raise ActionParseError(f"unknown action {self.name!r}")
        if self.name in ("click", "type") and (self.element_id is None or self.element_id < 1):
            raise ActionParseError(f"{self.name} needs a positive element id")
        if self.name == "type" and self.text is None:
            raise ActionParseError("type needs a text")
        if self.name == "scroll" and self.direction not in ("up", "down"):
            raise ActionParseError("scroll needs a direction, up or down")
        if self.text is not None and ("\n" in self.text or "\r" in self.text):
            raise ActionParseError("text may not contain a newline")
        if self.text is not None and _FLAG_TEXT.search(self.text):
            raise ActionParseError("text may not contain a press_enter_after flag")

    def __str__(self) -> str:
        return format_action(self)


_ID = r"\[\s*(\d+)\s*\]"
_CLICK = re.compile(rf"^click\s*{_ID}$")
_TYPE = re.compile(rf"^type\s*{_ID}\s*\[(.*)\](?:\s*\[\s*press_enter_after\s*=\s*([01])\s*\])?$")
_TYPE_FLAG_ONLY = re.compile(r"^(.*)\]\s*\[\s*press_enter_after\s*=\s*([01])\s*$")
_SCROLL = re.compile(r"^scroll\s*\[\s*(?:direction\s*=\s*)?(up|down)\s*\]$")
_STOP = re.compile(r"^stop(?:\s*\[(.*)\])?$")
_BARE = re.compile(r"^(goback|restart|wait)$")


def parse_action(text: str) -> Action:
    """Parse one action string. Raises ActionParseError with a readable reason."""
    s = text.strip().strip("`").strip()
    if not s:
        raise ActionParseError("empty action")
    if "\n" in s:
        raise ActionParseError("an action is one line")
    if m := _CLICK.match(s):
        return Action("click", element_id=int(m.group(1)))
    if m := _TYPE.match(s):
        body, flag = m.group(2), m.group(3)
        if flag is None and (inner := _TYPE_FLAG_ONLY.match(body)):
            # `[text] [press_enter_after=1]` was swallowed whole by the greedy group.
            body, flag = inner.group(1), inner.group(2)
        return Action("type", element_id=int(m.group(1)), text=body,
                      press_enter_after=(flag != "0"))
    if m := _SCROLL.match(s):
        return Action("scroll", direction=m.group(1))  # type: ignore[arg-type]
    if m := _STOP.match(s):
        return Action("stop", text=m.group(1))
    if m := _BARE.match(s):
        return Action(m.group(1))  # type: ignore[arg-type]
    head = s.split()[0].split("[")[0].lower()
    if head not in ACTION_NAMES:
        raise ActionParseError(f"unknown action {head!r}; expected one of {', '.join(ACTION_NAMES)}")
    raise ActionParseError(f"malformed {head} action {s!r}")


def format_action(action: Action) -> str:
    """The canonical text of an action; parse_action(format_action(a)) == a."""
    if action.name == "click":
        return f"click [{action.element_id}]"
    if action.name == "type":
        flag = 1 if action.press_enter_after else 0
        return f"type [{action.element_id}] [{action.text}] [press_enter_after={flag}]"
    if action.name == "scroll":
        return f"scroll [{action.direction}]"
    if action.name == "stop":
        return "stop" if action.text is None else f"stop [{action.text}]"
    return action.name


_ELEMENT_ID_REGEX = r"[1-9][0-9]*"


def action_regex(click_ids: Iterable[int] | None = None) -> str:
    """The action grammar for constrained decoding (vLLM `structured_outputs` regex), clicks
    limited to `click_ids` when given (none: no click)."""
    others = [rf"type \[{_ELEMENT_ID_REGEX}\] \[[^\n]*\] \[press_enter_after=[01]\]", r"scroll \[(up|down)\]",
              "goback|restart|wait", r"stop( \[[^\n]*\])?"]
    ids = _ELEMENT_ID_REGEX if click_ids is None else "|".join(map(str, sorted(set(click_ids))))
    clicks = [rf"click \[({ids})\]"] if ids else []
    return "(" + "|".join(clicks + others) + ")"


def reply_regex(click_ids: Iterable[int] | None = None) -> str:
    """A whole reply, "Thought: ... Action: <action>", as a grammar (`action_regex`)."""
    return r"Thought: [^\n]+\nAction: " + action_regex(click_ids)


ACTION_REGEX = action_regex()
REPLY_REGEX = reply_regex()

ACTION_JSON_SCHEMA: dict = {
    "title": "WebAction",
    "type": "object",
    "properties": {
        "name": {"enum": list(ACTION_NAMES)},
        "element_id": {"type": ["integer", "null"], "minimum": 1},
        "text": {"type": ["string", "null"]},
        "press_enter_after": {"type": "boolean"},
        "direction": {"enum": ["up", "down", None]},
    },
    "required": ["name"],
    "additionalProperties": False,
}


def action_from_json(obj: dict) -> Action:
    """Build an Action from the JSON-schema form (for structured outputs)."""
    try:
        return Action(**{k: obj[k] for k in ACTION_JSON_SCHEMA["properties"] if k in obj})
    except TypeError as exc:
        raise ActionParseError(str(exc)) from exc


def action_to_json(action: Action) -> dict:
    return {
        "name": action.name,
        "element_id": action.element_id,
        "text": action.text,
        "press_enter_after": action.press_enter_after,
        "direction": action.direction,
    }
