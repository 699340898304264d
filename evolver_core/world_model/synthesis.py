"""Synthetic trajectories: the world model as a virtual web server (paper 3.3).

A synthetic trajectory starts where the paper starts it, from the real initial state o_0 of
its query: the task with its real objective and the first page of the stored real trajectory
of that query (`real_starts`; no browser is needed). Then the policy acts on the page and the
world model (WM) predicts the next page from the earlier replies (thought + action), the page
and the new action, until the WM says the action ends the episode (stop_reason "done", as a
real episode the page ended), the policy stops, its action does not parse or the WM's output
does not parse (stop_reason "invalid"), or the policy has taken `max_actions` actions
(stop_reason "max_steps"). The WM is asked for the page after every action, the last one
included, so an episode can end on the action cap; that page is the trajectory's
`final_observation`, as for real episodes that did not end with `stop`. Fixes of the
reference (notes sections 8 and 11): the roles are named parameters (`policy`,
`world_model`), the policy sees only the predicted tree (never the WM's rationale), and the
trajectory is stored and judged like a real one, the judge seeing the last page too.

An `Episode` is built exactly as `rollout.run_episode` builds it, so `sampling.episode_records`
stores it (with ``cfg.source == "synthetic"``). Each step's `observation` is the page the
policy saw (step 0: the real first page; later: the WM's): that is where the viewer finds the
WM's pages. Step 0's `url` is the task's start URL; later URLs are unknown, hence "". The gold
reward is None, unless a `replay` is given (`world_model.replay`): the trajectory's actions
replayed on the real page of the same task and seed, rewarded by the suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from evolver_core.config import JudgeConfig, WorldModelConfig
from evolver_core.contracts.actions import Action, ActionParseError, format_action, parse_action
from evolver_core.contracts.agent import Agent
from evolver_core.contracts.episode import Episode, StepResult, episode_seed, now, trajectory_id
from evolver_core.contracts.observation import Observation
from evolver_core.contracts.reply import format_reply
from evolver_core.contracts.task import Task
from evolver_core.data.records import StepRecord, TrajectoryRecord
from evolver_core.data.stage_results import SampleSummary
from evolver_core.data.storage import Storage
from evolver_core.judge.judge import judge
from evolver_core.llm import LLMClient
from evolver_core.sampling.sampler import SampleConfig, SamplingError, pending_work, store_episode, tally
from evolver_core.training.sft import keep_trajectory, steps_by_trajectory
from evolver_core.world_model.model import WorldModel

WM_UNPARSABLE = "world model output unparsable"


@dataclass
class PredictedObservation(Observation):
    """A page the WM predicted: only its text exists (no elements, no node map), so agents
    that read `obs.text` (the model policy) act on it exactly as on a real page."""

    predicted: str = ""

    @property
    def text(self) -> str:
        return self.predicted


def wm_past_action(thought: str, action: Action) -> str:
    """An earlier step as the WM was trained to read it (`world_model.transitions_from_records`:
    the canonical action, after its thought when there is one)."""
    return format_reply(thought, format_action(action)) if thought else format_action(action)


def _wm_seed(seed: int | None, step: int) -> int | None:
    """A distinct seed per WM call of one episode, so steps do not repeat each other's samples."""
    return None if seed is None else seed + step


async def synthesize_episode(task: Task, first_page: str, policy: Agent, world_model: WorldModel, *,
                             sample: int = 0, max_actions: int = WorldModelConfig.synth_max_actions,
                             seed: int | None = None) -> Episode:
    """One synthetic trajectory of `policy` on `task` from its real `first_page`, with
    `world_model` as the web (see the module docstring)."""
    started = now()
    policy.start(task)
    steps: list[StepResult] = []
    answer, page, url, final, reason = None, first_page, task.start_url, None, "max_steps"
    while len(steps) < max_actions:
        t0, t = now(), len(steps)
        turn = await policy.act(task, PredictedObservation(url=url, tabs=[], elements=[], predicted=page), steps)
        try:
            action, parse_error = parse_action(turn.action), None
        except ActionParseError as exc:
            action, parse_error = None, str(exc)
        step = StepResult(step=t, url=url, observation=page, error_shown=None, turn=turn, action=action,
                          parse_error=parse_error, started_at=t0)
        steps.append(step)
        if action is None or action.name == "stop":
            step.ended_at = now()
            answer, reason = (None, "invalid") if action is None else (action.text, "stop")
            break
        past = [wm_past_action(s.turn.thought, s.action) for s in steps[:-1] if s.action is not None]
        prediction = await world_model.predict(task.query, task.start_url, past, page, format_action(action),
                                               seed=_wm_seed(seed, t + 1))
        step.ended_at = now()
        if prediction.observation is None:
            step.error, reason = WM_UNPARSABLE, "invalid"
            break
        page = final = prediction.observation
        url = ""
        if prediction.ends:
            reason = "done"
            break
    final = final if reason in ("done", "max_steps") else None  # the page the LAST action led to
    return Episode(task=task, sample=sample, steps=steps, final_answer=answer, stop_reason=reason,
                   gold_reward=None, started_at=started, ended_at=now(), final_url=None if final is None else "",
                   final_observation=final)


