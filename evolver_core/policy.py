"""The model policy: an LLM behind the OpenAI API playing the `Agent` protocol.

Prompt layout at step t (c_t^clip, as in the reference, DESIGN.md "Contracts"):

    system     instruction with the action grammar (+ optional few-shot examples)
    for each past step i:
      user       its observation if it is among the last k observations, else a fixed
                 placeholder (``<|im_omitted|>``)
      assistant  "Thought: <thought>\\nAction: <action>" of step i
    user       "OBSERVATION:\\n<current observation>\\nOBJECTIVE: <query>"

Every past thought and action is kept; only the last k observations are (k=1: only the
current one). `build_messages` is a pure function of plain values, so the SFT conversion
builds exactly the layout the policy is prompted with. `parse_reply` never raises: a reply
without an action yields an empty action text, which the rollout records as invalid and
shows the agent as an error on its next observation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from evolver_core.agent import Turn
from evolver_core.browser.observation import Observation
from evolver_core.llm import LLMClient
from evolver_core.prompts import load_prompt
from evolver_core.rollout import StepResult, render_observation
from evolver_core.suites.base import Task

FORMAT_ERROR = "Format ERROR: both Thought and Action needed"

_FENCE_OPEN = re.compile(r"^\s*```[\w-]*[ \t]*\n")  # "```" or "```text" alone on its line
# A label opening a line (possibly decorated: "**Action:**") wins over one inside a line.
_LINE_LABEL = re.compile(r"^[ \t>*#`]*(thought|action)[ \t*]*:\**", re.IGNORECASE | re.MULTILINE)
_ANY_LABEL = re.compile(r"\b(thought|action)[ \t*]*:\**", re.IGNORECASE)


@dataclass(frozen=True)
class PastStep:
    """What the prompt keeps of an earlier step."""

    observation: str  # as the agent saw it (with the error line, if any)
    thought: str
    action: str  # raw action text as the agent wrote it

    @classmethod
    def from_step(cls, step: StepResult) -> PastStep:
        return cls(observation=step.observation, thought=step.turn.thought, action=step.turn.action)


@dataclass(frozen=True)
class FewShot:
    """A worked example shown in the system prompt."""

    observation: str
    objective: str
    thought: str
    action: str


class Reply(NamedTuple):
    thought: str
    action: str
    error: str | None  # FORMAT_ERROR when a part is missing


def format_reply(thought: str, action: str) -> str:
    """The assistant turn: the format the policy is asked for and trained on."""
    return f"Thought: {thought}\nAction: {action}"


def user_turn(observation: str, objective: str) -> str:
    return load_prompt("policy_user", observation=observation, objective=objective)


def system_prompt(few_shot: Sequence[FewShot] = ()) -> str:
    parts = [load_prompt("policy_system")]
    parts += [load_prompt("policy_example", user=user_turn(ex.observation, ex.objective),
                          reply=format_reply(ex.thought, ex.action)) for ex in few_shot]
    return "\n\n".join(parts)


def build_messages(objective: str, observation: str, history: Sequence[PastStep], k: int = 1,
                   few_shot: Sequence[FewShot] = ()) -> list[dict]:
    """The chat messages for the current step (see the module docstring); `k` >= 1 counts
    the current observation, so past step i keeps its observation iff i >= len(history) - (k-1)."""
    if k < 1:
        raise ValueError("k counts the current observation: it must be >= 1")
    messages = [{"role": "system", "content": system_prompt(few_shot)}]
    first_kept = len(history) - (k - 1)
    for i, step in enumerate(history):
        shown = load_prompt("policy_past_user", observation=step.observation) if i >= first_kept \
            else load_prompt("policy_omitted")
        messages += [{"role": "user", "content": shown},
                     {"role": "assistant", "content": format_reply(step.thought, step.action)}]
    messages.append({"role": "user", "content": user_turn(observation, objective)})
    return messages


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


class PolicyAgent:
    """The LLM policy; implements `evolver_core.agent.Agent`."""

    def __init__(self, client: LLMClient, *, history_k: int = 1, few_shot: Sequence[FewShot] = (),
                 temperature: float = 0.0, max_tokens: int = 96, seed: int | None = None, name: str | None = None):
        self.client = client
        self.history_k = history_k
        self.few_shot = tuple(few_shot)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.name = name or f"policy:{client.model}"

    def start(self, task: Task) -> None:
        """Stateless between steps: the history comes with every `act`."""

    async def act(self, task: Task, obs: Observation, history: list) -> Turn:
        messages = build_messages(task.query, render_observation(obs.text, obs.error),
                                  [PastStep.from_step(s) for s in history], self.history_k, self.few_shot)
        completion = await self.client.chat(messages, temperature=self.temperature, max_tokens=self.max_tokens,
                                            seed=self.seed)
        reply = parse_reply(completion.text)
        return Turn(thought=reply.thought, action=reply.action, model=self.client.model, response=completion.text,
                    prompt=messages, sampling=completion.sampling, prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens)
