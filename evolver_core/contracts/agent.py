"""What a rollout asks of an agent.

An agent turns (task, observation, history) into a `Turn`: its thought, the action text,
and, for model agents, the prompt/response and token counts that go into the records. The
scripted agent (`agents.oracle`), the model policy (`agents.policy`) and look-ahead
(`agents.lookahead`) implement it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from evolver_core.contracts.observation import Observation
from evolver_core.contracts.task import Task


EXPLORER = "explorer"  # the model name of exploring episodes (`agents.oracle.ExploringAgent`)


@dataclass
class Turn:
    thought: str
    action: str  # raw action text as the agent wrote it
    model: str
    response: str | None = None  # raw model reply
    prompt: list[dict] | None = None  # chat messages sent
    sampling: dict = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Agent(Protocol):
    name: str

    def start(self, task: Task) -> None:
        """A new episode of `task` begins (after reset, so `task.query` is final)."""

    async def act(self, task: Task, obs: Observation, history: list) -> Turn: ...
