"""Stage task `wm_data`: world-model transitions from this round's real trajectories, with
rationales distilled by the base model, saved as Parquet and as SFT examples for M_w."""

from __future__ import annotations

import asyncio

from prefect.artifacts import create_table_artifact

from evolver_core.config import ModelSpec
from evolver_core.records import WM_TRANSITION_TABLE
from evolver_core.sft import write_sft_parquet
from evolver_core.storage import Storage
from evolver_core.world_model import (cap_transitions, distill_rationales, transitions_from_rows,
                                      transitions_to_table, wm_sft_examples)
from tasks.common import stage_task
from tasks.sample import _key

WM_DATA_STAGE = "wm_data"
WM_SFT_STAGE = "wm_sft"


@stage_task(task_run_name="wm_data-r{round_}")
def wm_data(root: str, run_id: str, round_: int, base: ModelSpec, sampled: list, source_stage: str = "sample",
            first_per_site: int = 20, per_action_key: int = 50) -> dict:
    """Every trajectory of `source_stage`, successful or failed, gives transitions; `sampled`
    (the upstream results) is part of the cache key."""
    from infra.serving import serve

    store = Storage(root)
    trajs = store.read_table(run_id, round_, source_stage, table_name="trajectories").to_pylist()
    steps = store.read_table(run_id, round_, source_stage, table_name="steps").to_pylist()
    everything = transitions_from_rows(trajs, steps)
    kept = cap_transitions(everything, first_per_site=first_per_site, per_action_key=per_action_key)
    with serve(base) as server:
        rationales = asyncio.run(distill_rationales(server.client(), kept))
    table = transitions_to_table(kept, rationales, run_id, round_, WM_DATA_STAGE)
    uri = store.write_shard(run_id, round_, WM_DATA_STAGE, WM_TRANSITION_TABLE, table, source_stage)
    examples = wm_sft_examples(kept, rationales)
    sft_uri = write_sft_parquet(examples, store, run_id, round_, source_stage=source_stage, stage=WM_SFT_STAGE)
    result = {"uri": uri, "sft_uri": sft_uri, "transitions": len(everything), "kept": len(kept),
              "first_steps": sum(1 for t in kept if t.action is None), "examples": len(examples)}
    create_table_artifact([{k: v for k, v in result.items() if not k.endswith("uri")}],
                          key=f"{_key(run_id)}-r{round_}-wm-data", description=f"world-model data, round {round_}")
    return result
