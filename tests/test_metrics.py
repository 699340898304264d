"""Success intervals: Wilson for one rate, Newcombe's paired interval for two arms on the same
episodes, against reference values."""

from __future__ import annotations

from dataclasses import replace

import pytest

from evolver_core.reporting.metrics import PairedDifference, paired_difference, wilson_interval


def arms(both: int, a_only: int, b_only: int, neither: int) -> tuple[dict[str, bool], dict[str, bool]]:
    """Outcomes of two arms per episode id, from the paired 2x2 table."""
    cells = [(True, True)] * both + [(True, False)] * a_only + [(False, True)] * b_only + [(False, False)] * neither
    return ({f"task/{i}": x for i, (x, _) in enumerate(cells)}, {f"task/{i}": y for i, (_, y) in enumerate(cells)})


def test_wilson_interval() -> None:
    assert wilson_interval(30, 40) == pytest.approx((0.598, 0.858), abs=1e-3)  # RESULTS.md R9: 75% (59.8-85.8)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_paired_difference_matches_reference_values() -> None:
    # Cavo et al. 2012 (Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency
    # Tables", ch. 8; R contingencytables' tests): -0.0621 (95% CI -0.1186 to -0.0046).
    cavo = paired_difference(*arms(59, 6, 16, 80))
    assert (cavo.episodes, cavo.a_only, cavo.b_only) == (161, 6, 16)
    assert cavo.difference == pytest.approx(-0.0621, abs=1e-4)
    assert cavo.ci == pytest.approx((-0.1186, -0.0046), abs=1e-4)
    swapped = paired_difference(*reversed(arms(59, 6, 16, 80)))
    assert swapped.ci == pytest.approx((-cavo.ci[1], -cavo.ci[0]))


def test_paired_difference_at_the_sizes_a_round_has() -> None:
    same = paired_difference(*arms(30, 0, 0, 10))  # bit-identical arms: no difference, yet uncertain
    assert same.difference == 0.0 and same.ci[1] > 0.05 and same.ci[0] == pytest.approx(-same.ci[1])
    gain = paired_difference(*arms(24, 8, 0, 8))  # +20 points on 40 episodes, never worse
    assert gain.difference == pytest.approx(0.2) and 0.0 < gain.ci[0] < 0.2 < gain.ci[1] < 0.4
    assert paired_difference(*arms(0, 10, 0, 0)).ci[1] == 1.0  # bounded by 1
    a, b = arms(3, 1, 0, 0)
    b.pop("task/0")  # an episode only one arm has is not paired
    assert paired_difference(a, b).episodes == 3
    assert paired_difference({}, {}) == PairedDifference(0, 0.0, (-1.0, 1.0), 0, 0, 0)
    small = paired_difference(*arms(1, 1, 0, 0))
    assert small.to_json() == {"episodes": 2, "difference": 0.5, "ci": list(small.ci), "a_only": 1, "b_only": 0,
                               "dropped": 0}


def test_episodes_either_side_did_not_score_leave_the_pairing_and_are_counted() -> None:
    """An error episode (None) on either side drops that episode from the pairing; an episode
    only one side ran is not paired and not counted as dropped."""
    a, b = arms(3, 1, 1, 1)  # task/0..2 both solved, 3 a only, 4 b only, 5 neither
    a["task/0"], b["task/3"] = None, None  # an error episode on each side
    a["task/9"] = True  # only A ran it
    pair = paired_difference(a, b)
    assert (pair.episodes, pair.dropped, pair.a_only, pair.b_only) == (4, 2, 0, 1)
    without = paired_difference({k: v for k, v in a.items() if k not in ("task/0", "task/3")}, b)
    assert without.dropped == 0 and replace(pair, dropped=0) == without
