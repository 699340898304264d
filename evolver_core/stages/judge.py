"""Stage `judge`: r̂ on every trajectory of a stage (`judge` for `sample`, `<stage>-judge` else)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from functools import partial

from evolver_core.config import JudgeConfig, ModelSpec
from evolver_core.data.identity import StageIdentity, code_digest
from evolver_core.data.run_layout import SAMPLE, judge_stage_for, open_stage, stage_digest
from evolver_core.data.stage_results import JudgeSummary
from evolver_core.judge.judge import DEFAULT_LAST_N
from evolver_core.judge.stored import judge_trajectories
from evolver_core.models.serving import ServeModel
from evolver_core.stages.inputs import StageInputs
from evolver_core.training.identity import model_identity

CODE = ("evolver_core.judge.stored", "evolver_core.stages.judge")


@dataclass(frozen=True)
class JudgeInputs(StageInputs):
    """r̂ (`judge_model`, its replies capped by `judge_config`) on every trajectory of
    `source_stage`, stored as stage `stage` (default `judge_stage_for(source_stage)`)."""

    judge_model: ModelSpec
    judge_config: JudgeConfig = field(default_factory=JudgeConfig)
    source_stage: str = SAMPLE
    stage: str | None = None

    @property
    def out_stage(self) -> str:
        return self.stage or judge_stage_for(self.source_stage)


def judge_identity(inputs: JudgeInputs) -> StageIdentity:
    return StageIdentity(stage=inputs.out_stage, code=code_digest(*CODE), params={
        "source": stage_digest(inputs.store(), inputs.run_id, inputs.round, inputs.source_stage),
        "judge": model_identity(inputs.judge_model), "max_tokens": inputs.judge_config.max_tokens,
        "last_n": DEFAULT_LAST_N})


def run_judge(inputs: JudgeInputs, serve: ServeModel) -> JudgeSummary:
    """Judge every trajectory of the source stage (resumable), as `inputs` says, with the judge
    `serve` starts."""
    serve_without_browser = partial(serve, browser=False)  # no browser in this stage: every core

    identity = judge_identity(inputs)
    store = inputs.store()
    open_stage(store, inputs.run_id, inputs.round, inputs.out_stage, identity)
    with serve_without_browser(inputs.judge_model) as server:
        client = server.client()
        summary = asyncio.run(judge_trajectories(store, inputs.run_id, inputs.round, client,
                                                 source_stage=inputs.source_stage, stage=inputs.out_stage,
                                                 max_tokens=inputs.judge_config.max_tokens))
    inputs.record_calls(inputs.out_stage, client)
    return replace(summary, identity=identity.digest)
