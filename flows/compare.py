"""Compare evaluations across runs: one table and one chart of success by run, round and suite
(the paper's Figure 3), as Prefect artifacts and as files under the first run.

Files: ``<root>/runs/<first run>/report/compare-<run>-vs-<run>.../comparison.{csv,svg,md}``
(`evolver_core.reporting.compare.write_comparison`): beside the run, like `evolve`'s success-by-round
chart, one folder per set of runs. Artifacts: ``compare-<runs>-table`` (the table) and
``compare-<runs>-plot`` (the chart inline, and where its file is).
"""

from __future__ import annotations

from typing import Optional

from prefect import flow
from prefect.artifacts import create_table_artifact

from evolver_core.data.storage import Storage
from evolver_core.reporting.compare import (CHART_TITLE, TABLE_COLUMNS, NoEvaluations, comparison_files,
                                            comparison_folder, evaluation_table, write_comparison)
from evolver_core.settings import storage_root
from flows.artifacts import svg_artifact
from tasks.common import artifact_key


@flow(name="compare")
def compare(runs: list[str], storage: Optional[str] = None) -> dict:
    """`runs`: run ids whose evaluation stages (eval*) to compare. Returns the table's rows, the
    files' URIs by name, and their folder."""
    if not runs:
        raise ValueError("give at least one run to compare")
    store = Storage(storage_root(storage))
    rows = evaluation_table(store, runs)
    if not rows:
        raise NoEvaluations(f"no evaluation trajectories (stages eval*) in runs {', '.join(runs)} under {store.uri()}")
    files = comparison_files(rows)
    uris = write_comparison(store, runs, files)
    key = artifact_key("compare", "-vs-".join(runs))
    create_table_artifact([{c: r[c] for c in TABLE_COLUMNS} for r in rows], key=f"{key}-table",
                          description=f"{CHART_TITLE}: {', '.join(runs)}")
    svg_artifact(CHART_TITLE, files["comparison.svg"], uris["comparison.svg"], key=f"{key}-plot")
    return {"rows": rows, "files": uris, "folder": store.fs.unstrip_protocol(comparison_folder(store, runs))}
