"""Sample trajectories: many episodes over N browser contexts, each stored as it finishes.

Every trajectory is written as its own pair of Parquet shards (steps, then trajectory row),
keyed by its trajectory id, with an atomic commit. A run killed at any point keeps every
finished trajectory; a rerun with the same run id and stage identity (`run_layout.open_stage`
moves another identity's results aside first) skips those whose shards are readable and
complete, replays error episodes (a crashed page or browser, a failing endpoint: stored with
their error, excluded from success rates) and rewrites broken shards, logging which. So
nothing is lost or duplicated. Callable from a notebook: no Prefect here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping

from evolver_core.contracts.agent import Agent
from evolver_core.contracts.actions import format_action
from evolver_core.browser.env import EnvConfig, launch_browser
from evolver_core.config import SamplingConfig
from evolver_core.contracts.errors import WebEvolverError
from evolver_core.contracts.episode import episode_seed, trajectory_id
from evolver_core.data.records import StepRecord, TrajectoryRecord, canonical_json, from_table, scored, solved, to_table
from evolver_core.data.stage_results import SampleSummary
from evolver_core.data.storage import Storage
from evolver_core.sampling.rollout import Episode, run_episode
from evolver_core.contracts.task import Suite, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleConfig:
    """Where a stage's trajectories go (run, round, stage) and how its episodes are played
    (`sampling`: samples per task, concurrency, step limit)."""

    run_id: str
    round: int = 0
    stage: str = "sample"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    source: str = "real"
    screenshots: bool = False  # a PNG per step of real rollouts, for the viewer
    env: EnvConfig = field(default_factory=EnvConfig)
    identity: str | None = None  # digest of the stage identity, stamped on every trajectory row


class SamplingError(WebEvolverError, RuntimeError):
    """Some episodes failed; the finished ones are stored and a rerun resumes."""


def episode_records(
    ep: Episode, cfg: SampleConfig, *, judge_verdict: int | None = None, judge_reasoning: str | None = None,
    screenshots: Mapping[int, str] | None = None,
) -> tuple[list[StepRecord], TrajectoryRecord]:
    """The step rows and the trajectory row of `ep`; `screenshots` maps a step to its stored image's URI."""
    tid = trajectory_id(ep.task.id, ep.sample)
    screenshots = screenshots or {}
    steps = [
        StepRecord(
            run_id=cfg.run_id, round=cfg.round, stage=cfg.stage, task_id=ep.task.id, suite=ep.task.suite,
            site=ep.task.site, query=ep.task.query, trajectory_id=tid, sample=ep.sample, step=s.step, url=s.url,
            observation=s.observation, thought=s.turn.thought, action_raw=s.turn.action,
            action=format_action(s.action) if s.action else None, action_valid=s.action is not None,
            error=s.error if s.action is not None else s.parse_error, model=s.turn.model,
            sampling=canonical_json(s.turn.sampling), prompt_tokens=s.turn.prompt_tokens,
            completion_tokens=s.turn.completion_tokens, started_at=s.started_at, ended_at=s.ended_at,
            prompt=canonical_json(s.turn.prompt) if s.turn.prompt is not None else None, response=s.turn.response,
            screenshot=screenshots.get(s.step), error_shown=s.error_shown,
        )
        for s in ep.steps
    ]
    traj = TrajectoryRecord(
        run_id=cfg.run_id, round=cfg.round, stage=cfg.stage, trajectory_id=tid, task_id=ep.task.id,
        suite=ep.task.suite, site=ep.task.site, split=ep.task.split, query=ep.task.query, sample=ep.sample,
        seed=ep.task.seed if ep.task.seed is not None else episode_seed(ep.task, ep.sample), source=cfg.source,
        model=ep.steps[0].turn.model if ep.steps else "", n_steps=len(ep.steps), final_answer=ep.final_answer,
        stop_reason=ep.stop_reason, judge_verdict=judge_verdict, judge_reasoning=judge_reasoning,
        gold_reward=ep.gold_reward, started_at=ep.started_at, ended_at=ep.ended_at,
        prompt_tokens=sum(s.turn.prompt_tokens for s in ep.steps),
        completion_tokens=sum(s.turn.completion_tokens for s in ep.steps),
        error=ep.error, final_url=ep.final_url, final_observation=ep.final_observation, identity=cfg.identity,
    )
    return steps, traj


def pending_work(tasks: list[Task], storage: Storage,
                 cfg: SampleConfig) -> tuple[list[tuple[Task, int]], SampleSummary]:
    """The (task, sample) pairs to run (a rerun resumes), and a summary to fill. A stored
    trajectory is done when its trajectory shard is readable, its steps shard holds its
    `n_steps` rows, and it is not an error episode; broken shards are removed (and named in
    `summary.repaired`), error episodes replayed."""
    work = [(t, k) for t in tasks for k in range(cfg.sampling.samples)]
    stored = {r["trajectory_id"]: r for r in _readable_rows(storage, cfg)}
    summary = SampleSummary(run_id=cfg.run_id, uri=storage.uri(cfg.run_id, cfg.round, cfg.stage), trajectories=0,
                            new=0, skipped=0, failed=0, steps=0, valid_actions=0, solved=0, with_gold=0)
    todo = []
    for t, k in work:
        tid = trajectory_id(t.id, k)
        row = stored.get(tid)
        if row is not None and row["stop_reason"] != "error" and (
                row["n_steps"] == 0 or storage.shard_readable(cfg.run_id, cfg.round, cfg.stage, "steps", tid)
                == row["n_steps"]):
            continue
        for table in ("trajectories", "steps"):  # broken shards go now, so no reader meets them
            if (storage.exists(cfg.run_id, cfg.round, cfg.stage, table, tid)
                    and storage.shard_readable(cfg.run_id, cfg.round, cfg.stage, table, tid) is None):
                uri = storage.uri(cfg.run_id, cfg.round, cfg.stage, table, tid)
                storage.remove(uri)
                summary.repaired.append(uri)
                log.warning("repairing %s: unreadable shard removed, trajectory %s runs again", uri, tid)
        todo.append((t, k))
    summary.skipped = len(work) - len(todo)
    return todo, summary


