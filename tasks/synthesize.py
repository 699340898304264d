"""Stage task `synthesize`: the world model as a virtual web server (paper 3.3).

For the queries real sampling failed (none of their trajectories kept by rejection
sampling), the policy and the world model alternate from the task's start (at most 7 policy
actions, `evolver_core.synthesis`); each synthetic trajectory is judged by r̂ as it ends and
stored under `round=<i>/synthesize/` with ``source = "synthetic"``, so `to_sft` converts it
like a real one and the viewer shows the world model's predicted pages.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from typing import Optional

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from evolver_core.config import ModelSpec
from evolver_core.judge_stage import JUDGE_STAGE
from evolver_core.policy import PolicyAgent
from evolver_core.sampling import SampleConfig, SampleSummary, episode_seed
from evolver_core.storage import Storage
from evolver_core.suites.registry import get_suite
from evolver_core.synthesis import SYNTH_MAX_ACTIONS, failed_task_ids, synthesize as run_synthesis
from evolver_core.world_model import WorldModel
from tasks.common import stage_task
from tasks.sample import _key, sample_result

SYNTH_STAGE = "synthesize"


async def synthesize_failed(root: str, run_id: str, round_: int, suite: str, split: str, *, policy: ModelSpec,
                            world_model: ModelSpec, judge_model: ModelSpec, use_gold: bool,
                            max_queries: Optional[int] = None, samples: int = 1, temperature: float = 0.7,
                            max_actions: int = SYNTH_MAX_ACTIONS, concurrency: int = 2, miniwob_tasks: str = "easy",
                            wm_max_tokens: int = 1024, judge_max_tokens: int = 512,
                            source_stage: str = "sample") -> tuple[list[str], SampleSummary | None]:
    """(the failed task ids, the summary of their synthetic trajectories; None when none failed)."""
    from infra.serving import serve

    store = Storage(root)
    verdict_stage = source_stage if use_gold else JUDGE_STAGE
    trajs = store.read_table(run_id, round_, verdict_stage, table_name="trajectories").to_pylist()
    steps = store.read_table(run_id, round_, source_stage, table_name="steps").to_pylist()
    failed = failed_task_ids(trajs, steps, use_gold=use_gold)[:max_queries]
    if not failed:
        return failed, None
    the_suite = get_suite(suite, miniwob_tasks=miniwob_tasks)
    await the_suite.start()  # for the tasks' start URLs; no browser is opened
    try:
        by_id = {t.id: t for t in the_suite.tasks(split)}
        missing = [i for i in failed if i not in by_id]
        if missing:
            raise ValueError(f"failed tasks {missing[:3]} are not in {suite}/{split}: was the suite's task list changed?")
        cfg = SampleConfig(run_id=run_id, round=round_, stage=SYNTH_STAGE, samples=samples, source="synthetic")
        with ExitStack() as stack:
            policy_client = stack.enter_context(serve(policy)).client()
            wm = WorldModel(stack.enter_context(serve(world_model)).client(), max_tokens=wm_max_tokens)
            judge_client = stack.enter_context(serve(judge_model)).client()
            summary = await run_synthesis(
                [by_id[i] for i in failed],
                lambda task, k: PolicyAgent(policy_client, temperature=temperature, seed=episode_seed(task, k)),
                wm, store, cfg, concurrency=concurrency, judge_client=judge_client,
                judge_max_tokens=judge_max_tokens, max_actions=max_actions)
    finally:
        await the_suite.stop()
    return failed, summary


@stage_task(task_run_name="synthesize-r{round_}", retries=1, retry_delay_seconds=5)
def synthesize(root: str, run_id: str, round_: int, suite: str, split: str, policy: ModelSpec,
               world_model: ModelSpec, judge_model: ModelSpec, use_gold: bool, max_queries: Optional[int] = None,
               samples: int = 1, temperature: float = 0.7, max_actions: int = SYNTH_MAX_ACTIONS,
               concurrency: int = 2, miniwob_tasks: str = "easy", wm_max_tokens: int = 1024,
               judge_max_tokens: int = 512, upstream: Optional[list] = None) -> dict:
    """Synthetic trajectories for this round's failed queries; a retry or rerun resumes.
    `upstream` (sampling, judging and world-model results) is part of the cache key."""
    failed, summary = asyncio.run(synthesize_failed(
        root, run_id, round_, suite, split, policy=policy, world_model=world_model, judge_model=judge_model,
        use_gold=use_gold, max_queries=max_queries, samples=samples, temperature=temperature,
        max_actions=max_actions, concurrency=concurrency, miniwob_tasks=miniwob_tasks, wm_max_tokens=wm_max_tokens,
        judge_max_tokens=judge_max_tokens))
    result = {"failed_queries": len(failed), "trajectories": 0, "judged_successes": 0, "stop_reasons": {},
              "uri": Storage(root).uri(run_id, round_, SYNTH_STAGE)}
    if summary is not None:
        rows = Storage(root).read_table(run_id, round_, SYNTH_STAGE, table_name="trajectories").to_pylist()
        reasons: dict[str, int] = {}
        for r in rows:
            reasons[r["stop_reason"]] = reasons.get(r["stop_reason"], 0) + 1
        result |= {k: v for k, v in sample_result(summary).items() if k in ("trajectories", "new", "steps",
                                                                             "valid_actions", "uri")}
        result |= {"judged_successes": sum(r["judge_verdict"] == 1 for r in rows), "stop_reasons": reasons}
    get_run_logger().info(f"synthesized {result['trajectories']} trajectories for {len(failed)} failed queries")
    create_table_artifact([{k: v for k, v in result.items() if k != "stop_reasons"}
                           | {f"stop_{k}": v for k, v in result["stop_reasons"].items()}],
                          key=f"{_key(run_id)}-r{round_}-synthesize",
                          description=f"synthetic trajectories (world model as web server), round {round_}")
    return result
