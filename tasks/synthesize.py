"""Stage task `synthesize`: the world model as a virtual web server (`evolver_core.stages.synthesize`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from evolver_core.config import JudgeConfig, ModelSpec, SamplingConfig, WorldModelConfig
from evolver_core.data.stage_results import SynthesisSummary
from evolver_core.stages.synthesize import run_synthesize, synthesize_identity
from tasks.common import artifact_key, stage_task


@stage_task(synthesize_identity, task_run_name="synthesize-r{round_}", retries=1, retry_delay_seconds=5)
def synthesize(root: str, run_id: str, round_: int, split: str, policy: ModelSpec, world_model: ModelSpec,
               judge_model: ModelSpec, sampling: SamplingConfig, wm: WorldModelConfig, judge_config: JudgeConfig,
               n_tasks: Optional[int] = None) -> SynthesisSummary:
    """Synthetic trajectories for this round's failed queries; a retry or rerun resumes."""
    result = run_synthesize(root, run_id, round_, split, policy, world_model, judge_model, sampling, wm, judge_config,
                            n_tasks)
    get_run_logger().info(f"synthesized {result.trajectories} trajectories for {result.failed_queries} "
                          "failed queries")
    create_table_artifact([{k: v for k, v in asdict(result).items() if k != "stop_reasons"}
                           | {f"stop_{k}": v for k, v in result.stop_reasons.items()}],
                          key=artifact_key(run_id, f"r{round_}", "synthesize"),
                          description=f"synthetic trajectories (world model as web server), round {round_}")
    return result
