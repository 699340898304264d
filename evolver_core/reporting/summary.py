"""The round summary: what one evolution round did, as `evolve` prints it, its `--json` and
the round's report artifact read it (`RoundSummary`), built from what the round's stages
returned and the evaluations they stored (`round_summary`).

It says what the world model did: `synthetic` (tried, reached an end, kept, by which filter),
`arms_identical` (the digests of the examples each policy arm trained on), what else sets the
arms apart (`real_episodes`: every real-environment episode that fed each arm's data;
`training`: each arm's examples and epochs), `fidelity` beside the copy baseline, `paired`
differences of the arms and of look-ahead vs plain decoding on the same episodes (and how
many episodes an unscored side dropped), look-ahead's candidates and score parse rate, the
seeds of the suite's splits (`splits`), and `warnings`: a line for each of these that came
out empty or unfair. A zero is easy to miss in
a table (the cpu preset's round 1 once synthesized 4 trajectories, kept none, trained both
policy arms on the same data and chose the greedy action at every look-ahead step, and
nothing said so); `round_warnings` names each in words.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional, Sequence

from evolver_core.config import TrainingConfig, WorldModelConfig
from evolver_core.data.run_layout import EVAL, EVAL_GEN, EVAL_SELF, SELF_IMPROVE, WEBEVOLVER, lookahead_stage
from evolver_core.data.stage_results import (AdapterSummary, FidelitySummary, JudgeSummary, SampleSummary,
                                             SftSummary, SynthesisSummary, WmDataSummary)
from evolver_core.data.storage import Storage
from evolver_core.reporting.cost import RoundCost
from evolver_core.reporting.formats import measure
from evolver_core.reporting.metrics import PairedDifference
from evolver_core.reporting.results import (LookaheadStats, lookahead_stats, paired_stages, played_seeds,
                                            real_episodes, stage_success, stage_task_ids)

Interval = Optional[tuple[float, float]]  # a rate's 95% interval; None where nothing was scored


@dataclass(frozen=True)
class SyntheticStats:
    """What synthesis made of the failed queries."""

    failed_queries: int
    tried: int
    terminal: int  # reached a state the world model said ends the episode
    kept: int  # by `filter`, for training
    filter: str  # `world_model.synth_filter`
    judge_successes: int
    replay_successes: Optional[int]  # None unless the replay filter ran
    judge_agreement: Optional[dict]  # r̂ against the replayed reward (replay filter only)


@dataclass(frozen=True)
class FidelityStats:
    """The world model on held-out real transitions (paper Table 2), beside the copy baseline."""

    transitions: int
    str: Optional[float]
    sim: Optional[float]
    oa: Optional[float]
    exact: Optional[float]
    change_f1: Optional[float]
    terminal: Optional[float]
    copy: dict  # the same measures of "nothing changes" on the same transitions


@dataclass(frozen=True)
class WorldModelStats:
    """The round's world model M_w: its data and its adapter."""

    form: str
    transitions: int
    kept: int
    examples: int
    adapter: str
    train_loss: float


@dataclass(frozen=True)
class PairedStats:
    """Differences of success on the same episodes."""

    webevolver_vs_self: Optional[PairedDifference]  # None before round 1 (no self-improve arm)
    wmla_vs_plain: dict[str, PairedDifference]  # by look-ahead depth


@dataclass(frozen=True)
class ArmTraining:
    """What a policy arm's fine-tune of this round trained on."""

    examples: int
    epochs: float  # passes over them: steps x batch / examples where max_steps decides, else num_train_epochs
    data_digest: str  # of the examples (`AdapterSummary.data_digest`): equal digests, the same training data


@dataclass(frozen=True)
class SplitSeeds:
    """A split of the suite's problem instances, by seed (MiniWoB)."""

    first_seed: int
    played: Optional[tuple[int, int]]  # the lowest and highest seed of the round's real episodes; None: none


