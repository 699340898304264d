"""The success plot (the paper's Figure 3, honestly drawn), with matplotlib.

Left: bars grouped by round; within a round each comparison sits side by side on the same
episodes: the WebEvolver policy beside the self-improve policy (the same test tasks and
seeds), and each look-ahead evaluation beside plain decoding on exactly its episodes. Every
bar has its 95% Wilson interval and its number of episodes, and the legend says in words what
each colour is. Right: the last round per task, a row per bar (the task names stay apart
however many there are). Written as SVG (text kept as text) and PNG.

Input: rows like `compare.evaluation_table`'s: ``round``, ``arm`` (the evaluation stage:
``eval``, ``eval-self``, ``eval-wmla<d>``, ``eval-gen``; ``plain-wmla<d>`` is plain decoding on
the episodes of ``eval-wmla<d>``), ``episodes`` (scored), ``success_rate``, ``ci_low``,
``ci_high``, optionally ``run`` (several runs: a group per run and round) and ``task`` (a
per-task row). `success_rows` builds them, per task and with the plain pairs, from stored
evaluation trajectories; ``eval-plain`` (plain decoding on look-ahead's own headroom tasks)
appears only as that pair's plain half.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import matplotlib
from matplotlib.figure import Figure

from evolver_core.data.records import TrajectoryRecord
from evolver_core.reporting.results import arm as stage_arm, success_of

matplotlib.use("Agg")  # files only, never a window

PLAIN_PREFIX = "plain-"
_COLOURS = {"eval": "#2563eb", "eval-self": "#f59e0b", "eval-gen": "#6b7280"}
_LOOKAHEAD, _PLAIN = "#16a34a", "#93c5fd"
_RC = {"svg.hashsalt": "webevolver", "svg.fonttype": "none", "font.size": 9}  # stable ids, text stays text


def arm_words(arm: str) -> str:
    """The legend's words for an arm."""
    if arm.startswith("eval-wmla"):
        return f"look-ahead, depth {arm.removeprefix('eval-wmla')}"
    if arm.startswith(PLAIN_PREFIX):
        return f"WebEvolver policy, plain, on the depth-{arm.removeprefix(PLAIN_PREFIX + 'eval-wmla')} episodes"
    return {"eval": "WebEvolver policy", "eval-self": "self-improve policy (same episodes)",
            "eval-gen": "WebEvolver policy on tasks never trained on"}.get(arm, arm)


def _colour(arm: str) -> str:
    if arm.startswith("eval-wmla"):
        return _LOOKAHEAD
    return _PLAIN if arm.startswith(PLAIN_PREFIX) else _COLOURS.get(arm, "#a855f7")


def _slot(arm: str) -> tuple[int, str, int]:
    """(comparison, which one, place in it): each pair side by side, the two policies first."""
    if arm in ("eval", "eval-self"):
        return 0, "", int(arm == "eval-self")
    if arm.startswith(PLAIN_PREFIX):
        return 1, arm.removeprefix(PLAIN_PREFIX), 1
    return (1, arm, 0) if arm.startswith("eval-wmla") else (2, arm, 0)


def success_rows(trajectories: Iterable[TrajectoryRecord]) -> list[dict]:
    """Rows of the plot (module docstring) from the trajectories of evaluation stages (others
    are skipped), per round and arm, and per task (the trajectory's `site`)."""
    cells: dict[tuple[int, str], list[TrajectoryRecord]] = defaultdict(list)
    for t in trajectories:
        if t.stage.startswith("eval") and not t.stage.endswith("-judge"):
            cells[(t.round, stage_arm(t.stage))].append(t)
    # eval-plain decodes plainly on look-ahead's own tasks: drawn as that pair's plain half, not a bar of its own
    own_plain = {round_: cells.pop((round_, arm)) for round_, arm in list(cells) if arm == "eval-plain"}
    for (round_, arm), trajs in list(cells.items()):
        if arm.startswith("eval-wmla"):
            episodes = {t.task_id for t in trajs}
            plain = own_plain.get(round_) or cells.get((round_, "eval"), [])
            cells[(round_, PLAIN_PREFIX + arm)] = [t for t in plain if t.task_id in episodes]
    out = []
    for (round_, arm), trajs in sorted(cells.items()):
        by_task: dict[str, list[TrajectoryRecord]] = defaultdict(list)
        for t in trajs:
            by_task[t.site].append(t)
        for task, task_trajs in [(None, trajs), *sorted(by_task.items())]:
            success = success_of(task_trajs)
            low, high = success.ci or (None, None)
            out.append({"round": round_, "arm": arm, "task": task, "episodes": success.scored,
                        "success_rate": success.rate, "ci_low": low, "ci_high": high})
    return out


