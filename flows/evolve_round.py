"""One evolution round of WebEvolver (paper section 3, Figure 1), as the stages run:

    real trajectories   round 0: scripted demonstrations (`round0: demos`) or the base model
                        (`round0: self`); round i: policy M_{i-1}, k samples
        -> judge (r̂) -> to_sft (rejection sampling)
    world model         wm_data (transitions of successful AND failed trajectories, distilled
                        rationales) -> finetune_wm: M_w on rounds 0..i
    synthetic           synthesize: for the queries that failed, M_{i-1} acts from the query's
                        real first page on the pages M_w predicts until M_w says the episode
                        ends (<= synth_max_actions), kept by r̂ or by replay on the real page
                        (`world_model.synth_filter`) -> to_sft
    policy              finetune: M_i, the WebEvolver policy, a fresh LoRA on the real + synthetic
                        SFT data of rounds 0..i; finetune_self (round >= 1): the self-improve arm,
                        the same on its own real data alone (the paper's comparison); from round 2
                        it samples with its own previous policy: sample-self -> its judge -> sft-self
    evaluation          eval (M_i on the test split), eval-self (the self-improve arm on the same
                        tasks), eval-wmla<d> (M_i with look-ahead through M_w, for each depth d;
                        plain success on the same tasks is reported beside it), eval-gen (M_i on
                        MiniWoB tasks never trained on), fidelity (M_w's STR / Sim. / O/A on the
                        real transitions of eval: test tasks it never trained on)

Round 0 is the warm start (imitation learning, as OpenWebVoyager does): a 135M model rarely
succeeds zero-shot, so the suites' scripted solvers play the demonstration tasks and their
gold-solved trajectories are the first SFT data; it has no synthesis (no failed policy
queries). Synthesis uses M_{i-1}, the policy whose queries failed, with the newest M_w (the
paper pairs its second world model with the better first policy); so each round trains two
adapters (M_w, M_i), not three. Synthetic trajectories are kept by `world_model.synth_filter`
(r̂, or the real page's reward for their replayed actions), whatever the preset's `filter`.

The flow returns the round's summary (`evolver_core.reporting.summary.RoundSummary`: what the
world model did, both arms' success, and a warning for each of its parts that came out empty)
and publishes it as artifacts.

Each policy arm is its own chain (`run_layout.PolicyArm`): the WebEvolver policy M_i samples
round i+1 into `sample` (whose data the world model also learns from), the self-improve
policy into `sample-self`, judged and filtered alike, so the self-improve arm is the paper's
self-evolving baseline. Rounds 0 and 1 are shared: the demonstrations, and round 1's sample,
which both arms would draw from the same round-0 policy. The summary counts the real episodes
that fed each arm (`real_episodes`) and warns when they differ.

Every stage is a cached task (`tasks/`) keyed by its identity (`evolver_core.data.identity`):
rerunning a finished round is all cache hits; a round killed inside a stage resumes that
stage (sampling and synthesis skip stored trajectories); a stage whose code, models or
upstream data changed reruns, and its old results are moved aside, never mixed in. Tasks
are called directly and ordered after the stages they read by `wait_for=` (which also draws
the flow run's graph in the UI); upstream results never enter a cache key (`tasks.common`).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator, Optional

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import wait

from evolver_core.agents.lookahead import LookaheadSpec
from evolver_core.benchmarks import model_round_cost
from evolver_core.config import ModelSpec, SamplingConfig
from evolver_core.data.run_layout import (EVAL, EVAL_GEN, EVAL_PLAIN, FIDELITY, FINETUNE_WM, SAMPLE, SELF_IMPROVE,
                                          SHARED_ROUNDS, SFT, SYNTHESIZE, WEBEVOLVER, WM_SFT, judge_stage_for,
                                          lookahead_stage, next_round, previous_adapter, training_data)
from evolver_core.data.stage_results import SampleSummary
from evolver_core.data.stage_work import record_seconds
from evolver_core.data.storage import Storage
from evolver_core.llm import use_limits
from evolver_core.models.refs import resolve_model
from evolver_core.presets import Preset, PresetChoice, resolve_preset
from evolver_core.reporting.formats import by_arm, pct, pct_ci, points, points_ci
from evolver_core.reporting.metrics import PairedDifference
from evolver_core.reporting.summary import RoundStages, RoundSummary, round_summary
from evolver_core.settings import download_cache, storage_root
from evolver_core.stages.judge import JudgeInputs
from evolver_core.stages.sample import SampleInputs
from evolver_core.stages.sft import ToSftInputs
from evolver_core.stages.synthesize import SynthesizeInputs
from evolver_core.stages.train import FinetuneInputs
from evolver_core.stages.world_model import FidelityInputs, WmDataInputs
from evolver_core.suites.registry import split_seeds
from flows.holding import holding_run
from infra.serving import resolve_backend, serving_session
from tasks.common import artifact_key, results_storage
from tasks.judge import judge
from tasks.sample import sample
from tasks.synthesize import synthesize
from tasks.train import finetune, to_sft
from tasks.world_model import fidelity, wm_data


def adapter_spec(p: Preset, root: str, adapter_uri: Optional[str]) -> ModelSpec:
    """The preset's base model with a stored LoRA adapter (a policy or the world model), fetched locally."""
    adapter = str(Storage(root).local_dir(adapter_uri, download_cache())) if adapter_uri else None
    return ModelSpec(model=p.model, backend=p.backend, adapter=adapter)


