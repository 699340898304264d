"""Stage task `synthesize`: the world model as a virtual web server (`evolver_core.stages.synthesize`)."""

from __future__ import annotations

from typing import Optional

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from evolver_core.agents.policy import DEFAULT_MAX_TOKENS
from evolver_core.config import ModelSpec
from evolver_core.stages.synthesize import run_synthesize, synthesize_identity
from evolver_core.world_model.synthesis import SYNTH_MAX_ACTIONS
from tasks.common import artifact_key, stage_task


@stage_task(synthesize_identity, task_run_name="synthesize-r{round_}", retries=1, retry_delay_seconds=5)
def synthesize(root: str, run_id: str, round_: int, suite: str, split: str, policy: ModelSpec,
               world_model: ModelSpec, judge_model: ModelSpec, use_gold: bool, max_queries: Optional[int] = None,
               samples: int = 1, temperature: float = 0.7, max_actions: int = SYNTH_MAX_ACTIONS,
               concurrency: int = 2, miniwob_tasks: str = "easy", wm_max_tokens: int = 1024,
               judge_max_tokens: int = 512, policy_max_tokens: int = DEFAULT_MAX_TOKENS,
               n_tasks: Optional[int] = None, upstream: Optional[list] = None) -> dict:
    """Synthetic trajectories for this round's failed queries; a retry or rerun resumes.
    `upstream` (sampling, judging and world-model results) orders it."""
    result = run_synthesize(root, run_id, round_, suite, split, policy, world_model, judge_model, use_gold,
                            max_queries, samples, temperature, max_actions, concurrency, miniwob_tasks,
                            wm_max_tokens, judge_max_tokens, policy_max_tokens, n_tasks)
    get_run_logger().info(f"synthesized {result['trajectories']} trajectories for {result['failed_queries']} "
                          "failed queries")
    create_table_artifact([{k: v for k, v in result.items() if k != "stop_reasons"}
                           | {f"stop_{k}": v for k, v in result["stop_reasons"].items()}],
                          key=artifact_key(run_id, f"r{round_}", "synthesize"),
                          description=f"synthetic trajectories (world model as web server), round {round_}")
    return result
