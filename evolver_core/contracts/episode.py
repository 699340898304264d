"""A played episode: its steps and how it ended (what sampling stores, synthesis builds and
look-ahead keeps as history).

A step keeps the page the agent saw (`observation`, the page alone) and the error of the
previous action (`error_shown`) as two fields, as BrowserGym keeps `last_action_error`
beside the page: they are stored as two columns and rendered together only in the prompt
(`contracts.prompt.render_observation`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

from evolver_core.contracts.actions import Action
from evolver_core.contracts.agent import Turn
from evolver_core.contracts.task import Task


def now() -> datetime:
    return datetime.now(timezone.utc)


def trajectory_id(task_id: str, sample: int) -> str:
    """The id shared by a trajectory's row and its step rows: ``"<task_id>#<sample>"``."""
    return f"{task_id}#{sample}"


def episode_seed(task: Task, sample: int) -> int:
    """A stable per-trajectory seed (for model sampling), independent of run order."""
    return int.from_bytes(hashlib.sha256(trajectory_id(task.id, sample).encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclass
class StepResult:
    step: int
    url: str
    observation: str  # the page the agent saw
    error_shown: str | None  # what went wrong with the previous action, shown beside the page
    turn: Turn
    action: Action | None  # None when the action text did not parse
    parse_error: str | None
    error: str | None = None  # what went wrong carrying out this step's action
    screenshot: bytes | None = None  # PNG of the page the agent saw (run_episode(screenshots=True))
    started_at: datetime = field(default_factory=now)
    ended_at: datetime = field(default_factory=now)


@dataclass
class Episode:
    task: Task
    sample: int
    steps: list[StepResult]
    final_answer: str | None
    stop_reason: str  # "stop" | "done" | "max_steps" | "repeat" | "invalid" | "error"
    gold_reward: float | None
    started_at: datetime
    ended_at: datetime
    error: str | None = None  # why an error episode ended (stop_reason "error")
    final_url: str | None = None  # the page after the last action (None: ended by `stop`)
    final_observation: str | None = None  # that page alone (its action's error is the last step's `error`)

    @property
    def trajectory_id(self) -> str:
        return trajectory_id(self.task.id, self.sample)
