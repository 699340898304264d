"""N evolution rounds on top of the warm start: round 0 (demonstrations), then rounds 1..N,
each sampling with the previous round's policy."""

from __future__ import annotations

from typing import Optional

from prefect import flow
from prefect.artifacts import create_table_artifact

from evolver_core.report import success_by_round_svg
from evolver_core.storage import Storage
from flows.artifacts import svg_artifact
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
    create_table_artifact([{k: v for k, v in r.items() if not isinstance(v, dict)}
                           | {f"success_rate_wmla{d}": v for d, v in r["success_rate_lookahead"].items()}
                           for r in results], key=f"{_key(run_id)}-rounds", description="success by round")
    create_table_artifact([{"round": r["round"], **{k: r["world_model"][k] for k in ("str", "sim", "oa",
                                                                                   "fidelity_transitions")}}
                           for r in results], key=f"{_key(run_id)}-wm-fidelity",
                          description="world-model fidelity by round (paper Table 2)")
    plot = _plot(_plot_rows(results), storage_root(storage), run_id)
    return {"run": run_id, "rounds": results, "storage": results[-1]["storage"], "plot": plot}


def _plot_rows(results: list[dict]) -> list[dict]:
    """A bar per round, and one per look-ahead depth beside it."""
    return [row for r in results for row in (
        {"label": f"round {r['round']}", "success_rate": r["success_rate"]},
        *({"label": f"r{r['round']} d={d}", "success_rate": v} for d, v in r["success_rate_lookahead"].items()))]


def _plot(results: list[dict], root: str, run_id: str) -> str:
    """The success-by-round chart: an SVG file under the run, shown inline in a markdown artifact."""
    svg = success_by_round_svg(results, f"{run_id}: test success by round")
    store = Storage(root)
    uri = store.write_file(store.path(run_id) + "/report/success_by_round.svg", svg.encode())
    svg_artifact("Success by round", svg, uri, key=f"{_key(run_id)}-success-plot")
    return uri
