"""The work behind `webevolver sample`: serve the models, sample, judge (no Prefect run)."""

from __future__ import annotations

from typing import Callable, Optional

from evolver_core.config import ModelSpec
from evolver_core.judge.stored import JudgeSummary, judge_trajectories
from evolver_core.sampling.sampler import SampleSummary
from evolver_core.stages.sample import SampleInputs, run_sample


async def run_sampling(inputs: SampleInputs, *, judge: Optional[ModelSpec],
                       log: Callable) -> tuple[SampleSummary, Optional[JudgeSummary]]:
    from infra.serving import serve

    summary = await run_sample(inputs, on_done=log)
    if judge is None:
        return summary, None
    with serve(judge) as server:  # a second start of the policy's model: ~10 s, kept simple
        return summary, await judge_trajectories(inputs.store(), inputs.run_id, inputs.round, server.client())