def run_preset(preset: PresetChoice, overrides: Optional[dict] = None) -> Preset:
    """The run's preset (`resolve_preset`: a name's or the one given, then the `overrides`,
    validated; None sets a field to None), its backend resolved ("auto": vLLM when
    installed), so identities name the real one."""
    p = resolve_preset(preset, overrides)
    return replace(p, backend=resolve_backend(p.backend))


class StageClock:
    """Wall time of each stage of the round (a cache hit takes about nothing). Each stage that
    ends well also stores its seconds in its folder, once per stage identity (`data.stage_work`):
    the round's cost report keeps the seconds of the run that did the work."""

    FOLDERS = {"to_sft": SFT}  # stages timed under another name than their folder's

    def __init__(self, store: Storage, run_id: str, round_: int) -> None:
        self.seconds: dict[str, float] = {}
        self.store, self.run_id, self.round = store, run_id, round_

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - t0, 1)
        # reached only when the stage did not raise
        record_seconds(self.store, self.run_id, self.round, self.FOLDERS.get(name, name), self.seconds[name])


@flow(name="evolve-round")
def evolve_round(run_id: str = "nightly", round: Optional[int] = None, preset: PresetChoice = "smoke",
                 storage: Optional[str] = None, adapter: Optional[str] = None,
                 overrides: Optional[dict] = None) -> RoundSummary:
    """Run round `round` of run `run_id`; None: the next one (the first without its trained
    policies), so a nightly schedule advances one round a night. `adapter` overrides the
    previous round's WebEvolver policy (the one that samples `sample`). `preset`: a preset's
    name (smoke, cpu, gpu) or a whole preset (the Prefect UI shows its form; the CLI and
    `evolve` pass the one they resolved); `overrides` then changes single fields by path or
    name (e.g. {"train_tasks": 50}, {"synth_queries": None} for all failed queries). vLLM
    servers are kept for the whole round (`infra.serving.serving_session`: on GPUs one per
    base model, adapters hot-loaded; on CPU one per merged adapter); how long every server
    start took is in the summary (`server_starts`) and an artifact."""
    p = run_preset(preset, overrides)
    with holding_run(run_id, storage), serving_session(tensor_parallel_size=p.tensor_parallel_size) as session, \
            use_limits(p.limits):
        summary = replace(_round(p, run_id, round, storage, adapter), server_starts=session.start_times())
    # measured once the round's servers are stopped: the limits of a quiet machine
    summary = replace(summary, cost=model_round_cost(Storage(storage_root(storage)), run_id, summary.round,
                                                     resolve_model(p.model).base))
    _report(summary)
    return summary


