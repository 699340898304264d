"""Stages `finetune`, `finetune_self` (the policy arms) and `finetune_wm` (the world model): a
LoRA from the BASE model on example stages of rounds 0..i (the paper's union; which stages of
each round: `run_layout.PolicyArm.training_data`, `run_layout.training_data`)."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from evolver_core.config import ModelSpec, TrainingConfig
from evolver_core.data.identity import StageIdentity, code_digest, folder_content_digest
from evolver_core.data.run_layout import (ADAPTER, FINETUNE, adapter_uri, has_adapter, open_stage, read_identity,
                                          stage_digest)
from evolver_core.data.stage_results import AdapterSummary
from evolver_core.data.stage_work import TokenUsage, record_usage
from evolver_core.data.storage import Storage
from evolver_core.settings import download_cache
from evolver_core.stages.inputs import StageInputs
from evolver_core.training.finetune import METRICS_FILE, finetune
from evolver_core.training.identity import model_identity
from evolver_core.models.refs import resolve_model
from evolver_core.training.sft import examples_digest, read_sft_parquet

log = logging.getLogger(__name__)
CODE = ("evolver_core.training.finetune", "evolver_core.training.sft", "evolver_core.stages.train")


@dataclass(frozen=True)
class FinetuneInputs(StageInputs):
    """A LoRA from `base_model` with the `training` section on the examples of the stages `data`
    names ((round, stage), in training order; a stage not stored is skipped), stored as stage
    `out_stage`."""

    base_model: str
    training: TrainingConfig
    data: tuple[tuple[int, str], ...]
    out_stage: str = FINETUNE


def finetune_identity(inputs: FinetuneInputs) -> StageIdentity:
    store = inputs.store()
    data = {f"{r}/{s}": stage_digest(store, inputs.run_id, r, s) for r, s in inputs.data}
    return StageIdentity(stage=inputs.out_stage, code=code_digest(*CODE), params={
        "base": model_identity(ModelSpec(model=inputs.base_model)), "data": data,
        "training": asdict(inputs.training)})


def adapter_repair_key(inputs: FinetuneInputs) -> str:
    """"repair" when the stage was started but holds no whole adapter (removed, truncated), else "":
    a part of the task's cache key, so a rerun trains it again instead of returning the cached
    result that names it."""
    store = inputs.store()
    started = read_identity(store, inputs.run_id, inputs.round, inputs.out_stage) is not None
    return "repair" if started and not has_adapter(store, inputs.run_id, inputs.round, inputs.out_stage) else ""


def run_finetune(inputs: FinetuneInputs, on_log: Optional[Callable[[int, dict], None]] = None) -> AdapterSummary:
    """Train (or, same identity and a finished adapter there, reuse) the round's adapter of the
    out stage as `inputs` says; returns its URI, content digest, example count, the digest of
    the examples and training metrics."""
    store, run_id, round_, out_stage = inputs.store(), inputs.run_id, inputs.round, inputs.out_stage
    training, base_model = inputs.training, inputs.base_model
    identity = finetune_identity(inputs)
    resumed = open_stage(store, run_id, round_, out_stage, identity) == "resumed"
    examples = [e for r, s in inputs.data if store.exists(run_id, r, s) for e in read_sft_parquet(store, run_id, r, s)]
    if not examples:
        raise ValueError(f"no examples in {', '.join(f'round {r} {s}' for r, s in inputs.data)} of run {run_id}: "
                         "nothing to train on")
    uri = adapter_uri(store, run_id, round_, out_stage)
    reuse = resumed and has_adapter(store, run_id, round_, out_stage)
    if resumed and not reuse and store.fs.exists(store.fs._strip_protocol(uri)):
        log.warning("the adapter at %s is not committed whole (a killed upload, or damaged): training it again", uri)
    if reuse:
        local = store.local_dir(uri, download_cache())
        metrics = json.loads((Path(local) / METRICS_FILE).read_text())["metrics"]
    else:
        with tempfile.TemporaryDirectory(prefix="webevolver-adapter-") as tmp:
            trained = finetune(examples, training, resolve_model(base_model).base, str(Path(tmp) / ADAPTER),
                               on_log=on_log)
            uri = store.put_dir(trained.adapter_dir, run_id, round_, out_stage, ADAPTER)
        metrics = asdict(trained.metrics)
    metrics.pop("loss_history", None)
    if "trained_tokens" in metrics:  # adapters trained before it was counted lack it
        record_usage(store, run_id, round_, out_stage, TokenUsage(trained_tokens=metrics["trained_tokens"]))
    return AdapterSummary(adapter_uri=uri, adapter_digest=_adapter_digest(store, uri), base_model=base_model,
                          examples=len(examples), data_digest=examples_digest(examples), stage=out_stage,
                          identity=identity.digest, metrics=metrics)


def _adapter_digest(store: Storage, uri: str) -> str:
    """The stored adapter's content digest (what the next round's identities name)."""
    return folder_content_digest(store.local_dir(uri, download_cache()))
