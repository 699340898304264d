"""Compare evaluations across runs, rounds and suites: one table, one chart.

Every stage whose name starts with `eval` holds evaluation trajectories (`evolve` writes
`eval`, `eval-self`, `eval-wmla<d>` and `eval-gen` per round; the `evaluate` flow writes
`eval-<repeat>`). Success is the share of scored trajectories with gold reward 1, per (run,
round, suite, arm), over all repeats; error episodes are not scored.

The files (`comparison_files`): ``comparison.csv`` (the table), ``comparison.svg`` (the chart,
like the paper's Figure 3) and ``comparison.md`` (both, for reading). `write_comparison` puts
them under the first run: ``runs/<first run>/report/compare-<run>-vs-<run>.../``, a folder per
set of runs so that comparisons of different runs never overwrite each other.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict

from evolver_core.contracts.errors import WebEvolverError
from evolver_core.data.records import from_table, scored
from evolver_core.data.storage import Storage, UnreadableShard, safe_key
from evolver_core.reporting.metrics import wilson_interval
from evolver_core.reporting.plots import success_by_round_svg
from evolver_core.reporting.results import arm

CHART_TITLE = "Success by run, round and suite"
TABLE_COLUMNS = ("run", "round", "suite", "arm", "episodes", "success_rate", "ci_low", "ci_high")


class NoEvaluations(WebEvolverError, ValueError):
    """None of the runs has evaluation trajectories (stages eval*) with a gold reward."""


def evaluation_table(storage: Storage, runs: list[str], *, skip_unreadable: bool = False) -> list[dict]:
    cells: dict[tuple[str, int, str, str], list[float]] = defaultdict(list)
    for run in runs:
        table, broken = storage.read_table_checked(run, table_name="trajectories")
        if broken and not skip_unreadable:
            raise UnreadableShard(broken)
        for t in from_table(table):
            if t.stage.startswith("eval") and not t.stage.endswith("-judge") and scored(t):
                cells[(run, t.round, t.suite, arm(t.stage))].append(t.gold_reward)
    rows = []
    for (run, round_, suite, which), rewards in sorted(cells.items()):
        solved = sum(1 for r in rewards if r >= 1.0)
        low, high = wilson_interval(solved, len(rewards))
        rows.append({"run": run, "round": round_, "suite": suite, "arm": which, "episodes": len(rewards),
                     "success_rate": solved / len(rewards), "ci_low": low, "ci_high": high,
                     "label": f"{run} r{round_} {suite}" + ("" if which == "eval" else f" {which}")})
    return rows


def comparison_files(rows: list[dict]) -> dict[str, str]:
    """File name -> text of the comparison's table (CSV), chart (SVG) and both (markdown)."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + " --- |" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in TABLE_COLUMNS) + " |" for r in rows]
    markdown = f"# {CHART_TITLE}\n\n![{CHART_TITLE.lower()}](comparison.svg)\n\n" + "\n".join(lines) + "\n"
    return {"comparison.csv": table.getvalue(), "comparison.svg": success_by_round_svg(rows, CHART_TITLE),
            "comparison.md": markdown}


def _cell(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def comparison_folder(storage: Storage, runs: list[str]) -> str:
    """Where `write_comparison` puts the files (a path on `storage.fs`)."""
    return f"{storage.path(runs[0])}/report/compare-{safe_key('-vs-'.join(runs))}"


def write_comparison(storage: Storage, runs: list[str], files: dict[str, str]) -> dict[str, str]:
    """Write `comparison_files` under the first run (each file atomically); file name -> URI."""
    folder = comparison_folder(storage, runs)
    return {name: storage.write_file(f"{folder}/{name}", text.encode()) for name, text in files.items()}
