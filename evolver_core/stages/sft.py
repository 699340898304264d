"""Stages `sft` / `synth_sft` / `wm_sft` readers and the rejection-sampling stage `to_sft`."""

from __future__ import annotations

from dataclasses import dataclass

from evolver_core.data.episodes import read_episodes
from evolver_core.data.identity import StageIdentity, code_digest
from evolver_core.data.run_layout import SYNTHESIZE, judge_stage_for, open_stage, sft_stage_for, stage_digest
from evolver_core.data.stage_results import SftSummary
from evolver_core.stages.inputs import StageInputs
from evolver_core.training.sft import convert_trajectories, write_sft_parquet

CODE = ("evolver_core.training.sft", "evolver_core.stages.sft")


def verdict_stage_for(source_stage: str, use_gold: bool) -> str:
    """Where a stage's verdicts are: the rows themselves (gold rewards; synthetic rows carry
    their r̂), else the stage that judged it (`judge` for `sample`)."""
    return source_stage if use_gold or source_stage == SYNTHESIZE else judge_stage_for(source_stage)


@dataclass(frozen=True)
class ToSftInputs(StageInputs):
    """The successes of `source_stage` (judge verdicts, or gold rewards with `use_gold`)."""

    source_stage: str
    use_gold: bool


def to_sft_identity(inputs: ToSftInputs) -> StageIdentity:
    store, run_id, round_ = inputs.store(), inputs.run_id, inputs.round
    verdicts = verdict_stage_for(inputs.source_stage, inputs.use_gold)
    return StageIdentity(stage=sft_stage_for(inputs.source_stage), code=code_digest(*CODE), params={
        "source": stage_digest(store, run_id, round_, inputs.source_stage), "use_gold": inputs.use_gold,
        "verdicts": stage_digest(store, run_id, round_, verdicts) if verdicts != inputs.source_stage else None})


def run_to_sft(inputs: ToSftInputs) -> SftSummary:
    """Keep the successes of the source stage, one chat example per step; returns counts and reasons."""
    store, run_id, round_, source_stage = inputs.store(), inputs.run_id, inputs.round, inputs.source_stage
    identity = to_sft_identity(inputs)
    open_stage(store, run_id, round_, identity.stage, identity)
    trajs, steps = read_episodes(store, run_id, round_, source_stage,
                                 verdicts=verdict_stage_for(source_stage, inputs.use_gold))
    conv = convert_trajectories(trajs, steps, use_gold=inputs.use_gold)
    uri = write_sft_parquet(conv.examples, store, run_id, round_, source_stage=source_stage, stage=identity.stage)
    return SftSummary(uri=uri, stage=identity.stage, source_stage=source_stage, trajectories=len(trajs),
                      kept=conv.kept, examples=len(conv.examples), reasons=dict(conv.reasons),
                      identity=identity.digest)
