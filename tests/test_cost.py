"""The cost report's parts: the machine's limits (measured, positive), a model folder's size,
each stage's ratios to the limits, and the stage files written once per identity. A real
smoke round's report is checked in `test_flows.py`; speed is never asserted."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from cli.output import cost_table

from evolver_core.benchmarks import machine_limits
from evolver_core.data.identity import StageIdentity
from evolver_core.data.run_layout import open_stage
from evolver_core.data.stage_work import (TokenUsage, read_seconds, read_usage, record_seconds, record_usage,
                                          timed_stages)
from evolver_core.data.storage import Storage
from evolver_core.models.folders import weights_size
from evolver_core.reporting.cost import FAR, MachineLimits, round_cost, stage_cost
from evolver_core.training.finetune import trained_tokens

LIMITS = MachineLimits(flops_per_s=1e9, bytes_per_s=1e9, threads=1)


def test_the_machine_limits_are_measured_positive() -> None:
    limits = machine_limits(1, matmul_n=64, copy_bytes=1 << 20, repeats=1)
    assert limits.flops_per_s > 0 and limits.bytes_per_s > 0 and limits.threads == 1
    assert machine_limits(matmul_n=64, copy_bytes=1 << 20, repeats=1).threads >= 1  # the cores training may use


def test_weights_size_counts_every_stored_parameter(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    size = weights_size(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    assert size.params == sum(p.numel() for p in model.parameters())  # tied embeddings once
    assert size.bytes == 4 * size.params  # fp32
    with pytest.raises(FileNotFoundError):
        weights_size(tiny_model.parent)


def test_stage_ratios_are_the_work_at_the_limits_over_the_seconds() -> None:
    params, weight_bytes = 1000, 4000
    decoding = stage_cost(10.0, TokenUsage(prompt_tokens=500, generated_tokens=50), LIMITS, params, weight_bytes)
    assert decoding.flops_ratio == pytest.approx(2 * params * 500 / 10 / 1e9)
    assert decoding.bandwidth_ratio == pytest.approx(weight_bytes * 50 / 10 / 1e9)
    assert decoding.ratio == pytest.approx(decoding.flops_ratio + decoding.bandwidth_ratio)
    training = stage_cost(2.0, TokenUsage(trained_tokens=10**6), LIMITS, params, weight_bytes)
    assert training.flops_ratio == pytest.approx(4 * params * 10**6 / 2 / 1e9) and training.bandwidth_ratio is None
    assert training.ratio >= FAR and training.note == "200.0% of the limit"
    assert decoding.ratio < FAR and decoding.note.startswith("far from the limit")
    idle = stage_cost(3.0, TokenUsage(), LIMITS, params, weight_bytes)
    assert idle.ratio is None and idle.note == "no model work"
    untimed = stage_cost(None, TokenUsage(prompt_tokens=5), LIMITS, params, weight_bytes)
    assert untimed.ratio is None and untimed.note.startswith("not timed")


def test_trained_tokens_are_the_last_running_count() -> None:
    history = [{"loss": 2.0, "num_tokens": 300.0}, {"loss": 1.5, "num_tokens": 610.0}, {"train_runtime": 3.0}]
    assert trained_tokens(history) == 610 and trained_tokens([{"loss": 1.0}]) == 0


def test_stage_files_are_written_once_per_identity(tmp_path: Path) -> None:
    store = Storage(str(tmp_path))
    assert not record_seconds(store, "r", 0, "eval", 5.0)  # no identity: the stage stored nothing
    open_stage(store, "r", 0, "eval", StageIdentity(stage="eval", code="a", params={}))
    assert record_seconds(store, "r", 0, "eval", 5.0) and not record_seconds(store, "r", 0, "eval", 0.1)
    assert read_seconds(store, "r", 0, "eval").seconds == 5.0  # a cached rerun keeps the run that did the work
    assert record_usage(store, "r", 0, "eval", TokenUsage(prompt_tokens=7))
    assert not record_usage(store, "r", 0, "eval", TokenUsage())
    assert read_usage(store, "r", 0, "eval") == TokenUsage(prompt_tokens=7)
    open_stage(store, "r", 0, "fidelity", StageIdentity(stage="fidelity", code="a", params={}))
    record_seconds(store, "r", 0, "fidelity", 2.0)
    assert list(timed_stages(store, "r", 0)) == ["eval", "fidelity"]  # as they ended
    cost = round_cost(store, "r", 0, LIMITS, 1000, 4000)
    assert cost.stages["eval"].prompt_tokens == 7 and cost.stages["fidelity"].note == "no model work"
    console = Console(width=200, record=True)
    console.print(cost_table({0: cost, 1: cost}))  # what `evolve` and `bench round` print
    text = console.export_text()
    assert len([line for line in text.splitlines() if " eval " in line or " fidelity " in line]) == 4
    assert "1 GFLOP/s matmul" in text
    # another identity moves the folder aside, its files with it: the new run records its own
    open_stage(store, "r", 0, "eval", StageIdentity(stage="eval", code="b", params={}))
    assert read_seconds(store, "r", 0, "eval") is None and record_seconds(store, "r", 0, "eval", 3.0)
