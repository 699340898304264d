"""Stage `sample`: a policy (or the suite's scripted solver) x the real browser, on a suite's
split; also every evaluation (`eval`, `eval-wmla<d>`, `eval-<r>`)."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict
from typing import Callable, Optional

from evolver_core.agents.oracle import ExploringAgent, OracleAgent
from evolver_core.agents.policy import PolicyAgent
from evolver_core.config import LookaheadSpec, ModelSpec, SamplingConfig
from evolver_core.contracts.episode import episode_seed
from evolver_core.contracts.task import Suite, Task
from evolver_core.data.identity import StageIdentity, code_digest, folder_content_digest
from evolver_core.data.run_layout import open_stage
from evolver_core.data.stage_results import SampleSummary
from evolver_core.data.storage import Storage
from evolver_core.sampling.sampler import SampleConfig, sample_trajectories
from evolver_core.suites.registry import LIVE_SUITES, get_suite, select_tasks
from evolver_core.suites.taskfile import data_dir
from evolver_core.training.identity import model_identity

CODE = ("evolver_core.sampling.sampler", "evolver_core.agents.policy", "evolver_core.agents.oracle", "evolver_core.suites.registry",
        "evolver_core.stages.sample")
LOOKAHEAD_CODE = ("evolver_core.agents.lookahead", "evolver_core.world_model.model")  # imported only to look ahead


def open_suite(suite: str, miniwob_tasks: str, n_tasks: Optional[int]) -> Suite:
    """The suite, sized so `n_tasks` exist where the suite can make more (MiniWoB seeds)."""
    return get_suite(suite, miniwob_tasks=miniwob_tasks, min_tasks=n_tasks)


def chosen_tasks(the_suite: Suite, split: str, n_tasks: Optional[int]) -> list[Task]:
    return select_tasks(the_suite.tasks(split), n_tasks, where=f"{the_suite.name}/{split}")


def sample_identity(stage: str, split: str, n_tasks: Optional[int], *, policy: Optional[ModelSpec],
                    sampling: SamplingConfig, lookahead: Optional[LookaheadSpec] = None,
                    **_: object) -> StageIdentity:
    """What a sampling stage's trajectories depend on. The task selection is named by its
    parameters: the choice is deterministic given the suite's code (in the code digest) and,
    for live suites, their task files (digested here)."""
    params = {
        "split": split, "n_tasks": n_tasks,
        "task_data": folder_content_digest(data_dir()) if sampling.suite in LIVE_SUITES else None,
        **sampling.trajectory_params(with_policy=policy is not None),
        "policy": model_identity(policy),
        "lookahead": None if lookahead is None else {
            **asdict(lookahead), "world_model": model_identity(lookahead.world_model),
            "scorer": model_identity(lookahead.scorer)},
    }
    code = code_digest(*CODE, exclude=() if lookahead else LOOKAHEAD_CODE)
    return StageIdentity(stage=stage, code=code, params=params)


async def run_sample(root: str, run_id: str, round_: int, stage: str, split: str, n_tasks: Optional[int], *,
                     policy: Optional[ModelSpec], sampling: SamplingConfig, shard: int = 0,
                     lookahead: Optional[LookaheadSpec] = None, screenshots: bool = False,
                     on_done: Optional[Callable] = None) -> SampleSummary:
    """Serve the policy (None: the suite's scripted solver) and sample shard `shard` of
    `sampling.shards` of the tasks, played as the sampling section says; with `lookahead`,
    the policy picks each action by WMLA with the world model and scorer it names. The stage
    folder is opened with this identity first (another identity's results move aside)."""
    the_suite = open_suite(sampling.suite, sampling.miniwob_tasks, n_tasks)
    await the_suite.start()
    try:
        everything = chosen_tasks(the_suite, split, n_tasks)
        identity = sample_identity(stage, split, n_tasks, policy=policy, sampling=sampling, lookahead=lookahead)
        store = Storage(root)
        open_stage(store, run_id, round_, stage, identity)
        cfg = SampleConfig(run_id=run_id, round=round_, stage=stage, sampling=sampling, screenshots=screenshots,
                           identity=identity.digest)
        with ExitStack() as stack:
            make_agent = agent_factory(stack, the_suite, policy, sampling, lookahead)
            summary = await sample_trajectories(the_suite, everything[shard::sampling.shards], make_agent, store, cfg,
                                                on_done=on_done)
        summary.identity = identity.digest
        return summary
    finally:
        await the_suite.stop()


def agent_factory(stack: ExitStack, suite: Suite, policy: Optional[ModelSpec], sampling: SamplingConfig,
                  lookahead: Optional[LookaheadSpec]) -> Callable:
    """`make_agent(task, sample)` for sampling: the scripted solver (`policy` None; the
    samples `sampling.explores` explore around it), the policy, or the policy with
    look-ahead; the servers it needs are entered on `stack`."""
    from infra.serving import serve

    if policy is None:
        if lookahead is not None:
            raise ValueError("look-ahead needs a model policy, not the scripted solver")
        return lambda task, k: (ExploringAgent(suite, episode_seed(task, k)) if sampling.explores(k)
                                else OracleAgent(suite))
    client = stack.enter_context(serve(policy)).client()

    policy_agent = PolicyAgent.for_episodes(client, sampling)

    if lookahead is None:
        return policy_agent
    from evolver_core.agents.lookahead import LookaheadAgent
    from evolver_core.world_model.model import WorldModel

    world_model = WorldModel(stack.enter_context(serve(lookahead.world_model)).client(),
                             temperature=lookahead.wm_temperature, max_tokens=lookahead.wm_max_tokens,
                             form=lookahead.wm_form, thought=lookahead.wm_thought,
                             constrained=lookahead.wm_constrained,
                             outcome_probability=lookahead.score_by == "world_model")
    scorer = stack.enter_context(serve(lookahead.scorer)).client() if lookahead.score_by == "llm" else None
    return lambda task, k: LookaheadAgent(
        policy_agent(task, k), world_model, scorer, depth=lookahead.depth, candidates=lookahead.candidates,
        scorer_max_tokens=lookahead.scorer_max_tokens, candidate_temperature=lookahead.candidate_temperature,
        rollout_temperature=lookahead.rollout_temperature, score_by=lookahead.score_by, margin=lookahead.margin)
