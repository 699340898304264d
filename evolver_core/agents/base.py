"""What a rollout asks of an agent, and the scripted (oracle) agent.

An agent turns (task, observation, history) into a `Turn`: its thought, the action text,
and, for model agents, the prompt/response and token counts that go into the records. The
model policy (an LLM behind the OpenAI API) implements the same protocol in `policy.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from evolver_core.browser.observation import Observation
from evolver_core.suites.base import Solver, Suite, Task


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


class OracleAgent:
    """Plays each suite's scripted solver; its trajectories are round 0's demonstrations."""

    name = "oracle"

    def __init__(self, suite: Suite):
        self.suite = suite
        self._solver: Solver | None = None

    def start(self, task: Task) -> None:
        self._solver = self.suite.solver(task)
        if self._solver is None:
            raise ValueError(f"suite {self.suite.name!r} has no scripted solver for {task.id}")

    async def act(self, task: Task, obs: Observation, history: list) -> Turn:
        assert self._solver is not None, "start(task) first"
        reply = self._solver.act(obs)
        return Turn(thought=reply.thought, action=reply.action, model=self.name,
                    response=f"Thought: {reply.thought}\nAction: {reply.action}")
