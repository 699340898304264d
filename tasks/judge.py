"""Stage task `judge`: r̂ on every trajectory of a stage (`evolver_core.stages.judge`)."""

from __future__ import annotations

from dataclasses import asdict

from prefect.artifacts import create_table_artifact

from evolver_core.data.stage_results import JudgeSummary
from evolver_core.stages.judge import JudgeInputs, judge_identity, run_judge
from infra.serving import serve
from tasks.common import artifact_key, stage_task


@stage_task(judge_identity, task_run_name="judge-{inputs.source_stage}-r{inputs.round}", retries=1,
            retry_delay_seconds=5)
def judge(inputs: JudgeInputs) -> JudgeSummary:
    """Verdicts on the source stage, stored as `inputs.out_stage`."""
    result = run_judge(inputs, serve)
    flat = ({k: v for k, v in asdict(result).items() if k != "agreement"}
            | {f"agreement_{k}": v for k, v in result.agreement.items()})
    create_table_artifact([flat], key=artifact_key(inputs.run_id, f"r{inputs.round}", result.stage),
                          description=f"judge r̂ of {inputs.source_stage}, round {inputs.round}")
    return result
