"""N evolution rounds on top of the warm start: round 0 (demonstrations), then rounds 1..N,
each sampling with the previous round's policy."""

from __future__ import annotations

from typing import Optional

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.evolve_round import evolve_round
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
    return {"run": run_id, "rounds": results, "storage": results[-1]["storage"]}
