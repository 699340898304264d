"""Stage task `synthesize`: the world model as a virtual web server (`evolver_core.stages.synthesize`)."""

from __future__ import annotations

from dataclasses import asdict

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from evolver_core.data.stage_results import SynthesisSummary
from evolver_core.stages.synthesize import SynthesizeInputs, run_synthesize, synthesize_identity
from infra.serving import serve
from tasks.common import artifact_key, stage_task


@stage_task(synthesize_identity, task_run_name="synthesize-r{inputs.round}", retries=1, retry_delay_seconds=5)
def synthesize(inputs: SynthesizeInputs) -> SynthesisSummary:
    """Synthetic trajectories for this round's failed queries; a retry or rerun resumes."""
    result = run_synthesize(inputs, serve)
    get_run_logger().info(f"synthesized {result.trajectories} trajectories for {result.failed_queries} "
                          "failed queries")
    create_table_artifact([{k: v for k, v in asdict(result).items() if k != "stop_reasons"}
                           | {f"stop_{k}": v for k, v in result.stop_reasons.items()}],
                          key=artifact_key(inputs.run_id, f"r{inputs.round}", "synthesize"),
                          description=f"synthetic trajectories (world model as web server), round {inputs.round}")
    return result
