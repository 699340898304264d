"""Evaluate a policy on a suite's split: repeated runs (the paper runs twice and averages),
per-task results kept as trajectories, success rate with a 95% Wilson interval over all
episodes.

Success comes from the suite's programmatic evaluator (gold reward) where it has one; the
episodes it cannot rate (WebVoyager has no gold answers) are rated by the judge r̂ when
`judge` names a model, and stay unrated otherwise (`success_rate` None, `unrated` counts
them). `lookahead_depth` d > 0 picks every action by world-model look-ahead: `world_model`
simulates d steps per candidate and `scorer` (default: `judge`, else `ModelSpec`'s default
model, the embedded SmolLM2) rates the simulations, with the look-ahead, world-model and
judge sections' defaults (`LookaheadSpec`), or those of `preset`: a world model must be
asked in the reply form it was trained on (the cpu preset's writes changes without a
rationale), and that preset's scorer may be the world model itself (then `scorer` is not
asked). All models are served by the policy's backend.

Without `run_id`, the trajectories go to a run named after what is evaluated:
``eval-<policy>-<digest>``, the digest of the evaluation's identity (policy and world-model
content, code, suite, split, task selection, sampling). So evaluating another policy, an
adapter retrained in place, or the same policy on other tasks never meets an earlier
evaluation's episodes, and evaluating the same thing again resumes (or is a cache hit).
The result names its `run` (for `webevolver view`) and its `identity`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from prefect import flow
from prefect.artifacts import create_table_artifact

from evolver_core.agents.lookahead import LookaheadSpec
from evolver_core.config import CallLimits, EvaluationConfig, ModelSpec, SamplingConfig
from evolver_core.data.identity import fingerprint
from evolver_core.data.run_layout import judge_stage_for, repeat_stage
from evolver_core.data.storage import safe_key
from evolver_core.llm import use_limits
from evolver_core.presets import PresetName, get_preset
from evolver_core.reporting.metrics import wilson_interval
from evolver_core.settings import storage_root
from evolver_core.stages.judge import JudgeInputs
from evolver_core.stages.sample import SampleInputs, sample_identity
from evolver_core.training.identity import model_identity
from infra.serving import serving_session
from flows.holding import holding_run
from tasks.common import artifact_key, results_storage
from tasks.judge import judge
from tasks.sample import sample


@flow(name="evaluate")
def evaluate(split: str = "test", policy: str = "oracle", tasks: Optional[int] = EvaluationConfig.test_tasks,
             repeats: int = 1, run_id: Optional[str] = None, storage: Optional[str] = None,
             backend: str = ModelSpec.backend,
             base_url: Optional[str] = None, sampling: Optional[SamplingConfig] = None, lookahead_depth: int = 0,
             world_model: Optional[str] = None, scorer: Optional[str] = None, judge_model: Optional[str] = None,
             screenshots: bool = False, limits: Optional[CallLimits] = None,
             preset: Optional[PresetName] = None) -> dict:
    """`policy`: "oracle" (the suites' scripted solvers), or a model as `webevolver sample --model` takes it;
    `world_model`, `scorer`, `judge_model` likewise (see the module docstring). `sampling`
    (default: the section's defaults) names the suite and plays the episodes: greedily with
    one repeat, at its temperature with several; `limits` bound what a model call and an
    episode may cost; `preset` names the sections look-ahead takes (module docstring)."""
    # vLLM servers shared by policy, world model, scorer and judge (one per base model where adapters hot-load).
    with serving_session(), use_limits(limits or CallLimits()):
        return _evaluate(split, policy, tasks, repeats, run_id, storage, backend, base_url,
                         sampling or SamplingConfig(), lookahead_depth, world_model, scorer, judge_model, screenshots,
                         preset)


def lookahead_spec(world_model: ModelSpec, scorer: ModelSpec, depth: int, preset: Optional[str]) -> LookaheadSpec:
    """Look-ahead with `preset`'s look-ahead, world-model and judge sections (none: their
    defaults)."""
    if preset is None:
        return LookaheadSpec(world_model, scorer, depth)
    chosen = get_preset(preset)
    return LookaheadSpec(world_model, scorer, depth, chosen.lookahead, chosen.world_model, chosen.judge)


def _evaluate(split: str, policy: str, tasks: Optional[int], repeats: int, run_id: Optional[str],
              storage: Optional[str], backend: str, base_url: Optional[str], sampling: SamplingConfig,
              lookahead_depth: int, world_model: Optional[str], scorer: Optional[str], judge_model: Optional[str],
              screenshots: bool, preset: Optional[str]) -> dict:
    root = storage_root(storage)
    rs = results_storage(root)
    sample_t, judge_t = sample.with_options(result_storage=rs), judge.with_options(result_storage=rs)
    suite = sampling.suite

    def spec(model: str) -> ModelSpec:
        return ModelSpec(model=model, backend=backend, base_url=base_url)

    lookahead = None
    if lookahead_depth:
        if world_model is None:
            raise ValueError("look-ahead needs a world model: give --world-model (e.g. a run's finetune_wm adapter)")
        lookahead = lookahead_spec(spec(world_model), spec(scorer or judge_model or ModelSpec.model), lookahead_depth,
                                   preset)
    policy_spec = None if policy == "oracle" else spec(policy)
    episodes = sampling.greedy_once() if repeats == 1 else replace(sampling, samples=1, shards=1)

    def repeat(r: int, run: str) -> SampleInputs:
        return SampleInputs(root, run, 0, repeat_stage(r), split, tasks, policy_spec, episodes, lookahead=lookahead,
                            screenshots=screenshots)

    # The run is named after the identities, which do not depend on it.
    identity = fingerprint({"repeats": [sample_identity(repeat(r, "")).to_json() for r in range(repeats)],
                            "judge": model_identity(spec(judge_model)) if judge_model else None})
    run_id = run_id or f"eval-{safe_key(policy.rstrip('/').rsplit('/', 1)[-1])[:40]}-{identity[:10]}"
    with holding_run(run_id, storage):
        runs = [sample_t(repeat(r, run_id)) for r in range(repeats)]
        solved, rated = sum(r.solved for r in runs), sum(r.with_gold for r in runs)
        judged_successes = judged_rated = 0
        if judge_model is not None:
            for r, run in enumerate(runs):
                if run.with_gold < run.trajectories:
                    verdicts = judge_t(JudgeInputs(root, run_id, 0, spec(judge_model), source_stage=repeat_stage(r),
                                                   stage=judge_stage_for(repeat_stage(r))), wait_for=[run])
                    judged_rated += verdicts.without_gold
                    judged_successes += verdicts.successes_without_gold
    n, wins = rated + judged_rated, solved + judged_successes
    low, high = wilson_interval(wins, n)
    episodes = sum(r.trajectories for r in runs)
    result = {"run": run_id, "identity": identity, "suite": suite, "split": split, "policy": policy,
              "lookahead_depth": lookahead_depth, "errors": sum(r.error_episodes for r in runs),
              "tasks": runs[0].trajectories, "repeats": repeats, "episodes": episodes,
              "success_rate": wins / n if n else None, "ci_low": low, "ci_high": high,
              "rated_by_gold": rated, "rated_by_judge": judged_rated, "unrated": episodes - n,
              "action_validity": sum(r.valid_actions for r in runs) / max(1, sum(r.steps for r in runs)),
              "storage": runs[0].uri.rsplit("/round=", 1)[0]}
    create_table_artifact([result], key=artifact_key(run_id, "evaluate", suite, split),
                          description=f"evaluation of {policy} on {suite}/{split}")
    return result