def _bars(ax, groups: Sequence[tuple[str, list[Mapping]]], seen: dict[str, object], fontsize: float,
          horizontal: bool = False) -> None:
    """Grouped bars with whiskers and n, a gap between comparisons; `seen` collects one legend
    handle per arm. `horizontal`: a group per row, top to bottom, so that many groups' labels
    (the per-task chart's task names) stay apart."""
    ticks, x = [], 0.0
    for _, rows in groups:
        rows = sorted(rows, key=lambda r: _slot(r["arm"]))
        start = x
        for i, r in enumerate(rows):
            if i and _slot(r["arm"])[:2] != _slot(rows[i - 1]["arm"])[:2]:
                x += 0.4
            rate = r["success_rate"]
            whisker = [[max(0.0, rate - r["ci_low"])], [max(0.0, r["ci_high"] - rate)]]
            style = dict(color=_colour(r["arm"]), edgecolor="#111", linewidth=0.4)
            whiskers = dict(fmt="none", ecolor="#111", linewidth=0.8)
            if horizontal:
                bar = ax.barh(x, rate, 0.9, **style)
                ax.errorbar(rate, x, xerr=whisker, capsize=2, **whiskers)
                ax.text(r["ci_high"] + 0.02, x, f"{100 * rate:.0f}% n={r['episodes']}", ha="left", va="center",
                        fontsize=fontsize)
            else:
                bar = ax.bar(x, rate, 0.9, **style)
                ax.errorbar(x, rate, yerr=whisker, capsize=3, **whiskers)
                ax.text(x, r["ci_high"] + 0.02, f"{100 * rate:.0f}%\nn={r['episodes']}", ha="center", va="bottom",
                        fontsize=fontsize)
            seen.setdefault(r["arm"], bar)
            x += 1
        ticks.append((start + x - 1) / 2)
        x += 1
    labels = [label for label, _ in groups]
    percent = ([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    if horizontal:
        ax.set_yticks(ticks, labels)
        ax.set_ylim(x - 1.5, -1)  # the first group on top
        ax.set_xlim(0, 1.35)
        ax.set_xticks(*percent)
    else:
        ax.set_xticks(ticks, labels)
        ax.set_ylim(0, 1.22)
        ax.set_yticks(*percent)
    ax.spines[["top", "right"]].set_visible(False)


def success_figure(rows: Sequence[Mapping], title: str = "Test success by round") -> Figure:
    """The figure of the module docstring (rows without a rate are left out)."""
    rows = [r for r in rows if r.get("success_rate") is not None]
    totals = [r for r in rows if r.get("task") is None]
    runs = {r.get("run") for r in totals}
    by_round: dict[tuple, list[Mapping]] = defaultdict(list)
    for r in totals:
        by_round[(r.get("run") or "", r["round"])].append(r)
    last = max((r["round"] for r in rows), default=0)
    by_task: dict[str, list[Mapping]] = defaultdict(list)
    for r in rows:
        if r.get("task") is not None and r["round"] == last and not r["arm"].startswith((PLAIN_PREFIX, "eval-wmla")):
            by_task[r["task"]].append(r)
    # The per-task chart is a row per bar: the figure grows with them (at least the by-round chart's height).
    height = max(4.6, 1.6 + 0.2 * sum(len(group) + 1 for group in by_task.values()))
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(11, height) if by_task else (7, 4.6), layout="constrained")
        axes = figure.subplots(1, 2 if by_task else 1, width_ratios=[3, 2] if by_task else None, squeeze=False)[0]
        seen: dict[str, object] = {}
        _bars(axes[0], [(f"{run} round {round_}" if len(runs) > 1 else f"round {round_}", group)
                        for (run, round_), group in sorted(by_round.items())], seen, 7)
        axes[0].set_title("by round (95% Wilson intervals)")
        axes[0].set_ylabel("test success")
        if by_task:
            _bars(axes[1], sorted(by_task.items()), seen, 5.5, horizontal=True)
            axes[1].set_title(f"per task, round {last}")
        arms = sorted(seen, key=_slot)
        figure.legend([seen[a] for a in arms], [arm_words(a) for a in arms], loc="outside lower center",
                      ncols=min(3, len(arms) or 1), frameon=False)
        figure.suptitle(title)
    return figure


def _save(figure: Figure, fmt: str) -> bytes:
    buffer = io.BytesIO()
    with matplotlib.rc_context(_RC):
        figure.savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else None, dpi=110)
    return buffer.getvalue()


def success_by_round_svg(rows: Sequence[Mapping], title: str = "Test success by round") -> str:
    return _save(success_figure(rows, title), "svg").decode()


def success_by_round_png(rows: Sequence[Mapping], title: str = "Test success by round") -> bytes:
    return _save(success_figure(rows, title), "png")