def _round(p: Preset, run_id: str, round: Optional[int], storage: Optional[str],
           adapter: Optional[str]) -> RoundSummary:
    root = storage_root(storage)
    store = Storage(root)
    if round is None:
        round = next_round(store, run_id)
        get_run_logger().info(f"run {run_id!r}: rounds 0..{round - 1} are trained; running round {round}")
    # Results persist beside the run's data, and the storage root is a parameter: result
    # storage is the one option Prefect takes only on the task object, hence `with_options`.
    rs = results_storage(root)
    sample_t, judge_t, to_sft_t, finetune_t, wm_data_t, synthesize_t, fidelity_t = (
        t.with_options(result_storage=rs) for t in (sample, judge, to_sft, finetune, wm_data, synthesize, fidelity))
    base = ModelSpec(model=p.model, backend=p.backend)
    judge_spec = ModelSpec(model=p.judge.model or p.model, backend=p.backend)
    use_gold = p.judge.filter == "gold"
    greedy = p.sampling.greedy_once()  # evaluations: one greedy episode per task
    clock = StageClock(store, run_id, round)

    # Real trajectories: demonstrations or the base model (round 0), else the previous WebEvolver policy M_{i-1}.
    with clock(SAMPLE):
        if round == 0 and p.sampling.round0 == "demos":
            sampler, n_tasks = None, p.sampling.demo_tasks
            sampled = [sample_t(SampleInputs(root, run_id, 0, SAMPLE, "train", n_tasks, None,
                                             p.sampling.demonstrations()))]
        else:
            sampler = base if round == 0 else adapter_spec(p, root, adapter or previous_adapter(store, run_id, round))
            n_tasks = p.sampling.train_tasks
            sampled = _sample_shards(sample_t, root, run_id, round, SAMPLE, n_tasks, sampler, p.sampling)
    judged = None
    if sampler is not None:
        with clock("judge"):
            judged = judge_t(JudgeInputs(root, run_id, round, judge_spec, p.judge), wait_for=sampled)
    with clock("to_sft"):
        real_sft = to_sft_t(ToSftInputs(root, run_id, round, SAMPLE, use_gold=use_gold or sampler is None),
                            wait_for=[*sampled, judged] if judged else sampled)

    # The world model M_w on the transitions of rounds 0..i, successful or not.
    with clock("wm_data"):
        wm = wm_data_t(WmDataInputs(root, run_id, round, base, p.world_model), wait_for=sampled)
    with clock(FINETUNE_WM):
        wm_trained = finetune_t(FinetuneInputs(root, run_id, round, p.model, p.world_model.training,
                                               data=training_data(round, (WM_SFT,)), out_stage=FINETUNE_WM),
                                wait_for=[wm])
    world_model = adapter_spec(p, root, wm_trained.adapter_uri)

    # Synthetic trajectories for the failed queries: M_{i-1} acting on M_w's pages, judged by r̂.
    synth = synth_sft = None
    if sampler is not None and round > 0:
        with clock(SYNTHESIZE):
            synth = synthesize_t(SynthesizeInputs(root, run_id, round, "train", sampler, world_model, judge_spec,
                                                  p.sampling, p.world_model, p.judge, n_tasks=n_tasks),
                                 wait_for=[*sampled, judged, wm_trained])
            synth_sft = to_sft_t(ToSftInputs(root, run_id, round, SYNTHESIZE,
                                             use_gold=p.world_model.synth_filter == "replay"), wait_for=[synth])

    # The policies: WebEvolver (real + synthetic of rounds 0..i) and, from round 1, self-improve (its own
    # real data only: from round 2 sampled by its own previous policy, judged and filtered alike).
    with clock(WEBEVOLVER.finetune):
        trained = finetune_t(FinetuneInputs(root, run_id, round, p.model, p.training,
                                            data=WEBEVOLVER.training_data(round), out_stage=WEBEVOLVER.finetune),
                             wait_for=[real_sft, synth_sft] if synth_sft else [real_sft])
    policy = adapter_spec(p, root, trained.adapter_uri)
    self_trained = None
    if round > 0 and p.self_improve:
        self_sft = real_sft
        if round >= SHARED_ROUNDS:
            own = SELF_IMPROVE.sample
            self_sampler = adapter_spec(p, root, previous_adapter(store, run_id, round, SELF_IMPROVE.finetune))
            with clock(own):
                sampled_self = _sample_shards(sample_t, root, run_id, round, own, n_tasks, self_sampler, p.sampling)
            with clock(judge_stage_for(own)):
                judged_self = judge_t(JudgeInputs(root, run_id, round, judge_spec, p.judge, source_stage=own),
                                      wait_for=sampled_self)
            with clock(SELF_IMPROVE.sft):
                self_sft = to_sft_t(ToSftInputs(root, run_id, round, own, use_gold=use_gold),
                                    wait_for=[*sampled_self, judged_self])
        with clock(SELF_IMPROVE.finetune):
            self_trained = finetune_t(FinetuneInputs(root, run_id, round, p.model, p.training,
                                                     data=SELF_IMPROVE.training_data(round),
                                                     out_stage=SELF_IMPROVE.finetune), wait_for=[self_sft])

    # Evaluation: both arms on the same test tasks, look-ahead, generalization, M_w's fidelity.
    test_tasks = p.evaluation.test_tasks
    with clock(EVAL):
        evaluated = sample_t(SampleInputs(root, run_id, round, EVAL, "test", test_tasks, policy, greedy),
                             wait_for=[trained])
    evaluated_self = None
    if self_trained is not None:
        with clock(SELF_IMPROVE.eval):
            evaluated_self = sample_t(SampleInputs(root, run_id, round, SELF_IMPROVE.eval, "test", test_tasks,
                                                   adapter_spec(p, root, self_trained.adapter_uri), greedy),
                                      wait_for=[self_trained])
    # Look-ahead, each depth paired with plain decoding on the same episodes: eval's, or its
    # own tasks (`lookahead.headroom_tasks`) with eval-plain beside it.
    la_tasks = p.lookahead.tasks or test_tasks
    la_sampling = greedy if p.lookahead.headroom_tasks is None else greedy.greedy_once(
        miniwob_tasks=p.lookahead.headroom_tasks)
    plain_stage = EVAL
    if p.lookahead.depths and p.lookahead.headroom_tasks is not None:
        plain_stage = EVAL_PLAIN
        with clock(EVAL_PLAIN):
            sample_t(SampleInputs(root, run_id, round, EVAL_PLAIN, "test", la_tasks, policy, la_sampling),
                     wait_for=[trained])
    lookahead = {}
    for d in p.lookahead.depths:
        with clock(lookahead_stage(d)):
            lookahead[str(d)] = sample_t(
                SampleInputs(root, run_id, round, lookahead_stage(d), "test", la_tasks, policy, la_sampling,
                             lookahead=LookaheadSpec(world_model, judge_spec, d, p.lookahead, p.world_model, p.judge)),
                wait_for=[trained, wm_trained])
    generalization = None
    if p.evaluation.generalization_tasks and p.evaluation.generalization_test_tasks:
        with clock(EVAL_GEN):
            generalization = sample_t(SampleInputs(
                root, run_id, round, EVAL_GEN, "test", p.evaluation.generalization_test_tasks, policy,
                p.sampling.greedy_once(miniwob_tasks=p.evaluation.generalization_tasks)), wait_for=[trained])
    with clock(FIDELITY):
        fid = fidelity_t(FidelityInputs(root, run_id, round, world_model, judge_spec, p.world_model, source_stage=EVAL),
                         wait_for=[evaluated, wm_trained])

    stages = RoundStages(sampled=sampled, judged=judged, real_sft=real_sft, wm_data=wm, wm_trained=wm_trained,
                         synthesized=synth, synth_sft=synth_sft, trained=trained, self_trained=self_trained,
                         evaluated=evaluated, evaluated_self=evaluated_self, lookahead=lookahead,
                         generalization=generalization, fidelity=fid)
    summary = round_summary(store, run_id, round, preset=p.name, suite=p.sampling.suite,
                            split_seeds=split_seeds(p.sampling.suite), training=p.training, wm=p.world_model,
                            stages=stages, plain_stage=plain_stage, stage_seconds=clock.seconds)
    for line in summary.warnings:
        get_run_logger().warning(f"round {round}: {line}")
    return summary


