"""Stage `sample`: a policy (or the suite's scripted solver) x the real browser, on a suite's
split; also every evaluation (`eval`, `eval-wmla<d>`, `eval-<r>`)."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Optional

from evolver_core.agents.lookahead import LookaheadSpec
from evolver_core.agents.oracle import ExploringAgent, OracleAgent
from evolver_core.agents.policy import PolicyAgent
from evolver_core.config import ModelSpec, SamplingConfig
from evolver_core.contracts.episode import episode_seed
from evolver_core.contracts.task import Suite, Task
from evolver_core.data.identity import StageIdentity, code_digest, folder_content_digest
from evolver_core.data.run_layout import open_stage
from evolver_core.data.stage_results import SampleSummary
from evolver_core.models.serving import ServeModel
from evolver_core.sampling.sampler import SampleConfig, sample_trajectories
from evolver_core.stages.inputs import StageInputs
from evolver_core.suites.registry import LIVE_SUITES, get_suite, select_tasks
from evolver_core.suites.taskfile import data_dir
from evolver_core.training.identity import model_identity

CODE = ("evolver_core.sampling.sampler", "evolver_core.agents.policy", "evolver_core.agents.oracle",
        "evolver_core.suites.registry", "evolver_core.stages.sample")
LOOKAHEAD_CODE = ("evolver_core.agents.lookahead", "evolver_core.world_model.model")  # run only to look ahead


def open_suite(suite: str, miniwob_tasks: str, n_tasks: Optional[int]) -> Suite:
    """The suite, sized so `n_tasks` exist where the suite can make more (MiniWoB seeds)."""
    return get_suite(suite, miniwob_tasks=miniwob_tasks, min_tasks=n_tasks)


def chosen_tasks(the_suite: Suite, split: str, n_tasks: Optional[int]) -> list[Task]:
    return select_tasks(the_suite.tasks(split), n_tasks, where=f"{the_suite.name}/{split}")


@dataclass(frozen=True)
class SampleInputs(StageInputs):
    """Stage `stage` of the round: `n_tasks` tasks of `split`, played by `policy` (None: the
    suite's scripted solver) as `sampling` says, shard `shard` of `sampling.shards`; with
    `lookahead`, each action picked by WMLA; `screenshots`: a PNG of each step's page."""

    stage: str
    split: str
    n_tasks: Optional[int]
    policy: Optional[ModelSpec]
    sampling: SamplingConfig
    shard: int = 0
    lookahead: Optional[LookaheadSpec] = None
    screenshots: bool = False


def sample_identity(inputs: SampleInputs) -> StageIdentity:
    """What a sampling stage's trajectories depend on. The task selection is named by its
    parameters: the choice is deterministic given the suite's code (in the code digest) and,
    for live suites, their task files (digested here)."""
    sampling, lookahead = inputs.sampling, inputs.lookahead
    params = {
        "split": inputs.split, "n_tasks": inputs.n_tasks,
        "task_data": folder_content_digest(data_dir()) if sampling.suite in LIVE_SUITES else None,
        **sampling.trajectory_params(with_policy=inputs.policy is not None),
        "policy": model_identity(inputs.policy),
        "lookahead": None if lookahead is None else {
            **lookahead.identity_params(), "world_model": model_identity(lookahead.world_model),
            "scorer": model_identity(lookahead.scorer)},
    }
    code = code_digest(*CODE, exclude=() if lookahead else LOOKAHEAD_CODE)
    return StageIdentity(stage=inputs.stage, code=code, params=params)


async def run_sample(inputs: SampleInputs, serve: ServeModel, on_done: Optional[Callable] = None) -> SampleSummary:
    """Serve the policy (`serve` starts the models' servers) and sample this shard of the tasks, as
    `inputs` says (`SampleInputs`); `on_done(episode)` as each ends. The stage folder is opened with
    this identity first (another identity's results move aside)."""
    sampling = inputs.sampling
    the_suite = open_suite(sampling.suite, sampling.miniwob_tasks, inputs.n_tasks)
    await the_suite.start()
    try:
        everything = chosen_tasks(the_suite, inputs.split, inputs.n_tasks)
        identity = sample_identity(inputs)
        store = inputs.store()
        open_stage(store, inputs.run_id, inputs.round, inputs.stage, identity)
        cfg = SampleConfig(run_id=inputs.run_id, round=inputs.round, stage=inputs.stage, sampling=sampling,
                           screenshots=inputs.screenshots, identity=identity.digest)
        with ExitStack() as stack:
            make_agent = agent_factory(stack, the_suite, inputs.policy, sampling, inputs.lookahead, serve)
            summary = await sample_trajectories(the_suite, everything[inputs.shard::sampling.shards], make_agent,
                                                store, cfg, on_done=on_done)
        summary.identity = identity.digest
        return summary
    finally:
        await the_suite.stop()


def agent_factory(stack: ExitStack, suite: Suite, policy: Optional[ModelSpec], sampling: SamplingConfig,
                  lookahead: Optional[LookaheadSpec], serve: ServeModel) -> Callable:
    """`make_agent(task, sample)` for sampling: the scripted solver (`policy` None; the
    samples `sampling.explores` explore around it), the policy, or the policy with
    look-ahead (`LookaheadSpec.make_agent`); the servers it needs (from `serve`) are entered on `stack`."""
    if policy is None:
        if lookahead is not None:
            raise ValueError("look-ahead needs a model policy, not the scripted solver")
        return lambda task, k: (ExploringAgent(suite, episode_seed(task, k)) if sampling.explores(k)
                                else OracleAgent(suite))
    client = stack.enter_context(serve(policy)).client()

    policy_agent = PolicyAgent.for_episodes(client, sampling)

    if lookahead is None:
        return policy_agent
    world_model = stack.enter_context(serve(lookahead.world_model)).client()
    scorer = stack.enter_context(serve(lookahead.scorer)).client() if lookahead.scored_by_llm else None
    return lambda task, k: lookahead.make_agent(policy_agent(task, k), world_model, scorer)
