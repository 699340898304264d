"""The work behind `webevolver sample`: sample, then judge, through the stages (no Prefect run)."""

from __future__ import annotations

import asyncio
from typing import Callable, Optional

from evolver_core.config import ModelSpec
from evolver_core.data.stage_results import JudgeSummary, SampleSummary
from evolver_core.stages.judge import JudgeInputs, run_judge
from evolver_core.stages.sample import SampleInputs, run_sample
from infra.serving import serve


def run_sampling(inputs: SampleInputs, *, judge: Optional[ModelSpec],
                 log: Callable) -> tuple[SampleSummary, Optional[JudgeSummary]]:
    summary = asyncio.run(run_sample(inputs, serve, on_done=log))
    if judge is None:
        return summary, None
    # a second start of the policy's model: ~10 s
    return summary, run_judge(JudgeInputs(inputs.root, inputs.run_id, inputs.round, judge_model=judge), serve)
