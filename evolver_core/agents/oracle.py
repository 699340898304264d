"""The scripted (oracle) agent: plays each suite's scripted solver; its trajectories are
round 0's demonstrations. `ExploringAgent` plays the same solver with random clicks mixed in:
real transitions off the solver's path, failed ends included, for the world model."""

from __future__ import annotations

import random
from dataclasses import replace

from evolver_core.contracts.agent import EXPLORER, Turn
from evolver_core.contracts.observation import Observation
from evolver_core.contracts.task import Solver, Suite, Task

# The first action always (a one-action task such as click-button would otherwise repeat its
# demonstration), then half the actions, so that longer tasks still reach their later pages.
EXPLORE_RATE = 0.5
# Any element but the page itself: MiniWoB's links read as StaticText in the tree.
NOT_CLICKED = frozenset({"RootWebArea"})


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


class ExploringAgent(OracleAgent):
    """The solver, but its first action, and each later one with probability `EXPLORE_RATE`
    (seeded), is a click on a random element of the page (the solver's own choice included).
    Its episodes carry the model name `EXPLORER`: the policy's SFT filter leaves them out
    (`training.sft.keep_trajectory`), the world model learns from them (how a wrong action
    ends an episode)."""

    name = EXPLORER

    def __init__(self, suite: Suite, seed: int):
        super().__init__(suite)
        self._rng = random.Random(seed)
        self._first = True  # set again by `start`: the next action is an episode's first

    def start(self, task: Task) -> None:
        super().start(task)
        self._first = True

    async def act(self, task: Task, obs: Observation, history: list) -> Turn:
        # A step the solver does not play leaves its state alone: it resumes from the new page.
        others = [e for e in obs.elements if e.role not in NOT_CLICKED]
        first, self._first = self._first, False
        if not others or (not first and self._rng.random() >= EXPLORE_RATE):
            return replace(await super().act(task, obs, history), model=self.name)
        target = self._rng.choice(others)
        thought = f"Exploring: click the {target.role} '{target.name}'."
        action = f"click [{target.id}]"
        return Turn(thought=thought, action=action, model=self.name, response=f"Thought: {thought}\nAction: {action}")
