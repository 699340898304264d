"""The work behind `webevolver sample`: serve the models, sample, judge (no Prefect run)."""

from __future__ import annotations

from typing import Callable, Optional

from evolver_core.config import ModelSpec, SamplingConfig
from evolver_core.data.stage_results import JudgeSummary, SampleSummary
from evolver_core.data.storage import Storage
from evolver_core.judge.stored import judge_trajectories
from evolver_core.stages.sample import run_sample


async def run_sampling(root: str, run_id: str, round_: int, split: str, n_tasks: Optional[int], *,
                       policy: Optional[ModelSpec], sampling: SamplingConfig, judge: Optional[ModelSpec], log: Callable,
                       screenshots: bool = False) -> tuple[SampleSummary, Optional[JudgeSummary]]:
    from infra.serving import serve

    summary = await run_sample(root, run_id, round_, "sample", split, n_tasks, policy=policy, sampling=sampling,
                               screenshots=screenshots, on_done=log)
    if judge is None:
        return summary, None
    with serve(judge) as server:  # a second start of the policy's model: ~10 s, kept simple
        return summary, await judge_trajectories(Storage(root), run_id, round_, server.client())
