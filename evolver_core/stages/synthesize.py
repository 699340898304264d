"""Stage `synthesize`: the world model as a virtual web server (paper 3.3).

For the queries real sampling failed (none of their trajectories kept by rejection
sampling), the policy and the world model alternate from the task's start (at most
`max_actions` policy actions, `evolver_core.world_model.synthesis`); each synthetic trajectory is judged
by r̂ as it ends and stored under `round=<i>/synthesize/` with ``source = "synthetic"``, so
`to_sft` converts it like a real one and the viewer shows the world model's predicted pages.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from typing import Optional

from evolver_core.agents.policy import DEFAULT_MAX_TOKENS, PolicyAgent
from evolver_core.config import ModelSpec
from evolver_core.data.identity import StageIdentity, code_digest, model_identity
from evolver_core.data.run_layout import SAMPLE, SYNTHESIZE, open_stage, stage_digest
from evolver_core.data.storage import Storage
from evolver_core.sampling.sampler import SampleConfig, episode_seed
from evolver_core.stages.sample import open_suite, sample_result
from evolver_core.stages.sft import verdict_stage_for
from evolver_core.world_model.model import WorldModel
from evolver_core.world_model.synthesis import SYNTH_MAX_ACTIONS, failed_task_ids, synthesize

CODE = ("evolver_core.world_model.synthesis", "evolver_core.stages.synthesize")


def synthesize_identity(root: str, run_id: str, round_: int, suite: str, split: str, policy: ModelSpec,
                        world_model: ModelSpec, judge_model: ModelSpec, use_gold: bool,
                        max_queries: Optional[int] = None, samples: int = 1, temperature: float = 0.7,
                        max_actions: int = SYNTH_MAX_ACTIONS, miniwob_tasks: str = "easy", wm_max_tokens: int = 1024,
                        judge_max_tokens: int = 512, policy_max_tokens: int = DEFAULT_MAX_TOKENS,
                        **_: object) -> StageIdentity:
    store = Storage(root)
    return StageIdentity(stage=SYNTHESIZE, code=code_digest(*CODE), params={
        "source": stage_digest(store, run_id, round_, SAMPLE),
        "verdicts": stage_digest(store, run_id, round_, verdict_stage_for(SAMPLE, use_gold)),
        "suite": suite, "split": split, "miniwob_tasks": miniwob_tasks, "use_gold": use_gold,
        "policy": model_identity(policy), "world_model": model_identity(world_model),
        "judge": model_identity(judge_model), "max_queries": max_queries, "samples": samples,
        "temperature": temperature, "max_actions": max_actions, "wm_max_tokens": wm_max_tokens,
        "judge_max_tokens": judge_max_tokens, "policy_max_tokens": policy_max_tokens})


def run_synthesize(root: str, run_id: str, round_: int, suite: str, split: str, policy: ModelSpec,
                   world_model: ModelSpec, judge_model: ModelSpec, use_gold: bool, max_queries: Optional[int] = None,
                   samples: int = 1, temperature: float = 0.7, max_actions: int = SYNTH_MAX_ACTIONS,
                   concurrency: int = 2, miniwob_tasks: str = "easy", wm_max_tokens: int = 1024,
                   judge_max_tokens: int = 512, policy_max_tokens: int = DEFAULT_MAX_TOKENS,
                   n_tasks: Optional[int] = None) -> dict:
    """Synthetic trajectories for this round's failed queries (resumable); `n_tasks`: how many
    tasks real sampling chose (so the suite holds them all)."""
    store = Storage(root)
    identity = synthesize_identity(root, run_id, round_, suite, split, policy, world_model, judge_model, use_gold,
                                   max_queries, samples, temperature, max_actions, miniwob_tasks, wm_max_tokens,
                                   judge_max_tokens, policy_max_tokens)
    open_stage(store, run_id, round_, SYNTHESIZE, identity)
    trajs = store.read_table(run_id, round_, verdict_stage_for(SAMPLE, use_gold), table_name="trajectories").to_pylist()
    steps = store.read_table(run_id, round_, SAMPLE, table_name="steps").to_pylist()
    failed = failed_task_ids(trajs, steps, use_gold=use_gold)[:max_queries]
    result = {"failed_queries": len(failed), "trajectories": 0, "judged_successes": 0, "stop_reasons": {},
              "uri": store.uri(run_id, round_, SYNTHESIZE), "identity": identity.digest}
    if not failed:
        return result
    summary = asyncio.run(_synthesize(store, run_id, round_, suite, split, failed, policy, world_model, judge_model,
                                      samples, temperature, max_actions, concurrency, miniwob_tasks, wm_max_tokens,
                                      judge_max_tokens, policy_max_tokens, n_tasks, identity.digest))
    rows = store.read_table(run_id, round_, SYNTHESIZE, table_name="trajectories").to_pylist()
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r["stop_reason"]] = reasons.get(r["stop_reason"], 0) + 1
    result |= {k: v for k, v in sample_result(summary).items() if k in ("trajectories", "new", "steps",
                                                                         "valid_actions", "uri")}
    return result | {"judged_successes": sum(r["judge_verdict"] == 1 for r in rows), "stop_reasons": reasons}


async def _synthesize(store: Storage, run_id: str, round_: int, suite: str, split: str, failed: list[str],
                      policy: ModelSpec, world_model: ModelSpec, judge_model: ModelSpec, samples: int,
                      temperature: float, max_actions: int, concurrency: int, miniwob_tasks: str, wm_max_tokens: int,
                      judge_max_tokens: int, policy_max_tokens: int, n_tasks: Optional[int], identity: str):
    from infra.serving import serve_without_browser  # no browser in this stage: every core

    the_suite = open_suite(suite, miniwob_tasks, n_tasks)
    await the_suite.start()  # for the tasks' start URLs; no browser is opened
    try:
        by_id = {t.id: t for t in the_suite.tasks(split)}
        missing = [i for i in failed if i not in by_id]
        if missing:
            raise ValueError(f"failed tasks {missing[:3]} are not in {suite}/{split}: was the suite's task list changed?")
        cfg = SampleConfig(run_id=run_id, round=round_, stage=SYNTHESIZE, samples=samples, source="synthetic",
                           identity=identity)
        with ExitStack() as stack:
            policy_client = stack.enter_context(serve_without_browser(policy)).client()
            wm = WorldModel(stack.enter_context(serve_without_browser(world_model)).client(), max_tokens=wm_max_tokens)
            judge_client = stack.enter_context(serve_without_browser(judge_model)).client()
            return await synthesize(
                [by_id[i] for i in failed],
                lambda task, k: PolicyAgent(policy_client, temperature=temperature, max_tokens=policy_max_tokens,
                                            seed=episode_seed(task, k)),
                wm, store, cfg, concurrency=concurrency, judge_client=judge_client,
                judge_max_tokens=judge_max_tokens, max_actions=max_actions)
    finally:
        await the_suite.stop()
