"""One episode: agent x real browser, until `stop`, the page saying the task is over, the
step limit, or a repeated step.

The loop never raises on agent mistakes: an unparsable action is recorded as invalid and the
parser's message becomes the next observation's error, as the agent must learn from it.
Faults that are not the agent's (a crashed page or browser, a model endpoint that fails)
end the episode as an error episode: `stop_reason` "error" with the error kept, no reward,
so it is never scored as a failure; sampling stores it and a rerun replays it. A page that
does not answer is one of them: each reset, step and `task_over` check may take
`current_limits().step_deadline_s`, then the page is closed (`BrowserEnv.within`), so a
script in `while(true){}` costs the step deadline, not the episode's, and the next episode
on the same env gets a fresh page.

Suites whose pages know when the task is over (MiniWoB's `WOB_DONE`) say so through an
optional `done(state)` method; the episode then ends with `stop_reason` "done", without a
`stop` action the suite never asked for. The page after the last action is kept
(`final_observation`): the judge and the world model's last transition need it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from evolver_core.browser.env import BrowserEnv
from evolver_core.config import SamplingConfig
from evolver_core.contracts.actions import ActionParseError, format_action, parse_action
from evolver_core.contracts.agent import Agent
from evolver_core.contracts.episode import Episode, StepResult, now
from evolver_core.contracts.observation import Observation
from evolver_core.contracts.task import Task
from evolver_core.llm import current_limits


@dataclass
class _Progress:
    """What an episode has done so far (kept when a fault or the deadline cuts it short)."""

    task: Task
    steps: list[StepResult] = field(default_factory=list)
    answer: str | None = None
    reason: str = "max_steps"
    final: Observation | None = None
    gold: float | None = None


async def run_episode(env: BrowserEnv, task: Task, agent: Agent, *, sample: int = 0,
                      max_steps: int = SamplingConfig.max_steps, screenshots: bool = False) -> Episode:
    """`screenshots`: keep a PNG of each step's page (None where taking it failed). The
    episode may take `current_limits().episode_deadline_s` in all; past it, it is an error
    episode like any other fault that is not the agent's, and its page is closed."""
    started = now()
    progress = _Progress(task=task)
    deadline = current_limits().episode_deadline_s
    window = asyncio.timeout(deadline)
    try:
        async with window:
            await _play(env, agent, progress, max_steps, screenshots)
    except Exception as exc:  # not the agent's fault: an error episode, replayed on resume
        error = f"{type(exc).__name__}: {exc}"
        if window.expired():
            error = f"the episode deadline of {deadline:g} s passed"
            await env.close()  # the page call it cut may have left the page hung: the next reset opens a new one
        return _episode(progress, sample, started, stop_reason="error", gold=None, error=error)
    return _episode(progress, sample, started, stop_reason=progress.reason, gold=progress.gold)


async def _play(env: BrowserEnv, agent: Agent, p: _Progress, max_steps: int, screenshots: bool) -> None:
    step_s = current_limits().step_deadline_s
    obs = await env.within(step_s, env.reset(p.task))
    p.task = env.task or p.task
    agent.start(p.task)
    for t in range(max_steps):
        # Before the agent acts, so the picture is the page of this step's observation; before
        # t0, so step timings stay comparable with and without screenshots.
        shot = await env.screenshot() if screenshots else None
        t0 = now()
        turn = await agent.act(p.task, obs, p.steps)
        try:
            action, parse_error = parse_action(turn.action), None
        except ActionParseError as exc:
            action, parse_error = None, str(exc)
        step = StepResult(step=t, url=obs.url, observation=obs.text,
                          error_shown=obs.error, turn=turn, action=action, parse_error=parse_error, started_at=t0,
                          screenshot=shot)
        p.steps.append(step)
        if action is not None and action.name == "stop":
            p.answer, p.reason = action.text, "stop"
            step.ended_at = now()
            break
        obs = await env.within(step_s, env.step(action if action is not None else turn.action))
        step.error, step.ended_at = obs.error, now()
        p.final = obs
        if await env.within(step_s, task_over(env)):
            p.reason = "done"
            break
        if _repeated(p.steps):
            p.reason = "repeat"
            break
    p.gold = await env.suite.evaluate(env.episode_state(p.answer))


def _episode(p: _Progress, sample: int, started: datetime, *, stop_reason: str, gold: float | None,
             error: str | None = None) -> Episode:
    keep_final = p.final is not None and stop_reason != "stop"
    return Episode(task=p.task, sample=sample, steps=p.steps, final_answer=p.answer if stop_reason != "error" else None,
                   stop_reason=stop_reason, gold_reward=gold, started_at=started, ended_at=now(), error=error,
                   final_url=p.final.url if keep_final else None,
                   final_observation=p.final.text if keep_final else None)


async def task_over(env: BrowserEnv) -> bool:
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
