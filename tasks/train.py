"""Stage tasks `to_sft` (rejection sampling + SFT examples) and `finetune` (LoRA on the union),
around `evolver_core.stages.sft` and `evolver_core.stages.train`."""

from __future__ import annotations

from dataclasses import asdict

from prefect import get_run_logger
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)

from evolver_core.config import TrainingConfig
from evolver_core.data.stage_results import AdapterSummary, SftSummary
from evolver_core.stages.sft import ToSftInputs, run_to_sft, to_sft_identity
from evolver_core.stages.train import FinetuneInputs, adapter_repair_key, finetune_identity, run_finetune
from tasks.common import artifact_key, stage_task


def done_fraction(training: TrainingConfig, step: int, logs: dict) -> float:
    """How much of the training a log marks: steps of `max_steps`, or, where the epochs decide
    (max_steps None), the Trainer's fractional `epoch` (in every log) of `num_train_epochs`."""
    if training.max_steps:
        return step / training.max_steps
    return logs.get("epoch", 0.0) / training.num_train_epochs


@stage_task(to_sft_identity, task_run_name="to_sft-r{inputs.round}-{inputs.source_stage}")
def to_sft(inputs: ToSftInputs) -> SftSummary:
    """Keep the successes of the source stage (judge verdicts, or gold rewards with `use_gold`),
    one chat example per step."""
    result = run_to_sft(inputs)
    create_table_artifact([{"stage": inputs.source_stage, "trajectories": result.trajectories, "kept": result.kept,
                            "examples": result.examples,
                            **{f"dropped_{k}": v for k, v in result.reasons.items() if k != "kept"}}],
                          key=artifact_key(inputs.run_id, f"r{inputs.round}", "sft", inputs.source_stage),
                          description=f"rejection sampling and SFT examples, round {inputs.round}")
    return result


@stage_task(finetune_identity, repair=adapter_repair_key, task_run_name="{inputs.out_stage}-r{inputs.round}")
def finetune(inputs: FinetuneInputs) -> AdapterSummary:
    """LoRA from the BASE model on the examples of rounds 0..round (the paper's union) that
    `inputs.data` names: a policy arm (`PolicyArm.training_data` -> `finetune*`) or the world
    model (`wm_sft` -> `finetune_wm`)."""
    logger = get_run_logger()
    run_id, round_, out_stage, training = inputs.run_id, inputs.round, inputs.out_stage, inputs.training
    progress = create_progress_artifact(0.0, description=f"{out_stage} round {round_}: steps done")

    def on_log(step: int, logs: dict) -> None:
        update_progress_artifact(progress, min(100.0, 100.0 * done_fraction(training, step, logs)))
        if "loss" in logs:
            logger.info(f"step {step}: loss {logs['loss']:.4f}")

    result = run_finetune(inputs, on_log=on_log)
    # The trainer's metrics flattened into the row; `examples` (in both) keeps its place.
    row = {k: v for k, v in asdict(result).items() if k not in ("adapter_uri", "metrics")} | result.metrics
    create_table_artifact([{"round": round_, **row}],
                          key=artifact_key(run_id, f"r{round_}", out_stage),
                          description=f"LoRA training metrics ({out_stage}), round {round_}")
    create_markdown_artifact(
        f"### Adapter ({out_stage}), round {round_}\n\n- adapter: `{result.adapter_uri}` "
        f"(content {result.adapter_digest[:12]})\n- base: `{inputs.base_model}`\n- examples: {result.examples} "
        f"({' + '.join(dict.fromkeys(s for _, s in inputs.data))}, rounds {inputs.data[0][0]}..{round_})\n"
        f"- final mean loss: {result.train_loss:.4f}\n",
        key=artifact_key(run_id, f"r{round_}", out_stage, "adapter"))
    return result
