"""The replay filter for synthetic trajectories: their actions played on the real page.

Our departure from the paper. The paper keeps a synthetic trajectory when r̂ (a large LLM
judge) says it succeeded. A 135M judge cannot judge (most of its verdicts do not parse,
RESULTS.md R7), so for suites with a programmatic reward (MiniWoB, the sandbox
sites) the `replay` filter (`WorldModelConfig.synth_filter`) plays the trajectory's actions on
the real page of the same task and seed and keeps it when the suite rewards it. The kept
example still trains on the world model's pages (the paper's point: data from the virtual
web), only the verdict comes from the real one. Element ids agree because a synthetic
trajectory starts from the real first page and the delta form keeps ids stable. The judge
still runs, and the round reports how often it agreed with the replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from evolver_core.browser.env import BrowserEnv
from evolver_core.contracts.episode import Episode
from evolver_core.llm import current_limits
from evolver_core.sampling.rollout import task_over


async def replay_reward(env: BrowserEnv, ep: Episode) -> float | None:
    """The suite's reward for `ep`'s actions on the real page of its task (None: the suite has
    no programmatic reward). Replay stops where the episode stopped, at an action that did not
    parse, or where the real page says the task is over. Every call on the page is cut at the
    step deadline, as in a rollout (`PageHung`: synthesis records that trajectory's error)."""
    step_s = current_limits().step_deadline_s
    await env.within(step_s, env.reset(ep.task))
    answer = None
    for step in ep.steps:
        if step.action is None:
            break
        if step.action.name == "stop":
            answer = step.action.text
            break
        await env.within(step_s, env.step(step.action))
        if await env.within(step_s, task_over(env)):
            break
    return await env.within(step_s, env.suite.evaluate(env.episode_state(answer)))


def one_at_a_time(env: BrowserEnv) -> Callable[[Episode], Awaitable[float | None]]:
    """`replay(episode)` on `env`'s one page, for synthesis, which plays several episodes at a
    time: replays wait for each other (each takes a moment; the pages are local)."""
    lock = asyncio.Lock()

    async def replay(ep: Episode) -> float | None:
        async with lock:
            return await replay_reward(env, ep)

    return replay
