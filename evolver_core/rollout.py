"""One episode: agent x real browser, until `stop`, the step limit, or a repeated step.

The loop never raises on agent mistakes: an unparsable action is recorded as invalid and the
parser's message becomes the next observation's error, as the agent must learn from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from evolver_core.agent import Agent, Turn
from evolver_core.browser.actions import Action, ActionParseError, format_action, parse_action
from evolver_core.browser.env import BrowserEnv
from evolver_core.suites.base import Task

DEFAULT_MAX_STEPS = 12  # the reference's MAX_STEPS


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class StepResult:
    step: int
    url: str
    observation: str  # the text the agent saw (with the previous step's error, if any)
    error_shown: str | None  # error observation the agent saw at this step
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
    stop_reason: str  # "stop" | "max_steps" | "repeat" | "error"
    gold_reward: float | None
    started_at: datetime
    ended_at: datetime

    @property
    def trajectory_id(self) -> str:
        return f"{self.task.id}#{self.sample}"


def render_observation(obs_text: str, error: str | None) -> str:
    """What the agent reads: the error of its previous action first, then the page."""
    return f"ERROR: {error}\n\n{obs_text}" if error else obs_text


async def run_episode(env: BrowserEnv, task: Task, agent: Agent, *, sample: int = 0,
                      max_steps: int = DEFAULT_MAX_STEPS, screenshots: bool = False) -> Episode:
    """`screenshots`: keep a PNG of each step's page (None where taking it failed)."""
    started = now()
    obs = await env.reset(task)
    task = env.task or task
    agent.start(task)
    steps: list[StepResult] = []
    answer, reason = None, "max_steps"
    for t in range(max_steps):
        # Before the agent acts, so the picture is the page of this step's observation; before
        # t0, so step timings stay comparable with and without screenshots.
        shot = await env.screenshot() if screenshots else None
        t0 = now()
        turn = await agent.act(task, obs, steps)
        try:
            action, parse_error = parse_action(turn.action), None
        except ActionParseError as exc:
            action, parse_error = None, str(exc)
        step = StepResult(step=t, url=obs.url, observation=render_observation(obs.text, obs.error),
                          error_shown=obs.error, turn=turn, action=action, parse_error=parse_error, started_at=t0,
                          screenshot=shot)
        steps.append(step)
        if action is not None and action.name == "stop":
            answer, reason = action.text, "stop"
            step.ended_at = now()
            break
        obs = await env.step(action if action is not None else turn.action)
        step.error, step.ended_at = obs.error, now()
        if _repeated(steps):
            reason = "repeat"
            break
    gold = await env.suite.evaluate(env.episode_state(answer))
    return Episode(task=task, sample=sample, steps=steps, final_answer=answer, stop_reason=reason,
                   gold_reward=gold, started_at=started, ended_at=now())


def _repeated(steps: list[StepResult]) -> bool:
    """The same observation and the same action twice in a row: the agent is stuck."""
    if len(steps) < 2:
        return False
    a, b = steps[-2], steps[-1]
    key = lambda s: (s.observation, format_action(s.action) if s.action else s.turn.action)  # noqa: E731
    return key(a) == key(b)
