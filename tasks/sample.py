"""Stage task `sample` (policy x real browser; also every evaluation): artifacts and progress
around `evolver_core.stages.sample.run_sample`."""

from __future__ import annotations

import asyncio
from typing import Optional

from prefect import get_run_logger
from prefect.artifacts import aupdate_progress_artifact, create_progress_artifact, create_table_artifact

from evolver_core.agents.policy import DEFAULT_MAX_TOKENS
from evolver_core.config import LookaheadSpec, ModelSpec
from evolver_core.sampling.sampler import SampleSummary
from evolver_core.stages.sample import run_sample, sample_identity, sample_result
from tasks.common import artifact_key, stage_task


@stage_task(sample_identity, task_run_name="sample-{stage}-r{round_}-shard{shard[0]}", retries=1,
            retry_delay_seconds=5)
def sample(root: str, run_id: str, round_: int, stage: str, suite: str, split: str, n_tasks: Optional[int],
           policy: Optional[ModelSpec], samples: int = 1, temperature: float = 0.0, max_steps: int = 12,
           concurrency: int = 2, miniwob_tasks: str = "easy", shard: tuple[int, int] = (0, 1),
           lookahead: Optional[LookaheadSpec] = None, screenshots: bool = False,
           policy_max_tokens: int = DEFAULT_MAX_TOKENS, after: Optional[list] = None) -> dict:
    """Sample trajectories into `runs/<run>/round=<i>/<stage>/`; a retry or rerun resumes.

    `after`: upstream results (e.g. the finetune that made the policy), so that the cache key
    changes when they do."""
    logger = get_run_logger()
    total = (n_tasks or 0) * samples // max(shard[1], 1) or None
    progress = create_progress_artifact(0.0, description=f"{stage} round {round_}: episodes done") if total else None

    async def body() -> SampleSummary:
        updates: list = []

        def tick(ep) -> None:
            logger.info(f"{ep.trajectory_id}: {len(ep.steps)} steps, {ep.stop_reason}, reward {ep.gold_reward}"
                        + (f", error: {ep.error}" if ep.error else ""))
            if progress:
                updates.append(asyncio.ensure_future(
                    aupdate_progress_artifact(progress, min(100.0, 100.0 * (len(updates) + 1) / total))))

        summary = await run_sample(root, run_id, round_, stage, suite, split, n_tasks, policy=policy, samples=samples,
                                   temperature=temperature, max_steps=max_steps, concurrency=concurrency,
                                   miniwob_tasks=miniwob_tasks, shard=shard, lookahead=lookahead,
                                   screenshots=screenshots, policy_max_tokens=policy_max_tokens, on_done=tick)
        await asyncio.gather(*updates)
        return summary

    summary = asyncio.run(body())
    for uri in summary.repaired:
        logger.warning(f"repaired {uri}")
    result = sample_result(summary)
    create_table_artifact([{k: v for k, v in result.items() if k != "repaired"}],
                          key=artifact_key(run_id, f"r{round_}", stage, shard[0]),
                          description=f"{stage} stage of round {round_}: counts and success")
    return result
