"""Scripted solvers written as generators: `obs = yield Reply(...)` reads like the task's recipe.

A solver function takes the task, receives the first observation from its first `yield`,
and yields one `Reply` per step, receiving the next observation back. When it returns, or
cannot find what it needs, the episode ends with `stop`.
"""

from __future__ import annotations

from typing import Callable, Generator

from evolver_core.contracts.reply import Reply
from evolver_core.contracts.observation import Observation
from evolver_core.contracts.task import Task

SolverScript = Generator[Reply | None, Observation, None]


class GaveUp(Exception):
    """The page does not look as the script expects; the solver stops without an answer."""


class GeneratorSolver:
    def __init__(self, script: Callable[[Task], SolverScript], task: Task):
        self._gen = script(task)
        next(self._gen)  # run to the first `yield`, which receives the first observation
        self._finished: Reply | None = None

    def act(self, obs: Observation) -> Reply:
        if self._finished is not None:
            return self._finished
        try:
            reply = self._gen.send(obs)
        except StopIteration:
            reply = None
        except GaveUp as exc:
            reply = Reply(thought=f"I cannot find what I need: {exc}.", action="stop")
        if reply is None:
            self._finished = Reply(thought="The task is complete.", action="stop [done]")
            return self._finished
        return reply


def need(element, what: str):
    """The element, or give up saying what was missing."""
    if element is None:
        raise GaveUp(f"no {what} on the page")
    return element