@dataclass(frozen=True)
class Identities:
    """Digests of the identities of the round's main stages (what a rerun compares)."""

    sample: Optional[str]
    finetune: str
    eval: Optional[str]
    finetune_wm: str


@dataclass(frozen=True)
class RoundSummary:
    """One round: counts, success with 95% intervals, the world model's part, warnings. Rates
    are None where nothing was scored; look-ahead maps are keyed by depth (a string)."""

    run: str
    round: int
    preset: str
    suite: str
    splits: dict[str, SplitSeeds]  # by split (train, validation, test); {} for suites without seeded splits
    storage: str  # the run's data
    real_trajectories: int
    synthetic: SyntheticStats
    arms_identical: Optional[bool]  # the two policy arms trained on the same examples; None before round 1
    real_episodes: dict[str, int]  # by arm (`PolicyArm.name`): real-environment episodes that fed its data
    training: dict[str, ArmTraining]  # by arm
    train_success_rate: Optional[float]
    judge_agreement: Optional[dict]  # r̂ against gold on the sampled trajectories; None when none was judged
    sft_examples: int
    kept_trajectories: int
    adapter: str  # the WebEvolver policy M_i
    adapter_digest: str
    train_loss: float
    success_rate: Optional[float]
    success_ci: Interval
    eval_tasks: int
    eval_errors: int
    action_validity: Optional[float]
    success_rate_self_improve: Optional[float]
    success_ci_self_improve: Interval
    success_rate_lookahead: dict[str, Optional[float]]
    success_rate_plain_on_lookahead_tasks: dict[str, Optional[float]]  # plain decoding on exactly those tasks
    lookahead: dict[str, LookaheadStats]
    paired: PairedStats
    generalization_success_rate: Optional[float]
    generalization_ci: Interval
    fidelity: FidelityStats
    world_model: WorldModelStats
    stage_seconds: dict[str, float]  # wall time per stage (a cache hit takes about nothing)
    identities: Identities
    warnings: list[str]
    server_starts: list[dict] = field(default_factory=list)  # `infra.serving`'s, added by the flow
    cost: Optional[RoundCost] = None  # each stage against the machine's limits (`reporting.cost`), added by the flow

    def to_json(self) -> dict:
        """The summary as `evolve --json` prints it (every record a mapping, field order kept)."""
        return asdict(self)


@dataclass(frozen=True)
class RoundStages:
    """What the stages of a round returned (None: the stage did not run this round)."""

    sampled: Sequence[SampleSummary]  # one per shard
    judged: Optional[JudgeSummary]
    real_sft: SftSummary
    wm_data: WmDataSummary
    wm_trained: AdapterSummary
    synthesized: Optional[SynthesisSummary]
    synth_sft: Optional[SftSummary]
    trained: AdapterSummary
    self_trained: Optional[AdapterSummary]
    evaluated: SampleSummary
    evaluated_self: Optional[SampleSummary]
    lookahead: Mapping[str, SampleSummary]  # by depth
    generalization: Optional[SampleSummary]
    fidelity: FidelitySummary


