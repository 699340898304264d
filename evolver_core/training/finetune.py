"""LoRA fine-tuning of a base model on SFT examples, with TRL's `SFTTrainer` and PEFT.

The hyperparameters are the preset's training section (`evolver_core.config.TrainingConfig`,
where the defaults are declared and explained); `lora_config` and
`sft_config` are the one place PEFT's and TRL's configs are built from it. Every round
trains from the base model, not from the previous adapter. The examples are
`evolver_core.training.sft` prompt-completion examples, so the loss is on the target reply only.

The adapter is trained in a sibling folder ``.<name>.partial`` and renamed to
`output_dir` only when complete: a killed or failed training never leaves a half adapter
there (the next run removes a stale partial folder). The adapter folder holds the PEFT
adapter, the tokenizer, and ``finetune.json`` (config and metrics).

Nothing here picks a device: the same code runs on CPU with ``python -m`` and on GPUs
under accelerate, e.g.::

    python -m evolver_core.training.finetune --examples sft.parquet --base MODEL_DIR --out ADAPTER_DIR --max-steps 50
    accelerate launch -m evolver_core.training.finetune --examples sft.parquet --base MODEL_DIR --out ADAPTER_DIR --bf16

Every `TrainingConfig` field is a flag (``--lora-r 8``, ``--learning-rate 1e-4``, ...), its
help and allowed values in ``--help`` (`argument_parser`); a value no run can use is refused
in one line before any model loads.
`--examples` is a Parquet file or folder with the `sft.SFT_SCHEMA` columns.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from copy import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from evolver_core.config import TrainingConfig
from evolver_core.training.threads import thread_governor

METRICS_FILE = "finetune.json"

LogFn = Callable[[int, dict[str, float]], None]


def lora_config(training: TrainingConfig):
    """PEFT's `LoraConfig` from the training section."""
    from peft import LoraConfig

    return LoraConfig(r=training.lora_r, lora_alpha=training.lora_alpha, lora_dropout=training.lora_dropout,
                      target_modules=[m.strip() for m in training.target_modules.split(",") if m.strip()],
                      task_type="CAUSAL_LM")


def sft_config(training: TrainingConfig, output_dir: Path):
    """TRL's `SFTConfig` from the training section: its fields that share TRL's names, plus
    what every run here needs (loss on the reply only, no checkpoints, no reporting)."""
    from trl import SFTConfig

    shared = {f.name: getattr(training, f.name) for f in fields(TrainingConfig) if f.name in TRL_NAMES}
    return SFTConfig(
        output_dir=str(output_dir), fp16=False, **shared | {"max_steps": training.max_steps or -1},  # TRL's "none"
        # transformers 5 renamed it; TRL's own default (True) sits under the old name.
        activation_checkpointing=training.gradient_checkpointing,
        completion_only_loss=True, save_strategy="no", report_to="none",
    )


TRL_NAMES = frozenset({"learning_rate", "lr_scheduler_type", "warmup_steps", "per_device_train_batch_size",
                       "gradient_accumulation_steps", "max_length", "max_steps", "num_train_epochs", "bf16", "seed",
                       "logging_steps"})


@dataclass
class FinetuneMetrics:
    train_loss: float  # mean over the run
    steps: int
    runtime_s: float
    trainable_params: int
    examples: int  # given
    examples_trained: int  # left after TRL drops examples whose reply max_length cut off entirely
    trained_tokens: int  # forward and backward, padding aside, over every step and epoch (`trained_tokens`)
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


def trained_tokens(log_history: Sequence[dict[str, float]]) -> int:
    """The tokens a training ran forward and backward: TRL's SFTTrainer logs `num_tokens`, the
    running sum of every batch's attention mask (the real tokens, padding aside) since the
    start, in each log of the trainer's history; the last one counts them all."""
    return int(max((log.get("num_tokens", 0) for log in log_history), default=0))


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


