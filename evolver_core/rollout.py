"""One episode: agent x real browser, until `stop`, the page saying the task is over, the
step limit, or a repeated step.

The loop never raises on agent mistakes: an unparsable action is recorded as invalid and the
parser's message becomes the next observation's error, as the agent must learn from it.
Faults that are not the agent's (a crashed page or browser, a model endpoint that fails)
end the episode as an error episode: `stop_reason` "error" with the error kept, no reward,
so it is never scored as a failure; sampling stores it and a rerun replays it.

Suites whose pages know when the task is over (MiniWoB's `WOB_DONE`) say so through an
optional `done(state)` method; the episode then ends with `stop_reason` "done", without a
`stop` action the suite never asked for. The page after the last action is kept
(`final_observation`): the judge and the world model's last transition need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from evolver_core.agent import Agent, Turn
from evolver_core.browser.actions import Action, ActionParseError, format_action, parse_action
from evolver_core.browser.env import BrowserEnv
from evolver_core.records import trajectory_id
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
    stop_reason: str  # "stop" | "done" | "max_steps" | "repeat" | "error"
    gold_reward: float | None
    started_at: datetime
    ended_at: datetime
    error: str | None = None  # why an error episode ended (stop_reason "error")
    final_url: str | None = None  # the page after the last action (None: ended by `stop`)
    final_observation: str | None = None

    @property
    def trajectory_id(self) -> str:
        return trajectory_id(self.task.id, self.sample)


ERROR_PREFIX = "ERROR: "
_ERROR_SEPARATOR = "\n\n"


def render_observation(obs_text: str, error: str | None) -> str:
    """What the agent reads: the error of its previous action first, then the page
    (`page_text` is its inverse)."""
    return f"{ERROR_PREFIX}{error}{_ERROR_SEPARATOR}{obs_text}" if error else obs_text


def is_error_turn(observation: str) -> bool:
    return observation.startswith(ERROR_PREFIX)


def page_text(observation: str) -> str:
    """The page part of an observation, without the error line of the previous action."""
    if is_error_turn(observation) and _ERROR_SEPARATOR in observation:
        return observation.split(_ERROR_SEPARATOR, 1)[1]
    return observation


async def run_episode(env: BrowserEnv, task: Task, agent: Agent, *, sample: int = 0,
                      max_steps: int = DEFAULT_MAX_STEPS, screenshots: bool = False) -> Episode:
    """`screenshots`: keep a PNG of each step's page (None where taking it failed)."""
    started = now()
    steps: list[StepResult] = []
    answer, reason, final = None, "max_steps", None
    try:
        obs = await env.reset(task)
        task = env.task or task
        agent.start(task)
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
            final = obs
            if await _task_over(env):
                reason = "done"
                break
            if _repeated(steps):
                reason = "repeat"
                break
        gold = await env.suite.evaluate(env.episode_state(answer))
    except Exception as exc:  # not the agent's fault: an error episode, replayed on resume
        return Episode(task=task, sample=sample, steps=steps, final_answer=None, stop_reason="error",
                       gold_reward=None, started_at=started, ended_at=now(), error=f"{type(exc).__name__}: {exc}",
                       final_url=final.url if final else None,
                       final_observation=render_observation(final.text, final.error) if final else None)
    return Episode(task=task, sample=sample, steps=steps, final_answer=answer, stop_reason=reason,
                   gold_reward=gold, started_at=started, ended_at=now(),
                   final_url=final.url if final and reason != "stop" else None,
                   final_observation=render_observation(final.text, final.error) if final and reason != "stop" else None)


async def _task_over(env: BrowserEnv) -> bool:
    """Whether the suite's page says the task is over (suites without a `done` never do)."""
    done = getattr(env.suite, "done", None)
    return bool(done and await done(env.episode_state(None)))


def _repeated(steps: list[StepResult]) -> bool:
    """The same observation and the same action twice in a row: the agent is stuck."""
    if len(steps) < 2:
        return False
    a, b = steps[-2], steps[-1]
    key = lambda s: (s.observation, format_action(s.action) if s.action else s.turn.action)  # noqa: E731
    return key(a) == key(b)
