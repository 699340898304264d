"""The policy's prompt, built in one place for sampling, look-ahead and SFT.

Prompt layout at step t (c_t^clip, as in the reference, DESIGN.md "Contracts"):

    system     instruction with the action grammar (+ optional few-shot examples)
    for each past step i:
      user       its observation if it is among the last k observations, else a fixed
                 placeholder (``<|im_omitted|>``)
      assistant  "Thought: <thought>\\nAction: <action>" of step i
    user       "OBSERVATION:\\n<current observation>\\nOBJECTIVE: <query>"

An observation is shown as the error of the previous action, if any, then the page
(`render_observation`, the only place the two are joined). Every past thought and action
is kept; only the last k observations are (k=1: only the current one). `build_messages` is
a pure function of plain values, so the SFT conversion builds exactly the layout the policy
is prompted with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evolver_core.contracts.actions import describe_actions
from evolver_core.contracts.episode import StepResult
from evolver_core.contracts.reply import format_reply
from evolver_core.prompts import load_prompt

ERROR_PREFIX = "ERROR: "


def render_observation(page: str, error: str | None) -> str:
    """What the agent reads: the error of its previous action first, then the page."""
    return f"{ERROR_PREFIX}{error}\n\n{page}" if error else page


@dataclass(frozen=True)
class PastStep:
    """What the prompt keeps of an earlier step."""

    observation: str  # the page the agent saw
    thought: str
    action: str  # raw action text as the agent wrote it
    error_shown: str | None = None  # the previous action's error shown beside that page

    @classmethod
    def from_step(cls, step: StepResult) -> PastStep:
        return cls(observation=step.observation, thought=step.turn.thought, action=step.turn.action,
                   error_shown=step.error_shown)


@dataclass(frozen=True)
class FewShot:
    """A worked example shown in the system prompt."""

    observation: str
    objective: str
    thought: str
    action: str


def user_turn(observation: str, objective: str) -> str:
    return load_prompt("policy_user", observation=observation, objective=objective)


def system_prompt(few_shot: Sequence[FewShot] = ()) -> str:
    parts = [load_prompt("policy_system", actions=describe_actions())]
    parts += [load_prompt("policy_example", user=user_turn(ex.observation, ex.objective),
                          reply=format_reply(ex.thought, ex.action)) for ex in few_shot]
    return "\n\n".join(parts)


def build_messages(objective: str, page: str, history: Sequence[PastStep], k: int = 1,
                   few_shot: Sequence[FewShot] = (), *, error: str | None = None) -> list[dict]:
    """The chat messages for the current step (see the module docstring): `page` and `error`
    are the current page and the previous action's error. `k` >= 1 counts the current
    observation, so past step i keeps its observation iff i >= len(history) - (k-1)."""
    if k < 1:
        raise ValueError("k counts the current observation: it must be >= 1")
    messages = [{"role": "system", "content": system_prompt(few_shot)}]
    first_kept = len(history) - (k - 1)
    for i, step in enumerate(history):
        shown = load_prompt("policy_past_user", observation=render_observation(step.observation, step.error_shown)) \
            if i >= first_kept else load_prompt("policy_omitted")
        messages += [{"role": "user", "content": shown},
                     {"role": "assistant", "content": format_reply(step.thought, step.action)}]
    messages.append({"role": "user", "content": user_turn(render_observation(page, error), objective)})
    return messages
