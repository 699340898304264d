"""The success plot: rows from stored evaluation trajectories (each look-ahead paired with
plain decoding on its episodes, per task), drawn with matplotlib as SVG and PNG."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from evolver_core.contracts.episode import trajectory_id
from evolver_core.data.records import TrajectoryRecord
from evolver_core.reporting.plots import (arm_words, success_by_round_png, success_by_round_svg, success_figure,
                                          success_rows)
from helpers import make_trajectory


def trajectory(stage: str, round_: int, task: str, seed: int, solved: bool, stop: str = "done") -> TrajectoryRecord:
    """An evaluation episode as sampling stores it: rated by its gold reward, not (yet) judged."""
    task_id = f"miniwob/{task}/{seed}"
    return make_trajectory(stage=stage, round=round_, task_id=task_id, trajectory_id=trajectory_id(task_id, 0),
                           site=task, stop_reason=stop, gold_reward=float(solved), judge_verdict=None,
                           judge_reasoning=None)


TRAJECTORIES = [
    *[trajectory("eval", r, task, s, s < 3 + r) for r in (0, 1) for task in ("click-button", "enter-text")
      for s in range(5)],
    *[trajectory("eval-self", 1, task, s, s < 3) for task in ("click-button", "enter-text") for s in range(5)],
    *[trajectory("eval-wmla1", 1, "click-button", s, True) for s in (0, 4)],  # look-ahead on 2 episodes
    trajectory("eval-wmla1-judge", 1, "click-button", 0, False),  # a judged copy: not an evaluation
    trajectory("eval-gen", 1, "focus-text", 0, True), trajectory("eval-gen", 1, "focus-text", 1, False, "error"),
    trajectory("sample", 1, "click-button", 0, False),
]


def test_rows_pair_look_ahead_with_plain_on_its_episodes() -> None:
    rows = {(r["round"], r["arm"], r["task"]): r for r in success_rows(TRAJECTORIES)}
    assert {k for k in rows if k[2] is None} == {(0, "eval", None), (1, "eval", None), (1, "eval-self", None),
                                                  (1, "eval-wmla1", None), (1, "plain-eval-wmla1", None),
                                                  (1, "eval-gen", None)}
    plain = rows[(1, "plain-eval-wmla1", None)]  # seeds 0 and 4 of click-button: solved, not solved
    assert (plain["episodes"], plain["success_rate"]) == (2, 0.5) and rows[(1, "eval-wmla1", None)]["success_rate"] == 1
    assert rows[(1, "eval", None)]["episodes"] == 10 and rows[(1, "eval", None)]["success_rate"] == 0.8
    assert rows[(1, "eval", "enter-text")]["success_rate"] == 0.8 and rows[(0, "eval", "click-button")]["episodes"] == 5
    assert rows[(1, "eval-gen", None)]["episodes"] == 1  # an error episode is not scored
    low, high = rows[(1, "eval", None)]["ci_low"], rows[(1, "eval", None)]["ci_high"]
    assert low == pytest.approx(0.490, abs=1e-3) and high == pytest.approx(0.943, abs=1e-3)


def test_plain_decoding_on_the_headroom_tasks_is_the_pair_not_a_bar() -> None:
    """With `lookahead.headroom_tasks`, `eval-plain` decodes plainly on look-ahead's own tasks."""
    headroom = [*[trajectory("eval-wmla1", 0, "click-link", s, s < 2) for s in range(4)],
                *[trajectory("eval-plain", 0, "click-link", s, s < 1) for s in range(4)]]
    rows = {(r["arm"], r["task"]): r for r in success_rows([*TRAJECTORIES, *headroom]) if r["round"] == 0}
    assert {arm for arm, _ in rows} == {"eval", "eval-wmla1", "plain-eval-wmla1"}
    plain = rows[("plain-eval-wmla1", None)]
    assert (plain["episodes"], plain["success_rate"]) == (4, 0.25)  # eval-plain's, not eval's click-button seeds


def test_plot_names_every_bar_in_words_with_n() -> None:
    rows = success_rows(TRAJECTORIES)
    svg = success_by_round_svg(rows, "run: test success by round")
    assert "<svg" in svg and "run: test success by round" in svg and "per task, round 1" in svg
    for words in ("WebEvolver policy", "self-improve policy (same episodes)", "look-ahead, depth 1",
                  "WebEvolver policy, plain, on the depth-1 episodes", "round 0", "round 1", "n=10", "n=2",
                  "enter-text"):
        assert words in svg, words
    assert svg == success_by_round_svg(rows, "run: test success by round")  # stable across calls
    assert success_by_round_png(rows).startswith(b"\x89PNG")
    assert arm_words("eval-wmla2") == "look-ahead, depth 2" and arm_words("eval-custom") == "eval-custom"


def test_plot_of_compare_rows_and_of_nothing() -> None:
    """`compare.evaluation_table` rows: several runs, no per-task rows, a round without a rate."""
    rows = [{"run": run, "round": 0, "suite": "miniwob", "arm": "eval", "episodes": 40, "success_rate": rate,
             "ci_low": rate - 0.1, "ci_high": rate + 0.1} for run, rate in (("a", 0.5), ("b", 0.75))]
    svg = success_by_round_svg([*rows, {"round": 1, "arm": "eval", "episodes": 0, "success_rate": None}])
    assert "a round 0" in svg and "b round 0" in svg and "per task" not in svg
    assert "<svg" in success_by_round_svg([])


def test_the_per_task_chart_keeps_twelve_tasks_apart() -> None:
    """A 12-task evaluation (MiniWoB's long task names, the two policies on each): no task name
    and no bar's label overlaps another."""
    tasks = ["click-button-sequence", "click-checkboxes-large", "click-tab-2-hard", "choose-date-easy",
             "email-inbox-forward-nl", "enter-text-dynamic", "focus-text-2", "login-user", "navigate-tree",
             "search-engine", "social-media-all", "use-autocomplete"]
    trajs = [trajectory(stage, 1, task, s, s < i % 4) for stage in ("eval", "eval-self") for i, task in enumerate(tasks)
             for s in range(4)]
    figure = success_figure(success_rows(trajs))
    FigureCanvasAgg(figure).draw()
    per_task = figure.axes[1]
    labels = [t for t in [*per_task.get_xticklabels(), *per_task.get_yticklabels(), *per_task.texts] if t.get_text()]
    assert {t.get_text() for t in labels} >= set(tasks)
    boxes = [(t.get_text(), t.get_window_extent()) for t in labels]
    overlapping = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    assert not overlapping, overlapping[:3]
