"""The round names each stage that produced nothing useful (`reporting.summary.round_warnings`)."""

from __future__ import annotations

from dataclasses import replace

from evolver_core.reporting.metrics import paired_difference
from evolver_core.reporting.results import LookaheadStats
from evolver_core.reporting.summary import FidelityStats, PairedStats, SyntheticStats, round_warnings

COPY = {"str": 1.0, "sim": 0.9, "exact": 0.2}
SYNTHETIC = SyntheticStats(failed_queries=8, tried=24, terminal=20, kept=6, filter="replay", judge_successes=6,
                           replay_successes=6, judge_agreement=None)
LOOKAHEAD = LookaheadStats(steps=10, distinct_candidates=2.0, scored=20, parse_rate=0.9, ends=0, by_probability=0,
                           not_greedy=3)
FIDELITY = FidelityStats(transitions=50, str=1.0, sim=0.95, oa=None, exact=0.5, change_f1=None, terminal=None,
                         copy=COPY)
EPISODES = {"webevolver": 44, "self_improve": 44}
OUTCOMES = {f"miniwob/click-button/{100_000 + i}": i % 2 == 0 for i in range(10)}
PAIRED = PairedStats(webevolver_vs_self=paired_difference(OUTCOMES, OUTCOMES),
                     wmla_vs_plain={"1": paired_difference(OUTCOMES, OUTCOMES)})


def warnings(round_: int = 1, synthetic: SyntheticStats = SYNTHETIC, arms_identical: bool | None = False,
             real_episodes: dict[str, int] = EPISODES, paired: PairedStats = PAIRED,
             lookahead: LookaheadStats = LOOKAHEAD, fidelity: FidelityStats = FIDELITY) -> list[str]:
    """The warnings of a round-1 summary as `evolve_round` writes it, where the world model did
    its part, but for what is given."""
    return round_warnings(round_, synthetic, arms_identical, real_episodes, paired, {"1": lookahead}, fidelity)


def test_a_round_where_the_world_model_did_its_part_has_no_warning():
    assert warnings() == []
    assert warnings(round_=0, synthetic=replace(SYNTHETIC, failed_queries=0, tried=0, terminal=0, kept=0),
                    arms_identical=None, real_episodes={"webevolver": 4},
                    paired=PairedStats(webevolver_vs_self=None, wmla_vs_plain={})) == []


def test_the_cpu_presets_old_round_one_would_have_said_everything_it_did_not_do():
    """Measured on the cpu preset before issue 20: 4 synthesized, none ended, none kept, the two
    arms bit-identical, look-ahead greedy at every step with no score parsed, STR 0.5."""
    old = warnings(synthetic=replace(SYNTHETIC, failed_queries=4, tried=4, terminal=0, kept=0, filter="judge"),
                   arms_identical=True,
                   lookahead=replace(LOOKAHEAD, steps=9, scored=18, parse_rate=0.0, not_greedy=0),
                   fidelity=replace(FIDELITY, transitions=6, sim=0.404, exact=0.0))
    assert old == [
        "none of 4 synthetic trajectories reached a state the world model said ends the episode",
        "none of 4 synthetic trajectories was kept (filter: judge)",
        "the WebEvolver and self-improve arms trained on the same data",
        "look-ahead d=1: no score parsed in 18 scored candidates",
        "look-ahead d=1 chose the greedy action at all 9 steps",
        "the world model does not beat the copy baseline on sim and exact (0.404 vs 0.900, 0.000 vs 0.200, "
        "6 transitions)",
    ]
    nothing = warnings(synthetic=replace(SYNTHETIC, failed_queries=3, tried=0, terminal=0, kept=0))
    assert nothing == ["synthesis made no trajectory (3 failed queries)"]


def test_ends_scored_without_the_world_models_probability_are_named():
    """A transformers server gives no log-probabilities: the world-model scorer falls back to
    the outcome M_w wrote, which on the cpu preset is "success" at every end (a tie)."""
    fallback = warnings(lookahead=replace(LOOKAHEAD, parse_rate=1.0, ends=12, by_probability=0))
    assert fallback == [
        "look-ahead d=1: the world model's server gave no probability of success at its 12 predicted ends, "
        "so they were scored by the outcome it wrote"]
    assert warnings(lookahead=replace(LOOKAHEAD, parse_rate=1.0, ends=12, by_probability=12)) == []


def test_a_fidelity_that_scored_nothing_is_named():
    assert warnings(fidelity=replace(FIDELITY, transitions=0)) == ["fidelity scored no held-out transition"]


def test_arms_that_saw_different_real_episodes_are_named():
    """The cpu preset's round 1: both arms learn from round 0's 140 demonstrations and round 1's
    40 sampled episodes, and the WebEvolver arm also from its 32 synthetic trajectories replayed
    on the real page."""
    assert warnings(real_episodes={"webevolver": 212, "self_improve": 180}) == [
        "the arms saw different numbers of real episodes (WebEvolver 212, self-improve 180): their difference "
        "is not the world model's alone"]


def test_a_pairing_that_left_out_error_episodes_says_how_many():
    """An error episode (a crashed page: not scored) on either side leaves the pairing; the
    pairing counts it, and the round names it."""
    errors = {**OUTCOMES, "miniwob/click-button/100000": None, "miniwob/click-button/100003": None}
    with_errors = paired_difference(OUTCOMES, errors)
    assert (with_errors.episodes, with_errors.dropped) == (8, 2)
    assert warnings(paired=replace(PAIRED, wmla_vs_plain={"1": with_errors})) == [
        "look-ahead d=1 minus plain: 2 episodes both ran are left out of the pairing, as one side did not "
        "score them (an error episode)"]
    assert warnings(paired=replace(PAIRED, webevolver_vs_self=with_errors))[0].startswith(
        "WebEvolver minus self-improve: 2 episodes")
