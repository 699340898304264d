"""The scripted (oracle) agent: plays each suite's scripted solver; its trajectories are
round 0's demonstrations."""

from __future__ import annotations

from evolver_core.contracts.agent import Turn
from evolver_core.contracts.observation import Observation
from evolver_core.contracts.task import Solver, Suite, Task


class OracleAgent:
    """Implements `evolver_core.contracts.agent.Agent` with the suite's solver."""

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