def round_summary(store: Storage, run_id: str, round_: int, *, preset: str, suite: str,
                  split_seeds: Mapping[str, int], training: TrainingConfig, wm: WorldModelConfig,
                  stages: RoundStages, plain_stage: str, stage_seconds: dict[str, float]) -> RoundSummary:
    """The summary of round `round_` of `run_id` from its stages' results and the evaluations
    they stored; `plain_stage`: the plain evaluation each look-ahead depth is paired with
    (`eval`, or `eval-plain` on look-ahead's own tasks); `split_seeds`: the first seed of each
    of the suite's splits ({} where its splits are not seeds); `training`, `wm`: the policies'
    training section and the world-model section."""
    plain = stage_success(store, run_id, round_, EVAL)
    arm = stage_success(store, run_id, round_, EVAL_SELF) if stages.evaluated_self else None
    gen = stage_success(store, run_id, round_, EVAL_GEN) if stages.generalization else None
    synth, synth_sft, fid = stages.synthesized, stages.synth_sft, stages.fidelity
    synthetic = SyntheticStats(
        failed_queries=synth.failed_queries if synth else 0, tried=synth.trajectories if synth else 0,
        terminal=synth.terminal if synth else 0, kept=synth_sft.kept if synth_sft else 0, filter=wm.synth_filter,
        judge_successes=synth.judged_successes if synth else 0,
        replay_successes=synth.replay_successes if synth else None,
        judge_agreement=synth.judge_agreement if synth else None)
    arms = {WEBEVOLVER: stages.trained, **({SELF_IMPROVE: stages.self_trained} if stages.self_trained else {})}
    arms_identical = None if stages.self_trained is None else (
        stages.trained.data_digest == stages.self_trained.data_digest)
    episodes = {a.name: real_episodes(store, run_id, round_, a) for a in arms}
    played = played_seeds(store, run_id, round_) if split_seeds else {}
    depths = list(stages.lookahead)
    lookahead = {d: lookahead_stats(store, run_id, round_, lookahead_stage(int(d))) for d in depths}
    fidelity = FidelityStats(transitions=fid.n, str=fid.str, sim=fid.sim, oa=fid.oa, exact=fid.exact,
                             change_f1=fid.change_f1, terminal=fid.terminal, copy=fid.copy)
    trained, wm_trained = stages.trained, stages.wm_trained
    paired = PairedStats(
        webevolver_vs_self=paired_stages(store, run_id, round_, EVAL, EVAL_SELF) if stages.evaluated_self else None,
        wmla_vs_plain={d: paired_stages(store, run_id, round_, lookahead_stage(int(d)), plain_stage) for d in depths})
    return RoundSummary(
        run=run_id, round=round_, preset=preset, suite=suite,
        splits={split: SplitSeeds(first, played.get(split)) for split, first in split_seeds.items()},
        storage=store.uri(run_id), real_trajectories=sum(s.trajectories for s in stages.sampled),
        synthetic=synthetic, arms_identical=arms_identical, real_episodes=episodes,
        training={a.name: arm_training(adapter, training) for a, adapter in arms.items()},
        train_success_rate=_mean([s.success_rate for s in stages.sampled]),
        judge_agreement=stages.judged.agreement if stages.judged else None,
        sft_examples=trained.examples, kept_trajectories=stages.real_sft.kept,
        adapter=trained.adapter_uri, adapter_digest=trained.adapter_digest, train_loss=trained.train_loss,
        success_rate=plain.rate, success_ci=plain.ci, eval_tasks=plain.episodes, eval_errors=plain.errors,
        action_validity=stages.evaluated.action_validity,
        success_rate_self_improve=arm.rate if arm else None, success_ci_self_improve=arm.ci if arm else None,
        success_rate_lookahead={d: stage_success(store, run_id, round_, lookahead_stage(int(d))).rate
                                for d in depths},
        success_rate_plain_on_lookahead_tasks={
            d: stage_success(store, run_id, round_, plain_stage,
                             stage_task_ids(store, run_id, round_, lookahead_stage(int(d)))).rate for d in depths},
        lookahead=lookahead, paired=paired,
        generalization_success_rate=gen.rate if gen else None, generalization_ci=gen.ci if gen else None,
        fidelity=fidelity,
        world_model=WorldModelStats(form=wm.form, transitions=stages.wm_data.transitions, kept=stages.wm_data.kept,
                                    examples=wm_trained.examples, adapter=wm_trained.adapter_uri,
                                    train_loss=wm_trained.train_loss),
        stage_seconds=stage_seconds,
        identities=Identities(sample=stages.sampled[0].identity, finetune=trained.identity,
                              eval=stages.evaluated.identity, finetune_wm=wm_trained.identity),
        warnings=round_warnings(round_, synthetic, arms_identical, episodes, paired, lookahead, fidelity))


