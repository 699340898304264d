"""The work behind `webevolver sample`: sample, then judge, through the stages (no Prefect run)."""

from __future__ import annotations

import asyncio
from dataclasses import fields
from typing import Callable, Optional

from evolver_core.config import ModelSpec, SamplingConfig
from evolver_core.judge.stored import JudgeSummary
from evolver_core.sampling.sampler import SampleSummary
from evolver_core.stages.judge import run_judge
from evolver_core.stages.sample import run_sample
from infra.serving import serve


def run_sampling(root: str, run_id: str, round_: int, split: str, n_tasks: Optional[int], *,
                 policy: Optional[ModelSpec], sampling: SamplingConfig, judge: Optional[ModelSpec], log: Callable,
                 screenshots: bool = False) -> tuple[SampleSummary, Optional[JudgeSummary]]:
    summary = asyncio.run(run_sample(root, run_id, round_, "sample", split, n_tasks, policy=policy, sampling=sampling,
                                     serve=serve, screenshots=screenshots, on_done=log))
    if judge is None:
        return summary, None
    judged = run_judge(root, run_id, round_, judge, serve=serve)  # a second start of the policy's model: ~10 s
    return summary, JudgeSummary(**{f.name: judged[f.name] for f in fields(JudgeSummary)})
