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

from collections.abc import Sequence
from dataclasses import dataclass

from evolver_core.agents.base import Turn
from evolver_core.agents.reply import format_reply, parse_reply
from evolver_core.browser.actions import describe_actions
from evolver_core.browser.observation import Observation
from evolver_core.config import SamplingConfig
from evolver_core.llm import LLMClient
from evolver_core.prompts import load_prompt
from evolver_core.sampling.rollout import StepResult, render_observation
from evolver_core.suites.base import Task

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


def user_turn(observation: str, objective: str) -> str:
    return load_prompt("policy_user", observation=observation, objective=objective)


def system_prompt(few_shot: Sequence[FewShot] = ()) -> str:
    parts = [load_prompt("policy_system", actions=describe_actions())]
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


DEFAULT_MAX_TOKENS = SamplingConfig.policy_max_tokens


class PolicyAgent:
    """The LLM policy; implements `evolver_core.agents.base.Agent`."""

    def __init__(self, client: LLMClient, *, history_k: int = 1, few_shot: Sequence[FewShot] = (),
                 temperature: float = 0.0, max_tokens: int = DEFAULT_MAX_TOKENS, seed: int | None = None,
                 name: str | None = None):
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
        return await self.reply(task.query, render_observation(obs.text, obs.error),
                                [PastStep.from_step(s) for s in history], temperature=self.temperature, seed=self.seed)

    async def reply(self, objective: str, observation: str, past: Sequence[PastStep], *, temperature: float,
                    seed: int | None) -> Turn:
        """One reply to the prompt of real rollouts (look-ahead also asks on predicted pages)."""
        messages = build_messages(objective, observation, past, self.history_k, self.few_shot)
        completion = await self.client.chat(messages, temperature=temperature, max_tokens=self.max_tokens, seed=seed)
        reply = parse_reply(completion.text)
        return Turn(thought=reply.thought, action=reply.action, model=self.client.model, response=completion.text,
                    prompt=messages, sampling=completion.sampling, prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens)