def _sample_shards(sample_t, root: str, run_id: str, round_: int, stage: str, n_tasks: Optional[int],
                   policy: ModelSpec, sampling: SamplingConfig) -> list[SampleSummary]:
    """A policy's episodes on the train tasks into `stage`, its shards side by side."""
    futures = [sample_t.submit(SampleInputs(root, run_id, round_, stage, "train", n_tasks, policy, sampling, shard=i))
               for i in range(sampling.shards)]
    wait(futures)
    return [f.result() for f in futures]


def _paired(pair: Optional[PairedDifference]) -> str:
    if not pair:
        return "n/a"
    return f"{points(pair.difference)} points ({points_ci(pair.ci)}), {pair.episodes} episodes"


def _report(s: RoundSummary) -> None:
    syn, fid, copy = s.synthetic, s.fidelity, s.fidelity.copy
    create_table_artifact([{k: v for k, v in s.to_json().items() if not isinstance(v, (dict, list, tuple))}],
                          key=artifact_key(s.run, f"r{s.round}", "summary"),
                          description=f"round {s.round} summary")
    create_table_artifact([{"stage": k, "seconds": v} for k, v in s.stage_seconds.items()],
                          key=artifact_key(s.run, f"r{s.round}", "timings"),
                          description=f"round {s.round}: wall time per stage (cache hits ~0 s)")
    if s.server_starts:
        create_table_artifact(s.server_starts, key=artifact_key(s.run, f"r{s.round}", "server-starts"),
                              description=f"round {s.round}: model server starts and how long each took")
    warnings = "".join(f"> **Warning:** {w}\n\n" for w in s.warnings)
    create_markdown_artifact(
        f"## Round {s.round} of `{s.run}` ({s.preset}, {s.suite})\n\n{warnings}"
        f"| | |\n|---|---|\n| real trajectories sampled | {s.real_trajectories} |\n"
        f"| kept for training | {s.kept_trajectories} |\n"
        f"| synthetic trajectories: tried (failed queries) / terminal / kept ({syn.filter}) | {syn.tried} "
        f"({syn.failed_queries}) / {syn.terminal} / {syn.kept} |\n"
        f"| the two arms trained on the same data | {s.arms_identical} |\n"
        f"| real episodes that fed each arm's data | {by_arm(s.real_episodes)} |\n"
        f"| training examples (epochs) of each arm | "
        f"{by_arm({a: f'{t.examples} ({t.epochs:g} epochs)' for a, t in s.training.items()})} |\n"
        f"| SFT examples (rounds 0..{s.round}) | {s.sft_examples} |\n"
        f"| test success, WebEvolver policy (95% CI) | {pct_ci(s.success_rate, s.success_ci)} |\n"
        f"| test success, self-improve policy (95% CI) | "
        f"{pct_ci(s.success_rate_self_improve, s.success_ci_self_improve)} |\n"
        f"| WebEvolver minus self-improve, same episodes (95% CI) | {_paired(s.paired.webevolver_vs_self)} |\n"
        + "".join(f"| test success, look-ahead d={d} (plain on the same episodes) | {pct(v)} "
                  f"({pct(s.success_rate_plain_on_lookahead_tasks[d])}) |\n"
                  f"| look-ahead d={d} minus plain (95% CI); score parse rate | "
                  f"{_paired(s.paired.wmla_vs_plain[d])}; {pct(s.lookahead[d].parse_rate)} |\n"
                  for d, v in s.success_rate_lookahead.items())
        + f"| generalization (tasks never trained on) | "
        f"{pct_ci(s.generalization_success_rate, s.generalization_ci)} |\n"
        f"| action validity | {s.action_validity} |\n"
        f"| world model ({s.world_model.form}) on {fid.transitions} held-out transitions: STR / Sim. / exact "
        f"(copy baseline) | {pct(fid.str)} / {pct(fid.sim)} / {pct(fid.exact)} ({pct(copy['str'])} / "
        f"{pct(copy['sim'])} / {pct(copy['exact'])}) |\n\n"
        f"Data: `{s.storage}`  \nPolicy adapter: `{s.adapter}` (content {s.adapter_digest[:12]})\n",
        key=artifact_key(s.run, f"r{s.round}", "report"))
