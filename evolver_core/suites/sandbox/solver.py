"""The sandbox suite's scripted oracle: it follows a task's plan, looking only at observations.

A plan (``task.meta["plan"]``, built by the site that made the task; see spec.py) is a short
list of steps: type into a field, click a named element, stop with an answer. For each step
the solver looks for the target in the current viewport's accessibility tree (by role and
name); when it is not there it scrolls down (then back up) to find it. A stop step waits
until its evidence text is visible, so demonstrations only answer from what the page shows.
Each reply's thought is the step's short explanation; these become training demonstrations.
"""

from __future__ import annotations

from typing import Any, Sequence

from evolver_core.contracts.reply import Reply
from evolver_core.contracts.actions import Action, format_action
from evolver_core.contracts.observation import Element, Observation

MAX_SCROLLS = 4  # per direction, per step


class PlanSolver:
    """A per-episode state machine over one task's plan."""

    def __init__(self, plan: Sequence[dict[str, Any]]):
        self._plan = list(plan)
        self._step = 0
        self._scrolls = 0  # scrolls spent looking for the current step's target

    def act(self, obs: Observation) -> Reply:
        if self._step >= len(self._plan):
            return _reply("The task is complete.", Action("stop"))
        step = self._plan[self._step]
        if step["do"] == "stop":
            return self._stop(obs, step)
        target = _find(obs, step["roles"], step["name"])
        if target is None:
            return self._look_for(f"the '{step['name']}' {step['roles'][0]}")
        self._advance()
        if step["do"] == "click":
            return _reply(step["why"], Action("click", element_id=target.id))
        return _reply(
            step["why"], Action("type", element_id=target.id, text=step["text"], press_enter_after=step["enter"])
        )

    def _stop(self, obs: Observation, step: dict[str, Any]) -> Reply:
        evidence = step["visible"]
        if evidence and not any(evidence.lower() in e.name.lower() for e in obs.elements):
            return self._look_for(step["seek"])
        self._advance()
        return _reply(step["why"], Action("stop", text=step["answer"]))

    def _look_for(self, what: str) -> Reply:
        self._scrolls += 1
        if self._scrolls <= MAX_SCROLLS:
            return _reply(
                f"I can't see {what} yet, so I'll scroll down to look for it.", Action("scroll", direction="down")
            )
        if self._scrolls <= 2 * MAX_SCROLLS + 1:
            return _reply(f"I still can't find {what}; I'll scroll back up.", Action("scroll", direction="up"))
        self._step = len(self._plan)
        return _reply(f"I could not find {what} on this page, so I give up.", Action("stop"))

    def _advance(self) -> None:
        self._step += 1
        self._scrolls = 0


def _find(obs: Observation, roles: Sequence[str], name: str) -> Element | None:
    """The first element with one of `roles` named exactly `name` (case-insensitive)."""
    wanted = name.casefold()
    for e in obs.elements:
        if e.role in roles and e.name.strip().casefold() == wanted:
            return e
    return None


def _reply(thought: str, action: Action) -> Reply:
    return Reply(thought=thought, action=format_action(action))