def build_trainer(examples: Sequence[dict[str, Any]], training: TrainingConfig, base_model_dir: str,
                  output_dir: Path, callbacks: Sequence[Any] = ()):
    """The configured TRL `SFTTrainer` (LoRA on the base model), before training."""
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    if not examples:
        raise ValueError("no examples to train on")
    # The adapter records its base; a relative path would only hold from this directory.
    base = str(Path(base_model_dir).resolve()) if Path(base_model_dir).is_dir() else base_model_dir
    trainer = SFTTrainer(model=base, args=sft_config(training, output_dir), train_dataset=_dataset(examples),
                         processing_class=AutoTokenizer.from_pretrained(base), peft_config=lora_config(training),
                         callbacks=list(callbacks))
    _logs_off_stdout(trainer)
    return trainer


def _logs_off_stdout(trainer) -> None:
    """Keep transformers' progress bar, drop the dict of logs it prints to stdout at every step.

    Those dicts (about 400 lines a cpu-preset round) buried the round's printed results; the
    logs still reach `on_log` (the Prefect progress) and the adapter's metrics file.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class _Bar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs) -> None:
            pass

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_Bar())
    trainer.pop_callback(PrinterCallback)  # what transformers prints with instead when tqdm is off


def finetune(examples: Sequence[dict[str, Any]], training: TrainingConfig, base_model_dir: str, output_dir: str, *,
             on_log: LogFn | None = None, share_cpu: bool = True) -> FinetuneResult:
    """Train a LoRA adapter of `base_model_dir` on `examples` into `output_dir`; returns where it is and metrics.

    `on_log(step, logs)` gets every Trainer log (loss, learning rate, ...); an exception it
    raises stops the training, and no adapter is written. `share_cpu` trains on CPU with
    only the cores other processes leave idle (`threads.thread_governor`); False keeps
    torch's threads (`webevolver bench train`'s baseline).
    """
    out = Path(output_dir).resolve()
    partial = out.parent / f".{out.name}.partial"
    history: list[tuple[int, float]] = []
    callbacks = [_callback(on_log, history)] + ([thread_governor()] if share_cpu else [])
    trainer = build_trainer(examples, training, base_model_dir, partial, callbacks)
    if not trainer.train_dataset or len(trainer.train_dataset) == 0:
        raise ValueError(f"none of the {len(examples)} examples fits max_length={training.max_length} tokens with its "
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
            examples=len(examples), examples_trained=len(trainer.train_dataset),
            trained_tokens=trained_tokens(trainer.state.log_history), loss_history=history)
        if writer:
            (partial / METRICS_FILE).write_text(json.dumps(
                {"config": asdict(training), "base_model_dir": base_model_dir, "metrics": asdict(metrics)}, indent=2))
            _commit(partial, out)
    finally:
        if writer:
            shutil.rmtree(partial, ignore_errors=True)
    return FinetuneResult(adapter_dir=out, metrics=metrics)


def argument_parser():
    """transformers' `HfArgumentParser` of the script's flags and every `TrainingConfig` field,
    each with its help and allowed values (`config.setting`) in `--help`."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        @staticmethod
        def _parse_dataclass_field(parser, field):  # argparse takes only its own keywords
            allowed = field.metadata.get("allowed")
            shown = copy(field)
            shown.metadata = {"aliases": field.metadata.get("aliases", []),
                              "help": field.metadata.get("help", "").replace("%", "%%")
                              + (f" Allowed: {allowed.describe()}." if allowed else "")}
            HfArgumentParser._parse_dataclass_field(parser, shown)

    return Parser((ScriptArguments, TrainingConfig))


@dataclass
class ScriptArguments:
    examples: str = field(metadata={"help": "Parquet file or folder of SFT examples (sft.SFT_SCHEMA)"})
    base_model_dir: str = field(metadata={"aliases": ["--base"], "help": "base model folder"})
    output_dir: str = field(metadata={"aliases": ["--out"], "help": "where the adapter goes"})


def main(argv: Sequence[str] | None = None) -> FinetuneResult:
    import pyarrow.parquet as pq

    from evolver_core.training.sft import examples_from_table

    parser = argument_parser()
    try:
        script, training = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as exc:  # a value no run can use (TrainingConfig's check): one line, exit 2
        parser.error(str(exc))
    examples = examples_from_table(pq.read_table(script.examples))
    # The Trainer prints its own progress and logs.
    result = finetune(examples, training, script.base_model_dir, script.output_dir)
    print(json.dumps({"adapter_dir": str(result.adapter_dir), **asdict(result.metrics)}))
    return result


if __name__ == "__main__":
    main()
