"""Stage `synthesize`: the world model as a virtual web server (paper 3.3).

For the queries real sampling failed (none of their trajectories kept by rejection
sampling), the policy and the world model alternate from the query's real first page (at
most `synth_max_actions` policy actions, `evolver_core.world_model.synthesis`); each synthetic
trajectory is judged by r̂ as it ends, and with the `replay` filter its actions are replayed
on the real page (`world_model.replay`: a browser is opened for that alone). It is stored
under `round=<i>/synthesize/` with ``source = "synthetic"``, so `to_sft` converts it like a
real one (by the judge's verdict or the replay's reward, `synth_filter`) and the viewer shows
the world model's predicted pages.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, replace
from functools import partial
from typing import Optional

from evolver_core.agents.policy import PolicyAgent
from evolver_core.browser.env import launch_browser
from evolver_core.config import JudgeConfig, ModelSpec, SamplingConfig, WorldModelConfig
from evolver_core.contracts.task import Suite
from evolver_core.data.episodes import read_episodes
from evolver_core.data.identity import StageIdentity, code_digest
from evolver_core.data.run_layout import SAMPLE, SYNTHESIZE, open_stage, stage_digest
from evolver_core.data.stage_results import SynthesisSummary
from evolver_core.data.storage import Storage
from evolver_core.judge.judge import agreement
from evolver_core.models.serving import ServeModel
from evolver_core.sampling.sampler import SampleConfig
from evolver_core.stages.inputs import StageInputs
from evolver_core.stages.sample import open_suite
from evolver_core.stages.sft import verdict_stage_for
from evolver_core.training.identity import model_identity
from evolver_core.world_model.model import WorldModel
from evolver_core.world_model.replay import one_at_a_time
from evolver_core.world_model.synthesis import Replay, RealStart, failed_task_ids, real_starts, synthesize

# Synthetic trajectory k of a query starts on the page its real trajectory k started on: with
# the same seed the policy would repeat the reply real sampling drew there.
SYNTHETIC_SEEDS = 1 << 20
CODE = ("evolver_core.world_model.synthesis", "evolver_core.world_model.replay", "evolver_core.stages.synthesize")


@dataclass(frozen=True)
class SynthesizeInputs(StageInputs):
    """Synthetic trajectories for the round's failed queries of `split`: `policy` acting on
    the pages `world_model` predicts, judged by `judge_model`; how many and how long from the
    world-model section `wm`, the episodes as `sampling` plays them, the failed queries read
    as `judge_config` filters; `n_tasks`: how many tasks real sampling chose (so the suite
    holds them all)."""

    split: str
    policy: ModelSpec
    world_model: ModelSpec
    judge_model: ModelSpec
    sampling: SamplingConfig
    wm: WorldModelConfig
    judge_config: JudgeConfig
    n_tasks: Optional[int] = None

    @property
    def use_gold(self) -> bool:
        return self.judge_config.filter == "gold"


def synthesize_identity(inputs: SynthesizeInputs) -> StageIdentity:
    store, wm = inputs.store(), inputs.wm
    return StageIdentity(stage=SYNTHESIZE, code=code_digest(*CODE), params={
        "source": stage_digest(store, inputs.run_id, inputs.round, SAMPLE),
        "verdicts": stage_digest(store, inputs.run_id, inputs.round, verdict_stage_for(SAMPLE, inputs.use_gold)),
        "split": inputs.split, **inputs.sampling.trajectory_params(with_policy=True), "use_gold": inputs.use_gold,
        "policy": model_identity(inputs.policy), "world_model": model_identity(inputs.world_model),
        "judge": model_identity(inputs.judge_model), "max_queries": wm.synth_queries,
        "max_actions": wm.synth_max_actions, "synth_samples": wm.synth_samples, "wm": wm.prediction_params(),
        "judge_max_tokens": inputs.judge_config.max_tokens, "filter": wm.synth_filter})


def run_synthesize(inputs: SynthesizeInputs, serve: ServeModel) -> SynthesisSummary:
    """Synthetic trajectories for this round's failed queries (resumable), as `inputs` says;
    `serve` serves the three models."""
    store, wm, run_id, round_ = inputs.store(), inputs.wm, inputs.run_id, inputs.round
    identity = synthesize_identity(inputs)
    open_stage(store, run_id, round_, SYNTHESIZE, identity)
    trajs, steps = read_episodes(store, run_id, round_, SAMPLE, verdicts=verdict_stage_for(SAMPLE, inputs.use_gold))
    starts = real_starts(trajs, steps)  # judged copies keep each trajectory's query and task
    failed = [t for t in failed_task_ids(trajs, steps, use_gold=inputs.use_gold) if t in starts][:wm.synth_queries]
    uri = store.uri(run_id, round_, SYNTHESIZE)
    if not failed:
        return SynthesisSummary(failed_queries=0, trajectories=0, judged_successes=0, replay_successes=None,
                                stop_reasons={}, terminal=0, filter=wm.synth_filter, judge_agreement=None, uri=uri,
                                identity=identity.digest)
    summary = asyncio.run(_synthesize(inputs, store, {i: starts[i] for i in failed}, identity.digest, serve))
    rows = store.read_table(run_id, round_, SYNTHESIZE, table_name="trajectories").to_pylist()
    reasons = dict(Counter(r["stop_reason"] for r in rows))
    replayed = wm.synth_filter == "replay"
    return SynthesisSummary(
        failed_queries=len(failed), trajectories=summary.trajectories,
        judged_successes=sum(r["judge_verdict"] == 1 for r in rows),
        replay_successes=sum(r["gold_reward"] is not None and r["gold_reward"] >= 1 for r in rows) if replayed
        else None,
        stop_reasons=reasons, terminal=reasons.get("done", 0), filter=wm.synth_filter,
        judge_agreement=agreement([r["judge_verdict"] for r in rows], [r["gold_reward"] for r in rows])
        if replayed else None,
        uri=uri, identity=identity.digest, new=summary.new, steps=summary.steps,
        valid_actions=summary.valid_actions)


async def _synthesize(inputs: SynthesizeInputs, store: Storage, starts: dict[str, RealStart], identity: str,
                      serve: ServeModel):
    serve_without_browser = partial(serve, browser=False)  # no browser for the models: every core

    sampling, wm, split = inputs.sampling, inputs.wm, inputs.split
    the_suite = open_suite(sampling.suite, sampling.miniwob_tasks, inputs.n_tasks)
    await the_suite.start()  # for the tasks' start URLs (and pages to replay on)
    try:
        by_id = {t.id: t for t in the_suite.tasks(split)}
        missing = [i for i in starts if i not in by_id]
        if missing:
            raise ValueError(f"failed tasks {missing[:3]} are not in {sampling.suite}/{split}: "
                             "was the suite's task list changed?")
        tasks = [by_id[i].with_(query=start.query) for i, start in starts.items()]
        cfg = SampleConfig(run_id=inputs.run_id, round=inputs.round, stage=SYNTHESIZE,
                           sampling=replace(sampling, samples=wm.synth_samples), source="synthetic", identity=identity)
        async with AsyncExitStack() as browsing:
            replay = await _replayer(browsing, the_suite, cfg) if wm.synth_filter == "replay" else None
            with ExitStack() as stack:
                policy_client = stack.enter_context(serve_without_browser(inputs.policy)).client()
                model = WorldModel(stack.enter_context(serve_without_browser(inputs.world_model)).client(), wm)
                judge_client = stack.enter_context(serve_without_browser(inputs.judge_model)).client()
                summary = await synthesize(
                    tasks, {i: start.first_page for i, start in starts.items()},
                    PolicyAgent.for_episodes(policy_client, sampling, seed_offset=SYNTHETIC_SEEDS), model, store, cfg,
                    judge_client=judge_client,
                    judge_max_tokens=inputs.judge_config.max_tokens, max_actions=wm.synth_max_actions, replay=replay)
                # the step rows hold the policy's tokens only, not the world model's or the judge's
                inputs.record_calls(SYNTHESIZE, policy_client, model.client, judge_client)
                return summary
    finally:
        await the_suite.stop()


async def _replayer(browsing: AsyncExitStack, suite: Suite, cfg: SampleConfig) -> Replay:
    """`replay(episode)` on one browser page of `suite` (`world_model.replay`)."""
    browser = await browsing.enter_async_context(launch_browser())
    env = await browser.new_env(suite, cfg.env)
    browsing.push_async_callback(env.close)
    return one_at_a_time(env)
