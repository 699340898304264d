"""World-model stage tasks `wm_data` and `fidelity` (`evolver_core.stages.world_model`)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from prefect.artifacts import (create_markdown_artifact, create_progress_artifact, create_table_artifact,
                               update_progress_artifact)

from evolver_core.data.stage_results import FidelitySummary, WmDataSummary
from evolver_core.reporting.formats import measure
from evolver_core.stages.world_model import (FidelityInputs, WmDataInputs, fidelity_identity, run_fidelity,
                                             run_wm_data, wm_data_identity)
from infra.serving import serve
from tasks.common import artifact_key, stage_task


@stage_task(wm_data_identity, task_run_name="wm_data-r{inputs.round}")
def wm_data(inputs: WmDataInputs) -> WmDataSummary:
    """Transitions of every trajectory of the source stage, successful or failed."""
    round_ = inputs.round
    progress = create_progress_artifact(0.0, description=f"wm_data round {round_}: rationales distilled")

    def on_done(done: int, total: int) -> None:  # called inside the stage's event loop: update from a thread
        asyncio.get_running_loop().run_in_executor(None, update_progress_artifact, progress,
                                                   100.0 * done / max(total, 1))

    result = run_wm_data(inputs, serve, on_done=on_done)
    create_table_artifact([{k: v for k, v in asdict(result).items() if not k.endswith("uri")}],
                          key=artifact_key(inputs.run_id, f"r{round_}", "wm-data"),
                          description=f"world-model data, round {round_}")
    return result


@stage_task(fidelity_identity, task_run_name="fidelity-r{inputs.round}")
def fidelity(inputs: FidelityInputs) -> FidelitySummary:
    """Paper Table 2 for this round's world model (`run_fidelity`)."""
    run_id, round_, source_stage = inputs.run_id, inputs.round, inputs.source_stage
    report = run_fidelity(inputs, serve)
    create_table_artifact([{"round": round_, **{k: v for k, v in asdict(report).items() if k != "uri"}}],
                          key=artifact_key(run_id, f"r{round_}", "wm-fidelity"),
                          description=f"world-model fidelity (STR / Sim. / O/A), round {round_}")
    create_markdown_artifact(
        f"### World model, round {round_}: fidelity on {report.n} held-out real transitions ({source_stage})\n\n"
        f"| STR | Sim. | O/A |\n|---|---|---|\n"
        f"| {measure(report.str)} | {measure(report.sim)} | {measure(report.oa)} |\n\n"
        "STR: the prediction parses as a page tree; Sim.: element F1 and line similarity to the real page; "
        "O/A: the judge finds it functionally equivalent (`evolver_core/world_model/fidelity.py`).\n",
        key=artifact_key(run_id, f"r{round_}", "wm-fidelity-report"))
    return report
