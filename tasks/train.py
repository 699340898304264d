"""Stage tasks `to_sft` (rejection sampling + SFT examples) and `finetune` (LoRA on the union)."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact

from evolver_core.finetune import FinetuneConfig, finetune as run_finetune
from evolver_core.models import resolve_model
from evolver_core.sft import convert_trajectories, read_sft_parquet, write_sft_parquet
from evolver_core.storage import Storage
from tasks.common import stage_task
from tasks.sample import _key

ADAPTER = "adapter"


@stage_task(task_run_name="to_sft-r{round_}-{source_stage}")
def to_sft(root: str, run_id: str, round_: int, source_stage: str, use_gold: bool, sampled: list[dict],
           judged: dict | None = None) -> dict:
    """Keep the successes of `source_stage` (judge verdicts, or gold rewards with `use_gold`),
    one chat example per step. `sampled` and `judged` are the upstream results: part of the
    cache key, so new data upstream means a new conversion."""
    store = Storage(root)
    verdict_stage = "judge" if judged is not None else source_stage
    trajs = store.read_table(run_id, round_, verdict_stage, table_name="trajectories").to_pylist()
    steps = store.read_table(run_id, round_, source_stage, table_name="steps").to_pylist()
    conv = convert_trajectories(trajs, steps, use_gold=use_gold)
    uri = write_sft_parquet(conv.examples, store, run_id, round_, source_stage=source_stage)
    result = {"uri": uri, "trajectories": len(trajs), "kept": conv.kept, "examples": len(conv.examples),
              "reasons": dict(conv.reasons)}
    create_table_artifact([{"stage": source_stage, "trajectories": len(trajs), "kept": conv.kept,
                            "examples": len(conv.examples), **{f"dropped_{k}": v for k, v in conv.reasons.items()
                                                               if k != "kept"}}],
                          key=f"{_key(run_id)}-r{round_}-sft-{_key(source_stage)}",
                          description=f"rejection sampling and SFT examples, round {round_}")
    return result


@stage_task(task_run_name="{out_stage}-r{round_}")
def finetune(root: str, run_id: str, round_: int, base_model: str, max_steps: int, max_length: int = 512,
             learning_rate: float = 2e-4, sft: list | None = None, sft_stage: str = "sft",
             out_stage: str = "finetune") -> dict:
    """LoRA from the BASE model on the `sft_stage` examples of rounds 0..round (the paper's
    union): the policy (`sft` -> `finetune`) or the world model (`wm_sft` -> `finetune_wm`)."""
    store = Storage(root)
    examples = [e for r in range(round_ + 1) for e in _examples(store, run_id, r, sft_stage)]
    if not examples:
        raise ValueError(f"no {sft_stage} examples in rounds 0..{round_} of run {run_id}: nothing to train on")
    base = resolve_model(base_model).base
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, description=f"finetune round {round_}: steps done")

    def on_log(step: int, logs: dict) -> None:
        update_progress_artifact(progress, min(100.0, 100.0 * step / max(max_steps, 1)))
        if "loss" in logs:
            logger.info(f"step {step}: loss {logs['loss']:.4f}")

    with tempfile.TemporaryDirectory(prefix="webevolver-adapter-") as tmp:
        cfg = FinetuneConfig(base_model_dir=base, output_dir=str(Path(tmp) / ADAPTER), max_steps=max_steps,
                             max_length=max_length, learning_rate=learning_rate)
        trained = run_finetune(examples, cfg, on_log=on_log)
        uri = store.put_dir(trained.adapter_dir, run_id, round_, out_stage, ADAPTER)
    metrics = asdict(trained.metrics)
    metrics.pop("loss_history")
    create_table_artifact([{"round": round_, **metrics}], key=f"{_key(run_id)}-r{round_}-{_key(out_stage)}",
                          description=f"LoRA training metrics ({out_stage}), round {round_}")
    create_markdown_artifact(f"### Adapter ({out_stage}), round {round_}\n\n- adapter: `{uri}`\n- base: `{base_model}`\n"
                             f"- examples: {len(examples)} (rounds 0..{round_})\n- final mean loss: "
                             f"{trained.metrics.train_loss:.4f}\n", key=f"{_key(run_id)}-r{round_}-{_key(out_stage)}-adapter")
    return {"adapter_uri": uri, "base_model": base_model, "examples": len(examples), **metrics}


def _examples(store: Storage, run_id: str, round_: int, stage: str) -> list[dict]:
    return read_sft_parquet(store, run_id, round_, stage) if store.exists(run_id, round_, stage) else []
