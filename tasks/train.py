"""Stage tasks `to_sft` (rejection sampling + SFT examples) and `finetune` (LoRA on the union),
around `evolver_core.stages.sft` and `evolver_core.stages.train`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

from prefect import get_run_logger
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)

from evolver_core.config import TrainingConfig
from evolver_core.data.run_layout import FINETUNE, SFT, training_rounds
from evolver_core.data.stage_results import AdapterSummary, SftSummary
from evolver_core.stages.sft import run_to_sft, to_sft_identity
from evolver_core.stages.train import adapter_repair_key, finetune_identity, run_finetune
from tasks.common import artifact_key, stage_task


def done_fraction(training: TrainingConfig, step: int, logs: dict) -> float:
    """How much of the training a log marks: steps of `max_steps`, or, where the epochs decide
    (max_steps None), the Trainer's fractional `epoch` (in every log) of `num_train_epochs`."""
    if training.max_steps:
        return step / training.max_steps
    return logs.get("epoch", 0.0) / training.num_train_epochs


@stage_task(to_sft_identity, task_run_name="to_sft-r{round_}-{source_stage}")
def to_sft(root: str, run_id: str, round_: int, source_stage: str, use_gold: bool) -> SftSummary:
    """Keep the successes of `source_stage` (judge verdicts, or gold rewards with `use_gold`),
    one chat example per step."""
    result = run_to_sft(root, run_id, round_, source_stage, use_gold)
    create_table_artifact([{"stage": source_stage, "trajectories": result.trajectories, "kept": result.kept,
                            "examples": result.examples,
                            **{f"dropped_{k}": v for k, v in result.reasons.items() if k != "kept"}}],
                          key=artifact_key(run_id, f"r{round_}", "sft", source_stage),
                          description=f"rejection sampling and SFT examples, round {round_}")
    return result


@stage_task(finetune_identity, repair=adapter_repair_key, task_run_name="{out_stage}-r{round_}")
def finetune(root: str, run_id: str, round_: int, base_model: str, training: TrainingConfig,
             sft_stages: Sequence[str] = (SFT,), out_stage: str = FINETUNE) -> AdapterSummary:
    """LoRA from the BASE model on the `sft_stages` examples of rounds 0..round (the paper's
    union): a policy (`sft` [+ `synth_sft`] -> `finetune*`) or the world model (`wm_sft` ->
    `finetune_wm`)."""
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, description=f"{out_stage} round {round_}: steps done")

    def on_log(step: int, logs: dict) -> None:
        update_progress_artifact(progress, min(100.0, 100.0 * done_fraction(training, step, logs)))
        if "loss" in logs:
            logger.info(f"step {step}: loss {logs['loss']:.4f}")

    result = run_finetune(root, run_id, round_, base_model, training, tuple(sft_stages), out_stage, on_log=on_log)
    # The trainer's metrics flattened into the row; `examples` (in both) keeps its place.
    row = {k: v for k, v in asdict(result).items() if k not in ("adapter_uri", "metrics")} | result.metrics
    create_table_artifact([{"round": round_, **row}],
                          key=artifact_key(run_id, f"r{round_}", out_stage),
                          description=f"LoRA training metrics ({out_stage}), round {round_}")
    create_markdown_artifact(
        f"### Adapter ({out_stage}), round {round_}\n\n- adapter: `{result.adapter_uri}` "
        f"(content {result.adapter_digest[:12]})\n- base: `{base_model}`\n- examples: {result.examples} "
        f"({' + '.join(sft_stages)}, rounds {training_rounds(round_).start}..{round_})\n"
        f"- final mean loss: {result.train_loss:.4f}\n",
        key=artifact_key(run_id, f"r{round_}", out_stage, "adapter"))
    return result
