"""World-model stages: `wm_data` (transitions of a round's real trajectories with rationales
distilled by the base model, as Parquet and as the world model's examples `wm_sft`) and
`fidelity` (STR / Sim. / O/A of the round's M_w on held-out real transitions)."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from typing import Callable, Optional

import pyarrow as pa

from evolver_core.config import ModelSpec, WorldModelConfig
from evolver_core.data.episodes import read_episodes
from evolver_core.data.identity import StageIdentity, code_digest
from evolver_core.data.records import FIDELITY_SCHEMA, FIDELITY_TABLE, WM_TRANSITION_TABLE
from evolver_core.data.run_layout import EVAL, FIDELITY, SAMPLE, WM_DATA, WM_SFT, open_stage, stage_digest
from evolver_core.data.stage_results import FidelitySummary, WmDataSummary
from evolver_core.data.storage import Storage
from evolver_core.training.identity import model_identity
from evolver_core.training.sft import write_sft_parquet
from evolver_core.world_model.fidelity import measure_fidelity
from evolver_core.world_model.model import (WorldModel, cap_transitions, distill_rationales, predictable,
                                            transitions_from_records, transitions_to_table, wm_sft_examples)

WM_DATA_CODE = ("evolver_core.world_model.model", "evolver_core.stages.world_model")
FIDELITY_CODE = ("evolver_core.world_model.fidelity", "evolver_core.stages.world_model")


def wm_data_identity(root: str, run_id: str, round_: int, base: ModelSpec, wm: WorldModelConfig,
                     source_stage: str = SAMPLE, **_: object) -> StageIdentity:
    return StageIdentity(stage=WM_DATA, code=code_digest(*WM_DATA_CODE), params={
        "source": stage_digest(Storage(root), run_id, round_, source_stage), "distiller": model_identity(base),
        "first_per_site": wm.first_per_site, "per_action_key": wm.per_action_key,
        "rationale_max_tokens": wm.rationale_max_tokens, "limit": wm.transitions, "form": wm.form})


def run_wm_data(root: str, run_id: str, round_: int, base: ModelSpec, wm: WorldModelConfig,
                source_stage: str = SAMPLE, on_done: Optional[Callable[[int, int], None]] = None) -> WmDataSummary:
    """Every trajectory of `source_stage`, successful or failed, gives transitions (at most
    `wm.transitions` a round, chosen at random, seeded); `on_done(done, total)` reports the
    rationale distillation's progress (the slow part on CPU)."""
    from infra.serving import serve_without_browser  # no browser in this stage: every core

    store = Storage(root)
    identity = wm_data_identity(root, run_id, round_, base, wm, source_stage)
    open_stage(store, run_id, round_, WM_DATA, identity)
    # `wm_sft` is written here too: it is this stage's other output, under the same identity.
    open_stage(store, run_id, round_, WM_SFT, StageIdentity(stage=WM_SFT, code=identity.code,
                                                            params={"wm_data": identity.digest}))
    trajs, steps = read_episodes(store, run_id, round_, source_stage)
    trajs = [t for t in trajs if t.stop_reason != "error"]  # an error episode shows a fault, not the site
    everything = predictable(transitions_from_records(trajs, steps), wm.form)
    kept = cap_transitions(everything, first_per_site=wm.first_per_site, per_action_key=wm.per_action_key,
                           limit=wm.transitions)
    if wm.thought:
        with serve_without_browser(base) as server:
            rationales = asyncio.run(distill_rationales(server.client(), kept, max_tokens=wm.rationale_max_tokens,
                                                        on_done=on_done))
    else:  # no rationales: no base model to start
        rationales = [None] * len(kept)
    table = transitions_to_table(kept, rationales, run_id, round_, WM_DATA)
    uri = store.write_shard(run_id, round_, WM_DATA, WM_TRANSITION_TABLE, table, source_stage)
    examples = wm_sft_examples(kept, rationales, wm.form)
    sft_uri = write_sft_parquet(examples, store, run_id, round_, source_stage=source_stage, stage=WM_SFT)
    return WmDataSummary(uri=uri, sft_uri=sft_uri, transitions=len(everything), kept=len(kept),
                         first_steps=sum(1 for t in kept if t.action is None), examples=len(examples),
                         identity=identity.digest)


def fidelity_identity(root: str, run_id: str, round_: int, world_model: ModelSpec, judge_model: Optional[ModelSpec],
                      wm: WorldModelConfig, source_stage: str = EVAL, **_: object) -> StageIdentity:
    return StageIdentity(stage=FIDELITY, code=code_digest(*FIDELITY_CODE), params={
        "source": stage_digest(Storage(root), run_id, round_, source_stage), "world_model": model_identity(world_model),
        "judge": model_identity(judge_model), "max_transitions": wm.fidelity_transitions,
        "wm_max_tokens": wm.max_tokens, "form": wm.form, "thought": wm.thought, "constrained": wm.constrained})


def run_fidelity(root: str, run_id: str, round_: int, world_model: ModelSpec, judge_model: Optional[ModelSpec],
                 wm: WorldModelConfig, source_stage: str = EVAL) -> FidelitySummary:
    """Paper Table 2 for this round's world model: its predictions (temperature 0) of the real
    transitions of `source_stage` (the test split's evaluation: tasks M_w never trained on),
    at most `wm.fidelity_transitions` (seeded). O/A needs `judge_model`."""
    from infra.serving import serve_without_browser  # no browser in this stage: every core

    store = Storage(root)
    identity = fidelity_identity(root, run_id, round_, world_model, judge_model, wm, source_stage)
    open_stage(store, run_id, round_, FIDELITY, identity)
    trajs, steps = read_episodes(store, run_id, round_, source_stage)
    trajs = [t for t in trajs if t.stop_reason != "error"]
    held_out = cap_transitions(predictable(transitions_from_records(trajs, steps), wm.form),
                               limit=wm.fidelity_transitions)
    with ExitStack() as stack:
        model = WorldModel.of(stack.enter_context(serve_without_browser(world_model)).client(), wm, greedy=True)
        judge = stack.enter_context(serve_without_browser(judge_model)).client() if judge_model else None
        report, rows = asyncio.run(measure_fidelity(model, held_out, judge=judge))
    uri = None
    if rows:
        table = pa.Table.from_pylist([{"run_id": run_id, "round": round_, "stage": FIDELITY} | r for r in rows],
                                     schema=FIDELITY_SCHEMA)
        uri = store.write_shard(run_id, round_, FIDELITY, FIDELITY_TABLE, table, source_stage)
    return FidelitySummary(**report, uri=uri, identity=identity.digest)
