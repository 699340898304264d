"""LoRA fine-tuning of a base model on SFT examples, with TRL's `SFTTrainer` and PEFT.

Why these defaults (`FinetuneConfig`): they are the settings measured to work on a 2-core
CPU (DESIGN.md "Measured on a 2-core CPU machine"): rank 16, alpha 32, dropout 0.05 on
every attention and MLP projection, lr 2e-4 constant after 5 warm-up steps, batch 2, max
length 512, fp32, gradient checkpointing off (TRL turns it on by default; on that CPU it
made a step ~2.4x slower). Every round trains from the base model, not from the previous
adapter. The examples are `evolver_core.training.sft` prompt-completion examples, so the loss is on
the target reply only.

The adapter is trained in a sibling folder ``.<name>.partial`` and renamed to
`output_dir` only when complete: a killed or failed training never leaves a half adapter
there (the next run removes a stale partial folder). The adapter folder holds the PEFT
adapter, the tokenizer, and ``finetune.json`` (config and metrics).

Nothing here picks a device: the same code runs on CPU with ``python -m`` and on GPUs
under accelerate, e.g.::

    python -m evolver_core.training.finetune --examples sft.parquet --base MODEL_DIR --out ADAPTER_DIR --max-steps 50
    accelerate launch -m evolver_core.training.finetune --examples sft.parquet --base MODEL_DIR --out ADAPTER_DIR --bf16

Every `FinetuneConfig` field is a flag (``--lora-r 8``, ``--learning-rate 1e-4``, ...).
`--examples` is a Parquet file or folder with the `sft.SFT_SCHEMA` columns.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
METRICS_FILE = "finetune.json"

LogFn = Callable[[int, dict[str, float]], None]


@dataclass
class FinetuneConfig:
    """What to train and how (TRL `SFTConfig` names where they exist)."""

    base_model_dir: str = field(metadata={"aliases": ["--base"], "help": "base model folder"})
    output_dir: str = field(metadata={"aliases": ["--out"], "help": "where the adapter goes"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "constant_with_warmup"
    warmup_steps: int = 5
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    max_steps: int = field(default=-1, metadata={"help": "steps to train; -1: num_train_epochs decides"})
    num_train_epochs: float = 1.0
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision (GPUs); weights stay fp32"})
    gradient_checkpointing: bool = False
    seed: int = 0
    logging_steps: int = 1

    def lora_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.lora_r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=list(self.target_modules), task_type="CAUSAL_LM")

    def sft_config(self, output_dir: Path):
        from trl import SFTConfig

        return SFTConfig(
            output_dir=str(output_dir), learning_rate=self.learning_rate, lr_scheduler_type=self.lr_scheduler_type,
            warmup_steps=self.warmup_steps, per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps, max_length=self.max_length,
            max_steps=self.max_steps, num_train_epochs=self.num_train_epochs, bf16=self.bf16, fp16=False,
            # transformers 5 renamed it; TRL's own default (True) sits under the old name.
            activation_checkpointing=self.gradient_checkpointing, seed=self.seed, logging_steps=self.logging_steps,
            completion_only_loss=True, save_strategy="no", report_to="none",
        )


@dataclass
class FinetuneMetrics:
    train_loss: float  # mean over the run
    steps: int
    runtime_s: float
    trainable_params: int
    examples: int  # given
    examples_trained: int  # left after TRL drops examples whose reply max_length cut off entirely
    loss_history: list[tuple[int, float]]  # (step, loss) per logging step


@dataclass
class FinetuneResult:
    adapter_dir: Path
    metrics: FinetuneMetrics


def _callback(on_log: LogFn | None, history: list[tuple[int, float]]):
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        """Records the loss and forwards every log to `on_log` (main process only)."""

        def on_log(self, args, state, control, logs=None, **kwargs) -> None:
            if not state.is_world_process_zero or not logs:
                return
            if "loss" in logs:
                history.append((state.global_step, float(logs["loss"])))
            if on_log is not None:
                on_log(state.global_step, dict(logs))

    return _Progress()


def _dataset(examples: Sequence[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])


def _commit(partial: Path, out: Path) -> None:
    """Move the finished adapter into place, replacing an older one."""
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}" if out.exists() else None
    if old is not None:
        os.rename(out, old)
    os.rename(partial, out)
    if old is not None:
        shutil.rmtree(old)


def build_trainer(examples: Sequence[dict[str, Any]], cfg: FinetuneConfig, output_dir: Path,
                  callbacks: Sequence[Any] = ()):
    """The configured TRL `SFTTrainer` (LoRA on the base model), before training."""
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    if not examples:
        raise ValueError("no examples to train on")
    # The adapter records its base; a relative path would only hold from this directory.
    base = str(Path(cfg.base_model_dir).resolve()) if Path(cfg.base_model_dir).is_dir() else cfg.base_model_dir
    return SFTTrainer(model=base, args=cfg.sft_config(output_dir), train_dataset=_dataset(examples),
                      processing_class=AutoTokenizer.from_pretrained(base), peft_config=cfg.lora_config(),
                      callbacks=list(callbacks))


def finetune(examples: Sequence[dict[str, Any]], cfg: FinetuneConfig, *, on_log: LogFn | None = None) -> FinetuneResult:
    """Train a LoRA adapter of `cfg.base_model_dir` on `examples`; returns where it is and metrics.

    `on_log(step, logs)` gets every Trainer log (loss, learning rate, ...); an exception it
    raises stops the training, and no adapter is written.
    """
    out = Path(cfg.output_dir).resolve()
    partial = out.parent / f".{out.name}.partial"
    history: list[tuple[int, float]] = []
    trainer = build_trainer(examples, cfg, partial, [_callback(on_log, history)])
    if not trainer.train_dataset or len(trainer.train_dataset) == 0:
        raise ValueError(f"none of the {len(examples)} examples fits max_length={cfg.max_length} tokens with its "
                         "reply; raise max_length")
    writer = trainer.args.should_save  # the main process
    if writer:
        shutil.rmtree(partial, ignore_errors=True)  # left by a killed run
    try:
        output = trainer.train()
        trainer.save_model(str(partial))
        metrics = FinetuneMetrics(
            train_loss=output.training_loss, steps=output.global_step, runtime_s=output.metrics["train_runtime"],
            trainable_params=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            examples=len(examples), examples_trained=len(trainer.train_dataset), loss_history=history)
        if writer:
            (partial / METRICS_FILE).write_text(json.dumps({"config": asdict(cfg), "metrics": asdict(metrics)},
                                                           indent=2))
            _commit(partial, out)
    finally:
        if writer:
            shutil.rmtree(partial, ignore_errors=True)
    return FinetuneResult(adapter_dir=out, metrics=metrics)


@dataclass
class ScriptArguments:
    examples: str = field(metadata={"help": "Parquet file or folder of SFT examples (sft.SFT_SCHEMA)"})


def main(argv: Sequence[str] | None = None) -> FinetuneResult:
    import pyarrow.parquet as pq
    from transformers import HfArgumentParser

    from evolver_core.training.sft import examples_from_table

    script, cfg = HfArgumentParser((ScriptArguments, FinetuneConfig)).parse_args_into_dataclasses(args=argv)
    examples = examples_from_table(pq.read_table(script.examples))
    result = finetune(examples, cfg)  # the Trainer prints its own progress and logs
    print(json.dumps({"adapter_dir": str(result.adapter_dir), **asdict(result.metrics)}))
    return result


if __name__ == "__main__":
    main()