def _readable_rows(storage: Storage, cfg: SampleConfig) -> list[dict]:
    table, _ = storage.read_table_checked(cfg.run_id, cfg.round, cfg.stage, table_name="trajectories")
    return table.select(["trajectory_id", "stop_reason", "n_steps"]).to_pylist()


def store_screenshots(storage: Storage, cfg: SampleConfig, ep: Episode) -> dict[int, str]:
    """Write the steps' screenshots; returns step -> URI. A write that fails is logged and left
    out (its step's `screenshot` is null): the trajectory is worth more than its pictures."""
    tid = trajectory_id(ep.task.id, ep.sample)
    uris: dict[int, str] = {}
    for s in ep.steps:
        if s.screenshot is None:
            continue
        path = storage.screenshot_path(cfg.run_id, cfg.round, cfg.stage, tid, s.step)
        try:
            uris[s.step] = storage.write_file(path, s.screenshot)
        except Exception as exc:  # fsspec backends raise many kinds (OSError, botocore, ...)
            log.warning("screenshot of %s step %d not stored: %s: %s", tid, s.step, type(exc).__name__, exc)
    return uris


def store_episode(storage: Storage, cfg: SampleConfig, ep: Episode, verdict: int | None = None,
                  reasoning: str | None = None) -> None:
    """Screenshots, then the steps shard, then the trajectory row: the trajectory row marks the
    trajectory done, and every row that names a file is written after the file."""
    shots = store_screenshots(storage, cfg, ep)
    steps, traj = episode_records(ep, cfg, judge_verdict=verdict, judge_reasoning=reasoning, screenshots=shots)
    shard = trajectory_id(ep.task.id, ep.sample)
    if steps:
        storage.write_shard(cfg.run_id, cfg.round, cfg.stage, "steps", to_table(steps), shard)
    storage.write_shard(cfg.run_id, cfg.round, cfg.stage, "trajectories", to_table([traj]), shard)


JudgeFn = Callable[[Episode], Awaitable[tuple[int | None, str | None]]]


async def sample_trajectories(
    suite: Suite, tasks: list[Task], make_agent: Callable[[Task, int], Agent], storage: Storage, cfg: SampleConfig,
    *, judge: JudgeFn | None = None, on_done: Callable[[Episode], None] | None = None,
) -> SampleSummary:
    """Run `cfg.sampling.samples` episodes per task, `cfg.sampling.concurrency` at a time; store each as it ends.

    `make_agent(task, sample)` gives a fresh agent per episode (seed it with `episode_seed`).
    """
    await suite.start()
    todo, summary = pending_work(tasks, storage, cfg)
    queue: asyncio.Queue = asyncio.Queue()
    # Grouped by site so a worker's page is reused between episodes (MiniWoB: ~10x faster).
    for item in sorted(todo, key=lambda tk: (tk[0].site, tk[0].id, tk[1])):
        queue.put_nowait(item)

    async with launch_browser() as browser:
        async def worker() -> None:
            env = await browser.new_env(suite, cfg.env)
            try:
                while not queue.empty():
                    task, k = queue.get_nowait()
                    try:
                        ep = await run_episode(env, task, make_agent(task, k), sample=k,
                                               max_steps=cfg.sampling.max_steps, screenshots=cfg.screenshots)
                        verdict, reasoning = await judge(ep) if judge and ep.stop_reason != "error" else (None, None)
                        store_episode(storage, cfg, ep, verdict, reasoning)
                    except Exception as exc:  # storing failed: one bad episode must not lose the others
                        summary.failed += 1
                        summary.errors.append(f"{trajectory_id(task.id, k)}: {type(exc).__name__}: {exc}")
                        continue
                    if ep.stop_reason == "error":
                        summary.failed += 1
                        summary.errors.append(f"{trajectory_id(task.id, k)}: {ep.error}")
                    else:
                        summary.new += 1
                    if on_done:
                        on_done(ep)
            finally:
                await env.close()

        await asyncio.gather(*(worker() for _ in range(max(1, min(cfg.sampling.concurrency, len(todo))))))

    tally(summary, storage, cfg)
    if summary.failed:
        raise SamplingError(
            f"{summary.failed} of {len(todo)} episodes ended in an error (first: {summary.errors[0]}); "
            f"{summary.trajectories - summary.error_episodes} finished trajectories are stored at {summary.uri}; "
            f"rerun to replay the failed ones")
    return summary


def tally(summary: SampleSummary, storage: Storage, cfg: SampleConfig) -> None:
    """Counts over everything stored for the stage, so a resumed run reports the whole stage.
    Error episodes are counted apart and never scored."""
    trajs = from_table(storage.read_table(cfg.run_id, cfg.round, cfg.stage, table_name="trajectories"))
    steps = storage.read_table(cfg.run_id, cfg.round, cfg.stage, table_name="steps").column("action_valid").to_pylist()
    summary.trajectories = len(trajs)
    summary.error_episodes = sum(t.stop_reason == "error" for t in trajs)
    summary.steps, summary.valid_actions = len(steps), sum(steps)
    summary.with_gold, summary.solved = sum(map(scored, trajs)), sum(map(solved, trajs))
