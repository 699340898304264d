"""Stage `judge`: r̂ on every trajectory of a stage (`judge` for `sample`, `<stage>-judge` else)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from evolver_core.config import JudgeConfig, ModelSpec
from evolver_core.data.identity import StageIdentity, code_digest
from evolver_core.data.run_layout import SAMPLE, judge_stage_for, open_stage, stage_digest
from evolver_core.data.stage_results import JudgeSummary
from evolver_core.data.storage import Storage
from evolver_core.judge.judge import DEFAULT_LAST_N
from evolver_core.judge.stored import judge_trajectories
from evolver_core.training.identity import model_identity

CODE = ("evolver_core.judge.stored", "evolver_core.stages.judge")


def judge_identity(root: str, run_id: str, round_: int, judge_model: ModelSpec,
                   judge_config: JudgeConfig = JudgeConfig(), source_stage: str = SAMPLE, stage: str | None = None,
                   **_: object) -> StageIdentity:
    return StageIdentity(stage=stage or judge_stage_for(source_stage), code=code_digest(*CODE), params={
        "source": stage_digest(Storage(root), run_id, round_, source_stage), "judge": model_identity(judge_model),
        "max_tokens": judge_config.max_tokens, "last_n": DEFAULT_LAST_N})


def run_judge(root: str, run_id: str, round_: int, judge_model: ModelSpec, judge_config: JudgeConfig = JudgeConfig(),
              source_stage: str = SAMPLE, stage: str | None = None) -> JudgeSummary:
    """Judge every trajectory of `source_stage` (resumable) with `judge_model`, its replies
    capped by the judge section."""
    from infra.serving import serve_without_browser  # no browser in this stage: every core

    stage = stage or judge_stage_for(source_stage)
    identity = judge_identity(root, run_id, round_, judge_model, judge_config, source_stage, stage)
    store = Storage(root)
    open_stage(store, run_id, round_, stage, identity)
    with serve_without_browser(judge_model) as server:
        summary = asyncio.run(judge_trajectories(store, run_id, round_, server.client(), source_stage=source_stage,
                                                 stage=stage, max_tokens=judge_config.max_tokens))
    return replace(summary, identity=identity.digest)
