"""Stage tasks `sample` (policy x real browser, also used for evaluation) and `judge`."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from dataclasses import asdict
from typing import Callable, Optional

from prefect import get_run_logger
from prefect.artifacts import aupdate_progress_artifact, create_progress_artifact, create_table_artifact
from prefect.context import get_run_context

from evolver_core.agent import OracleAgent
from evolver_core.config import LookaheadSpec, ModelSpec
from evolver_core.judge_stage import JUDGE_STAGE, judge_trajectories
from evolver_core.lookahead import LookaheadAgent
from evolver_core.policy import PolicyAgent
from evolver_core.sampling import SampleConfig, SampleSummary, episode_seed, sample_trajectories
from evolver_core.storage import Storage
from evolver_core.suites.registry import get_suite, select_tasks
from evolver_core.world_model import WorldModel
from tasks.common import stage_task


def _in_prefect_run() -> bool:
    try:
        return get_run_context() is not None
    except Exception:
        return False


async def run_sample(root: str, run_id: str, round_: int, stage: str, suite: str, split: str, n_tasks: Optional[int],
                     *, policy: Optional[ModelSpec], samples: int = 1, temperature: float = 0.0,
                     max_steps: int = 12, concurrency: int = 2, miniwob_tasks: str = "easy",
                     shard: tuple[int, int] = (0, 1), lookahead: Optional[LookaheadSpec] = None,
                     screenshots: bool = False, on_done: Optional[Callable] = None) -> SampleSummary:
    """Serve the policy (None: the suite's scripted solver) and sample shard `i` of `n` of the tasks;
    with `lookahead`, the policy picks each action by WMLA with the world model and scorer it names."""

    the_suite = get_suite(suite, miniwob_tasks=miniwob_tasks)
    await the_suite.start()
    try:
        chosen = select_tasks(the_suite.tasks(split), n_tasks)[shard[0]::shard[1]]
        cfg = SampleConfig(run_id=run_id, round=round_, stage=stage, samples=samples, concurrency=concurrency,
                           max_steps=max_steps, screenshots=screenshots)
        with ExitStack() as stack:
            make_agent = agent_factory(stack, the_suite, policy, temperature, lookahead)
            return await sample_trajectories(the_suite, chosen, make_agent, Storage(root), cfg, on_done=on_done)
    finally:
        await the_suite.stop()


def agent_factory(stack: ExitStack, suite, policy: Optional[ModelSpec], temperature: float,
                  lookahead: Optional[LookaheadSpec]) -> Callable:
    """`make_agent(task, sample)` for sampling: the scripted solver (`policy` None), the
    policy, or the policy with look-ahead; the servers it needs are entered on `stack`."""
    from infra.serving import serve

    if policy is None:
        if lookahead is not None:
            raise ValueError("look-ahead needs a model policy, not the scripted solver")
        return lambda task, k: OracleAgent(suite)
    client = stack.enter_context(serve(policy)).client()
    if lookahead is None:
        return lambda task, k: PolicyAgent(client, temperature=temperature, seed=episode_seed(task, k))
    world_model = WorldModel(stack.enter_context(serve(lookahead.world_model)).client(),
                             max_tokens=lookahead.wm_max_tokens)
    scorer = stack.enter_context(serve(lookahead.scorer)).client()
    return lambda task, k: LookaheadAgent(
        PolicyAgent(client, temperature=temperature, seed=episode_seed(task, k)), world_model, scorer,
        depth=lookahead.depth, candidates=lookahead.candidates, scorer_max_tokens=lookahead.scorer_max_tokens)


@stage_task(task_run_name="sample-{stage}-r{round_}-shard{shard[0]}", retries=1, retry_delay_seconds=5)
def sample(root: str, run_id: str, round_: int, stage: str, suite: str, split: str, n_tasks: Optional[int],
           policy: Optional[ModelSpec], samples: int = 1, temperature: float = 0.0, max_steps: int = 12,
           concurrency: int = 2, miniwob_tasks: str = "easy", shard: tuple[int, int] = (0, 1),
           lookahead: Optional[LookaheadSpec] = None, screenshots: bool = False,
           after: Optional[list] = None) -> dict:
    """Sample trajectories into `runs/<run>/round=<i>/<stage>/`; a retry or rerun resumes.

    `after`: upstream results (e.g. the finetune that made the policy), so that the cache key
    changes when they do."""
    logger = get_run_logger()
    total = (n_tasks or 0) * samples // max(shard[1], 1) or None
    progress = create_progress_artifact(0.0, description=f"{stage} round {round_}: episodes done") if total else None

    async def body() -> SampleSummary:
        updates: list = []

        def tick(ep) -> None:
            logger.info(f"{ep.trajectory_id}: {len(ep.steps)} steps, {ep.stop_reason}, reward {ep.gold_reward}")
            if progress:
                updates.append(asyncio.ensure_future(
                    aupdate_progress_artifact(progress, min(100.0, 100.0 * (len(updates) + 1) / total))))

        summary = await run_sample(root, run_id, round_, stage, suite, split, n_tasks, policy=policy, samples=samples,
                                   temperature=temperature, max_steps=max_steps, concurrency=concurrency,
                                   miniwob_tasks=miniwob_tasks, shard=shard, lookahead=lookahead,
                                   screenshots=screenshots, on_done=tick)
        await asyncio.gather(*updates)
        return summary

    result = sample_result(asyncio.run(body()))
    create_table_artifact([result], key=f"{_key(run_id)}-r{round_}-{_key(stage)}-{shard[0]}",
                          description=f"{stage} stage of round {round_}: counts and success")
    return result


def sample_result(summary: SampleSummary) -> dict:
    out = asdict(summary)
    out.pop("errors")
    out.update(success_rate=summary.success_rate, action_validity=summary.action_validity)
    return out


@stage_task(task_run_name="{stage}-r{round_}", retries=1, retry_delay_seconds=5)
def judge(root: str, run_id: str, round_: int, judge_model: ModelSpec, source_stage: str = "sample",
          sampled: Optional[list] = None, max_tokens: int = 512, stage: str = JUDGE_STAGE) -> dict:
    """r̂ on every trajectory of `source_stage`, stored as stage `stage` (`sampled`, the
    upstream results, orders this after sampling and is part of the cache key)."""
    from infra.serving import serve

    with serve(judge_model) as server:
        summary = asyncio.run(judge_trajectories(Storage(root), run_id, round_, server.client(),
                                                 source_stage=source_stage, stage=stage, max_tokens=max_tokens))
    result = asdict(summary)
    flat = {k: v for k, v in result.items() if k != "agreement"} | {f"agreement_{k}": v for k, v in summary.agreement.items()}
    create_table_artifact([flat], key=f"{_key(run_id)}-r{round_}-{_key(stage)}",
                          description=f"judge r̂ of {source_stage}, round {round_}")
    return result


def _key(run_id: str) -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in run_id.lower())