@dataclass(frozen=True)
class RealStart:
    """Where a failed query's synthetic trajectories start: its objective and first page as
    its stored real trajectory has them (MiniWoB reads the objective off the page, so a suite's
    task list alone has none)."""

    query: str
    first_page: str


def real_starts(trajectories: Iterable[TrajectoryRecord], steps: Iterable[StepRecord]) -> dict[str, RealStart]:
    """The real start of each task that has a stored trajectory with a first step (the first
    such trajectory of the task, error episodes aside)."""
    first_steps = {s.trajectory_id: s for s in steps if s.step == 0}
    out: dict[str, RealStart] = {}
    for t in trajectories:
        if t.stop_reason != "error" and t.trajectory_id in first_steps and t.task_id not in out:
            out[t.task_id] = RealStart(query=t.query, first_page=first_steps[t.trajectory_id].observation)
    return out


def failed_task_ids(trajectories: Iterable[TrajectoryRecord], steps: Iterable[StepRecord], *,
                    use_gold: bool) -> list[str]:
    """The tasks (in first-seen order) none of whose trajectories rejection sampling keeps
    (`sft.keep_trajectory`, by gold reward or by the judge's verdict on the rows): the
    queries the paper synthesizes for, as real sampling gave nothing to learn from."""
    by_traj = steps_by_trajectory(steps)
    kept: dict[str, bool] = {}
    for t in trajectories:
        ok, _ = keep_trajectory(t, by_traj.get(t.trajectory_id, []), use_gold=use_gold)
        kept[t.task_id] = kept.get(t.task_id, False) or ok
    return [task_id for task_id, ok in kept.items() if not ok]


async def _judge(client: LLMClient | None, ep: Episode, max_tokens: int) -> tuple[int | None, str | None]:
    """r̂ on the pages the policy saw and the page its last action led to."""
    if client is None or not ep.steps:
        return None, None
    pages = [s.observation for s in ep.steps] + ([ep.final_observation] if ep.final_observation else [])
    verdict = await judge(client, ep.task.query, ep.final_answer, pages, max_tokens=max_tokens)
    return verdict.verdict, verdict.reasoning


Replay = Callable[[Episode], Awaitable[float | None]]


async def synthesize(tasks: Sequence[Task], starts: Mapping[str, str], make_policy: Callable[[Task, int], Agent],
                     world_model: WorldModel, storage: Storage, cfg: SampleConfig, *,
                     judge_client: LLMClient | None = None, judge_max_tokens: int = JudgeConfig.max_tokens,
                     max_actions: int = WorldModelConfig.synth_max_actions, replay: Replay | None = None,
                     on_done: Callable[[Episode], None] | None = None) -> SampleSummary:
    """`cfg.sampling.samples` synthetic trajectories per task, `cfg.sampling.concurrency` at a time, each
    stored as it ends.

    Resumable like `sampling.sample_trajectories`: one shard pair per trajectory id, and a
    rerun skips trajectories whose trajectory row exists. Each starts from `starts[task.id]`,
    the task's real first page. With `judge_client` each one is judged by r̂ (`judge.judge`)
    and the verdict stored on its trajectory row; with `replay`, the replay's reward is its
    `gold_reward`.
    `make_policy(task, sample)` gives a fresh agent per trajectory; the WM is seeded with
    `contracts.episode.episode_seed`. `cfg.sampling.max_steps` and `cfg.env` (real-browser settings) are unused.
    """
    if cfg.source != "synthetic":
        raise ValueError(f"synthetic trajectories need cfg.source='synthetic', not {cfg.source!r}")
    todo, summary = pending_work(tasks, storage, cfg)
    limit = asyncio.Semaphore(cfg.sampling.concurrency)

    async def one(task: Task, k: int) -> None:
        async with limit:
            try:
                ep = await synthesize_episode(task, starts[task.id], make_policy(task, k), world_model, sample=k,
                                              max_actions=max_actions, seed=episode_seed(task, k))
                if replay is not None:
                    ep.gold_reward = await replay(ep)
                store_episode(storage, cfg, ep, *await _judge(judge_client, ep, judge_max_tokens))
            except Exception as exc:  # one bad trajectory must not lose the others
                summary.failed += 1
                summary.errors.append(f"{trajectory_id(task.id, k)}: {type(exc).__name__}: {exc}")
                return
            summary.new += 1
            if on_done is not None:
                on_done(ep)

    await asyncio.gather(*(one(t, k) for t, k in todo))
    tally(summary, storage, cfg)
    if summary.failed:
        raise SamplingError(
            f"{summary.failed} of {len(todo)} synthetic trajectories failed (first: {summary.errors[0]}); "
            f"{summary.trajectories} finished trajectories are stored at {summary.uri}; rerun to resume")
    return summary
