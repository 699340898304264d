"""Stage task `judge`: r̂ on every trajectory of a stage (`evolver_core.stages.judge`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional

from prefect.artifacts import create_table_artifact

from evolver_core.config import JudgeConfig, ModelSpec
from evolver_core.data.run_layout import SAMPLE
from evolver_core.data.stage_results import JudgeSummary
from evolver_core.stages.judge import judge_identity, run_judge
from tasks.common import artifact_key, stage_task


@stage_task(judge_identity, task_run_name="judge-{source_stage}-r{round_}", retries=1, retry_delay_seconds=5)
def judge(root: str, run_id: str, round_: int, judge_model: ModelSpec, judge_config: JudgeConfig = JudgeConfig(),
          source_stage: str = SAMPLE, stage: Optional[str] = None) -> JudgeSummary:
    """Verdicts on `source_stage`, stored as stage `stage` (default `judge_stage_for(source_stage)`)."""
    result = run_judge(root, run_id, round_, judge_model, judge_config, source_stage, stage)
    flat = ({k: v for k, v in asdict(result).items() if k != "agreement"}
            | {f"agreement_{k}": v for k, v in result.agreement.items()})
    create_table_artifact([flat], key=artifact_key(run_id, f"r{round_}", result.stage),
                          description=f"judge r̂ of {source_stage}, round {round_}")
    return result
