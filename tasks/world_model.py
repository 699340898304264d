"""World-model stage tasks: `wm_data` (transitions from this round's real trajectories, with
rationales distilled by the base model, saved as Parquet and as SFT examples for M_w) and
`fidelity` (STR / Sim. / O/A of the round's M_w on held-out real transitions)."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from typing import Optional

import pyarrow as pa
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from evolver_core.config import ModelSpec
from evolver_core.fidelity import measure_fidelity
from evolver_core.records import FIDELITY_SCHEMA, FIDELITY_TABLE, WM_TRANSITION_TABLE
from evolver_core.sft import write_sft_parquet
from evolver_core.storage import Storage
from evolver_core.world_model import (WorldModel, cap_transitions, distill_rationales, transitions_from_rows,
                                      transitions_to_table, wm_sft_examples)
from tasks.common import stage_task
from tasks.sample import _key

WM_DATA_STAGE = "wm_data"
WM_SFT_STAGE = "wm_sft"
FIDELITY_STAGE = "fidelity"


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


@stage_task(task_run_name="fidelity-r{round_}")
def fidelity(root: str, run_id: str, round_: int, world_model: ModelSpec, judge_model: Optional[ModelSpec],
             source_stage: str = "eval", max_transitions: int = 20, wm_max_tokens: int = 1024,
             after: Optional[list] = None) -> dict:
    """Paper Table 2 for this round's world model: its predictions (temperature 0) of the real
    transitions of `source_stage`, by default the evaluation on the TEST split, whose tasks
    the world model never trained on. At most `max_transitions` (the reference's caps,
    seeded). O/A needs `judge_model`. `after` (the evaluation and the WM training) is part of
    the cache key."""
    from infra.serving import serve

    store = Storage(root)
    trajs = store.read_table(run_id, round_, source_stage, table_name="trajectories").to_pylist()
    steps = store.read_table(run_id, round_, source_stage, table_name="steps").to_pylist()
    held_out = cap_transitions(transitions_from_rows(trajs, steps), limit=max_transitions)
    with ExitStack() as stack:
        wm = WorldModel(stack.enter_context(serve(world_model)).client(), temperature=0.0, max_tokens=wm_max_tokens)
        judge = stack.enter_context(serve(judge_model)).client() if judge_model else None
        report, rows = asyncio.run(measure_fidelity(wm, held_out, judge=judge))
    if rows:
        table = pa.Table.from_pylist([{"run_id": run_id, "round": round_, "stage": FIDELITY_STAGE} | r for r in rows],
                                     schema=FIDELITY_SCHEMA)
        report["uri"] = store.write_shard(run_id, round_, FIDELITY_STAGE, FIDELITY_TABLE, table, source_stage)
    create_table_artifact([{"round": round_, **{k: v for k, v in report.items() if k != "uri"}}],
                          key=f"{_key(run_id)}-r{round_}-wm-fidelity",
                          description=f"world-model fidelity (STR / Sim. / O/A), round {round_}")
    create_markdown_artifact(
        f"### World model, round {round_}: fidelity on {report['n']} held-out real transitions ({source_stage})\n\n"
        f"| STR | Sim. | O/A |\n|---|---|---|\n| {_fmt(report['str'])} | {_fmt(report['sim'])} | {_fmt(report['oa'])} |\n\n"
        "STR: the prediction parses as a page tree; Sim.: element F1 and line similarity to the real page; "
        "O/A: the judge finds it functionally equivalent (`evolver_core/fidelity.py`).\n",
        key=f"{_key(run_id)}-r{round_}-wm-fidelity-report")
    return report


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.3f}"
