"""N evolution rounds on top of the warm start: round 0 (demonstrations), then rounds 1..N,
each sampling with the previous round's policy."""

from __future__ import annotations

import base64
from typing import Optional

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from evolver_core.report import success_by_round_svg
from evolver_core.storage import Storage
from flows.evolve_round import evolve_round, storage_root
from flows.runners import make_runner
from tasks.sample import _key


@flow(name="evolve")
def evolve(rounds: int = 1, preset: str = "smoke", suite: Optional[str] = None, run_id: str = "evolve",
           storage: Optional[str] = None, overrides: Optional[dict] = None, task_runner: str = "threads") -> dict:
    """`task_runner`: "threads" (default) or "dask" (a local Dask cluster runs the sampling shards)."""
    round_flow = evolve_round if task_runner == "threads" else evolve_round.with_options(task_runner=make_runner(task_runner))
    results = []
    for i in range(rounds + 1):
        results.append(round_flow(run_id=run_id, round=i, suite=suite, preset=preset, storage=storage,
                                  overrides=overrides))
    create_table_artifact([{k: v for k, v in r.items() if not isinstance(v, dict)} for r in results],
                          key=f"{_key(run_id)}-rounds", description="success by round")
    plot = _plot(results, storage_root(storage), run_id)
    return {"run": run_id, "rounds": results, "storage": results[-1]["storage"], "plot": plot}


def _plot(results: list[dict], root: str, run_id: str) -> str:
    """The success-by-round chart: an SVG file under the run, shown inline in a markdown artifact."""
    svg = success_by_round_svg(results, f"{run_id}: test success by round")
    store = Storage(root)
    path = store.path(run_id) + "/report/success_by_round.svg"
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with store.fs.open(path, "w") as f:
        f.write(svg)
    uri = store.fs.unstrip_protocol(path)
    inline = base64.b64encode(svg.encode()).decode()
    create_markdown_artifact(f"## Success by round\n\n![success by round](data:image/svg+xml;base64,{inline})\n\n"
                             f"File: `{uri}`\n", key=f"{_key(run_id)}-success-plot")
    return uri
