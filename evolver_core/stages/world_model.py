"""World-model stages: `wm_data` (transitions of a round's real trajectories with rationales
distilled by the base model, as Parquet and as the world model's examples `wm_sft`) and
`fidelity` (STR / Sim. / O/A of the round's M_w on held-out real transitions)."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import pyarrow as pa

from evolver_core.config import ModelSpec, WorldModelConfig
from evolver_core.data.episodes import read_episodes
from evolver_core.data.identity import StageIdentity, code_digest
from evolver_core.data.records import FIDELITY_SCHEMA, FIDELITY_TABLE, WM_TRANSITION_TABLE
from evolver_core.data.run_layout import EVAL, FIDELITY, SAMPLE, WM_DATA, WM_SFT, open_stage, stage_digest
from evolver_core.data.stage_results import FidelitySummary, WmDataSummary
from evolver_core.models.serving import ServeModel
from evolver_core.stages.inputs import StageInputs
from evolver_core.training.identity import model_identity
from evolver_core.training.sft import write_sft_parquet
from evolver_core.world_model.fidelity import measure_fidelity
from evolver_core.world_model.model import (WorldModel, cap_transitions, distill_rationales, predictable,
                                            transitions_from_records, transitions_to_table, wm_sft_examples)

WM_DATA_CODE = ("evolver_core.world_model.model", "evolver_core.stages.world_model")
FIDELITY_CODE = ("evolver_core.world_model.fidelity", "evolver_core.stages.world_model")


@dataclass(frozen=True)
class WmDataInputs(StageInputs):
    """Transitions of every trajectory of `source_stage`, as the world-model section `wm`
    caps and forms them, with rationales distilled by `base`."""

    base: ModelSpec
    wm: WorldModelConfig
    source_stage: str = SAMPLE


def wm_data_identity(inputs: WmDataInputs) -> StageIdentity:
    wm = inputs.wm
    return StageIdentity(stage=WM_DATA, code=code_digest(*WM_DATA_CODE), params={
        "source": stage_digest(inputs.store(), inputs.run_id, inputs.round, inputs.source_stage),
        "distiller": model_identity(inputs.base), "first_per_site": wm.first_per_site,
        "per_action_key": wm.per_action_key, "rationale_max_tokens": wm.rationale_max_tokens,
        "limit": wm.transitions, "form": wm.form})


def run_wm_data(inputs: WmDataInputs, serve: ServeModel,
                on_done: Optional[Callable[[int, int], None]] = None) -> WmDataSummary:
    """Every trajectory of the source stage, successful or failed, gives transitions (at most
    `wm.transitions` a round, chosen at random, seeded), with rationales by the base model
    (served by `serve`); `on_done(done, total)` reports the rationale distillation's progress
    (the slow part on CPU)."""
    serve_without_browser = partial(serve, browser=False)  # no browser in this stage: every core

    store, wm, run_id, round_ = inputs.store(), inputs.wm, inputs.run_id, inputs.round
    source_stage = inputs.source_stage
    identity = wm_data_identity(inputs)
    open_stage(store, run_id, round_, WM_DATA, identity)
    # `wm_sft` is written here too: it is this stage's other output, under the same identity.
    open_stage(store, run_id, round_, WM_SFT, StageIdentity(stage=WM_SFT, code=identity.code,
                                                            params={"wm_data": identity.digest}))
    trajs, steps = read_episodes(store, run_id, round_, source_stage)
    trajs = [t for t in trajs if t.stop_reason != "error"]  # an error episode shows a fault, not the site
    everything = predictable(transitions_from_records(trajs, steps), wm.form)
    kept = cap_transitions(everything, first_per_site=wm.first_per_site, per_action_key=wm.per_action_key,
                           limit=wm.transitions)
    distillers = []  # the model client, where rationales are distilled
    if wm.thought:
        with serve_without_browser(inputs.base) as server:
            distillers.append(distiller := server.client())
            rationales = asyncio.run(distill_rationales(distiller, kept, max_tokens=wm.rationale_max_tokens,
                                                        on_done=on_done))
    else:  # no rationales: no base model to start
        rationales = [None] * len(kept)
    table = transitions_to_table(kept, rationales, run_id, round_, WM_DATA)
    uri = store.write_shard(run_id, round_, WM_DATA, WM_TRANSITION_TABLE, table, source_stage)
    examples = wm_sft_examples(kept, rationales, wm.form)
    sft_uri = write_sft_parquet(examples, store, run_id, round_, source_stage=source_stage, stage=WM_SFT)
    inputs.record_calls(WM_DATA, *distillers)
    return WmDataSummary(uri=uri, sft_uri=sft_uri, transitions=len(everything), kept=len(kept),
                         first_steps=sum(1 for t in kept if t.action is None), examples=len(examples),
                         identity=identity.digest)


@dataclass(frozen=True)
class FidelityInputs(StageInputs):
    """Paper Table 2 for `world_model`, predicting as the section `wm` says, greedily, on the
    real transitions of `source_stage`; O/A needs `judge_model`."""

    world_model: ModelSpec
    judge_model: Optional[ModelSpec]
    wm: WorldModelConfig
    source_stage: str = EVAL


def fidelity_identity(inputs: FidelityInputs) -> StageIdentity:
    return StageIdentity(stage=FIDELITY, code=code_digest(*FIDELITY_CODE), params={
        "source": stage_digest(inputs.store(), inputs.run_id, inputs.round, inputs.source_stage),
        "world_model": model_identity(inputs.world_model), "judge": model_identity(inputs.judge_model),
        "max_transitions": inputs.wm.fidelity_transitions, "wm": inputs.wm.prediction_params(greedy=True)})


def run_fidelity(inputs: FidelityInputs, serve: ServeModel) -> FidelitySummary:
    """Paper Table 2 for this round's world model: its predictions (temperature 0) of the real
    transitions of the source stage (the test split's evaluation: tasks M_w never trained on),
    at most `wm.fidelity_transitions` (seeded). O/A needs a judge model. `serve` serves both."""
    serve_without_browser = partial(serve, browser=False)  # no browser in this stage: every core

    store, wm, run_id, round_ = inputs.store(), inputs.wm, inputs.run_id, inputs.round
    identity = fidelity_identity(inputs)
    open_stage(store, run_id, round_, FIDELITY, identity)
    trajs, steps = read_episodes(store, run_id, round_, inputs.source_stage)
    trajs = [t for t in trajs if t.stop_reason != "error"]
    held_out = cap_transitions(predictable(transitions_from_records(trajs, steps), wm.form),
                               limit=wm.fidelity_transitions)
    with ExitStack() as stack:
        model = WorldModel(stack.enter_context(serve_without_browser(inputs.world_model)).client(), wm, greedy=True)
        judge = (stack.enter_context(serve_without_browser(inputs.judge_model)).client() if inputs.judge_model
                 else None)
        report, rows = asyncio.run(measure_fidelity(model, held_out, judge=judge))
    uri = None
    if rows:
        table = pa.Table.from_pylist([{"run_id": run_id, "round": round_, "stage": FIDELITY} | r for r in rows],
                                     schema=FIDELITY_SCHEMA)
        uri = store.write_shard(run_id, round_, FIDELITY, FIDELITY_TABLE, table, inputs.source_stage)
    inputs.record_calls(FIDELITY, model.client, *([judge] if judge else []))
    return FidelitySummary(**report, uri=uri, identity=identity.digest)
