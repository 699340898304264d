"""Compare evaluations across runs, rounds and suites: one table, one chart.

Every stage whose name starts with `eval` holds evaluation trajectories (`evolve` writes
`eval` per round; the `evaluate` flow writes `eval-<repeat>`). Success is the share of
trajectories with gold reward 1, per (run, round, suite), over all repeats.
"""

from __future__ import annotations

from collections import defaultdict

from evolver_core.metrics import wilson_interval
from evolver_core.storage import Storage


def evaluation_table(storage: Storage, runs: list[str]) -> list[dict]:
    cells: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for run in runs:
        for t in storage.read_table(run, table_name="trajectories").to_pylist():
            if t["stage"].startswith("eval") and t["gold_reward"] is not None:
                cells[(run, t["round"], t["suite"])].append(t["gold_reward"])
    rows = []
    for (run, round_, suite), rewards in sorted(cells.items()):
        solved = sum(1 for r in rewards if r >= 1.0)
        low, high = wilson_interval(solved, len(rewards))
        rows.append({"run": run, "round": round_, "suite": suite, "episodes": len(rewards),
                     "success_rate": solved / len(rewards), "ci_low": low, "ci_high": high,
                     "label": f"{run} r{round_} {suite}"})
    return rows