def arm_training(adapter: AdapterSummary, training: TrainingConfig) -> ArmTraining:
    """A policy arm's examples and the passes its fine-tune made over them."""
    epochs = training.num_train_epochs
    if training.max_steps is not None:
        batch = training.per_device_train_batch_size * training.gradient_accumulation_steps
        epochs = round(adapter.metrics["steps"] * batch / adapter.examples, 3)
    return ArmTraining(adapter.examples, epochs, adapter.data_digest)


def _mean(xs: list[Optional[float]]) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


# -- what the round did not do (module docstring) --------------------------------------------

def round_warnings(round_: int, synthetic: SyntheticStats, arms_identical: Optional[bool],
                   real_episodes: Mapping[str, int], paired: PairedStats, lookahead: Mapping[str, LookaheadStats],
                   fidelity: FidelityStats) -> list[str]:
    """One line per stage of the round that produced nothing useful, and per comparison that
    is not what it says."""
    same = ["the WebEvolver and self-improve arms trained on the same data"] if arms_identical else []
    return [*_synthesis(round_, synthetic), *same, *_real_episodes(real_episodes), *_dropped(paired),
            *_lookahead(lookahead), *_fidelity(fidelity)]


def _real_episodes(episodes: Mapping[str, int]) -> list[str]:
    """The arms should differ by the world model alone: not by how much of the real
    environment they saw (the replay filter's episodes, e.g.)."""
    ours, theirs = episodes.get(WEBEVOLVER.name), episodes.get(SELF_IMPROVE.name)
    if theirs is None or ours == theirs:
        return []
    return [f"the arms saw different numbers of real episodes ({WEBEVOLVER.title} {ours}, {SELF_IMPROVE.title} "
            f"{theirs}): their difference is not the world model's alone"]


def _dropped(paired: PairedStats) -> list[str]:
    pairs = {"WebEvolver minus self-improve": paired.webevolver_vs_self,
             **{f"look-ahead d={d} minus plain": pair for d, pair in paired.wmla_vs_plain.items()}}
    return [f"{name}: {pair.dropped} episodes both ran are left out of the pairing, as one side did not score "
            "them (an error episode)" for name, pair in pairs.items() if pair and pair.dropped]


def _synthesis(round_: int, syn: SyntheticStats) -> list[str]:
    if round_ == 0:
        return []
    if not syn.tried:
        return [f"synthesis made no trajectory ({syn.failed_queries} failed queries)"]
    out = []
    if not syn.terminal:
        out.append(f"none of {syn.tried} synthetic trajectories reached a state the world model said ends "
                   "the episode")
    if not syn.kept:
        out.append(f"none of {syn.tried} synthetic trajectories was kept (filter: {syn.filter})")
    return out


def _lookahead(lookahead: Mapping[str, LookaheadStats]) -> list[str]:
    out = []
    for d, stats in lookahead.items():
        if not stats.steps:
            continue
        if stats.scored and not stats.parse_rate:
            out.append(f"look-ahead d={d}: no score parsed in {stats.scored} scored candidates")
        if stats.ends and not stats.by_probability:
            out.append(f"look-ahead d={d}: the world model's server gave no probability of success at its "
                       f"{stats.ends} predicted ends, so they were scored by the outcome it wrote")
        if not stats.not_greedy:
            out.append(f"look-ahead d={d} chose the greedy action at all {stats.steps} steps")
    return out


def _fidelity(fid: FidelityStats) -> list[str]:
    if not fid.transitions:
        return ["fidelity scored no held-out transition"]
    copy = fid.copy
    worse = [name for name in ("sim", "exact")
             if getattr(fid, name) is not None and copy[name] is not None and getattr(fid, name) <= copy[name]]
    if not worse:
        return []
    return [f"the world model does not beat the copy baseline on {' and '.join(worse)} "
            f"({', '.join(f'{measure(getattr(fid, n))} vs {measure(copy[n])}' for n in worse)}, "
            f"{fid.transitions} transitions)"]
