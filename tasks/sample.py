"""Stage task `sample` (policy x real browser; also every evaluation): artifacts and progress
around `evolver_core.stages.sample.run_sample`."""

from __future__ import annotations

import asyncio

from prefect import get_run_logger
from prefect.artifacts import aupdate_progress_artifact, create_progress_artifact, create_table_artifact

from evolver_core.data.stage_results import SampleSummary
from evolver_core.stages.sample import SampleInputs, run_sample, sample_identity
from infra.serving import serve
from tasks.common import artifact_key, stage_task


@stage_task(sample_identity, task_run_name="sample-{inputs.stage}-r{inputs.round}-shard{inputs.shard}", retries=1,
            retry_delay_seconds=5)
def sample(inputs: SampleInputs) -> SampleSummary:
    """Sample trajectories into `runs/<run>/round=<i>/<stage>/`; a retry or rerun resumes.
    A retrained policy reruns it: its adapter's content is in the identity."""
    logger = get_run_logger()
    stage, round_, sampling = inputs.stage, inputs.round, inputs.sampling
    total = (inputs.n_tasks or 0) * sampling.samples // max(sampling.shards, 1) or None
    progress = create_progress_artifact(0.0, description=f"{stage} round {round_}: episodes done") if total else None

    async def body() -> SampleSummary:
        updates: list = []

        def tick(ep) -> None:
            logger.info(f"{ep.trajectory_id}: {len(ep.steps)} steps, {ep.stop_reason}, reward {ep.gold_reward}"
                        + (f", error: {ep.error}" if ep.error else ""))
            if progress:
                updates.append(asyncio.ensure_future(
                    aupdate_progress_artifact(progress, min(100.0, 100.0 * (len(updates) + 1) / total))))

        summary = await run_sample(inputs, serve, on_done=tick)
        await asyncio.gather(*updates)
        return summary

    summary = asyncio.run(body())
    for uri in summary.repaired:
        logger.warning(f"repaired {uri}")
    create_table_artifact([{k: v for k, v in summary.to_json().items() if k != "repaired"}],
                          key=artifact_key(inputs.run_id, f"r{round_}", stage, inputs.shard),
                          description=f"{stage} stage of round {round_}: counts and success")
    return summary
