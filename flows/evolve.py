"""N evolution rounds on top of the warm start: round 0 (demonstrations), then rounds 1..N,
each sampling with the previous round's policy."""

from __future__ import annotations

from typing import Optional

from prefect import flow
from prefect.artifacts import create_table_artifact

from evolver_core.data.records import from_table
from evolver_core.data.storage import Storage
from evolver_core.presets import PresetChoice
from evolver_core.reporting.plots import success_by_round_png, success_by_round_svg, success_rows
from evolver_core.reporting.summary import RoundSummary
from evolver_core.settings import storage_root
from flows.artifacts import svg_artifact
from flows.evolve_round import evolve_round, run_preset
from flows.holding import holding_run
from flows.runners import make_runner
from tasks.common import artifact_key


@flow(name="evolve")
def evolve(rounds: int = 1, preset: PresetChoice = "smoke", run_id: str = "evolve", storage: Optional[str] = None,
           overrides: Optional[dict] = None, task_runner: str = "threads") -> dict:
    """Rounds 0..`rounds` of `evolve_round`, every one on the preset resolved here once
    (`preset`: a name or a whole preset, then `overrides`, as `evolve_round` takes them).
    `task_runner`: "threads" (default) or "dask" (a local Dask cluster runs the sampling
    shards). Returns the run, each round's `RoundSummary` (`rounds`), the storage and the
    success plot's URI."""
    p = run_preset(preset, overrides)
    round_flow = (evolve_round if task_runner == "threads"
                  else evolve_round.with_options(task_runner=make_runner(task_runner)))
    results = []
    with holding_run(run_id, storage):  # its rounds join this hold
        for i in range(rounds + 1):
            results.append(round_flow(run_id=run_id, round=i, preset=p, storage=storage))
    create_table_artifact([learning_row(r) for r in results], key=artifact_key(run_id, "rounds"),
                          description="success by round and arm, 95% intervals (paper Figure 3 / Table 1)")
    create_table_artifact([fidelity_row(r) for r in results], key=artifact_key(run_id, "wm-fidelity"),
                          description="world-model fidelity by round (paper Table 2), beside the copy baseline")
    plot = _plot(storage_root(storage), run_id)
    return {"run": run_id, "rounds": results, "storage": results[-1].storage, "plot": plot}


def learning_row(r: RoundSummary) -> dict:
    """One round of the learning table: each arm's success with its interval."""
    def ci(x):
        return [round(v, 3) for v in x] if x else None
    return {"round": r.round, "webevolver": r.success_rate, "webevolver_ci": ci(r.success_ci),
            "self_improve": r.success_rate_self_improve, "self_improve_ci": ci(r.success_ci_self_improve),
            **{f"wmla{d}": v for d, v in r.success_rate_lookahead.items()},
            **{f"plain_on_wmla{d}_tasks": v for d, v in r.success_rate_plain_on_lookahead_tasks.items()},
            "generalization": r.generalization_success_rate, "generalization_ci": ci(r.generalization_ci),
            "wm_str": r.fidelity.str, "wm_sim": r.fidelity.sim, "warnings": len(r.warnings)}


def fidelity_row(r: RoundSummary) -> dict:
    """One round of the fidelity table: the world model's measures and the copy baseline's."""
    fid = r.fidelity
    return {"round": r.round, "form": r.world_model.form, "transitions": fid.transitions,
            **{k: getattr(fid, k) for k in ("str", "sim", "oa", "exact", "change_f1", "terminal")},
            **{f"copy_{k}": fid.copy[k] for k in ("str", "sim", "exact")}}


def _plot(root: str, run_id: str) -> str:
    """The success plot of the run's stored evaluations: SVG and PNG files under the run, the
    SVG shown inline in a markdown artifact."""
    store = Storage(root)
    rows = success_rows(from_table(store.read_table_checked(run_id, table_name="trajectories")[0]))
    title = f"{run_id}: test success by round"
    svg = success_by_round_svg(rows, title)
    folder = store.path(run_id) + "/report"
    uri = store.write_file(f"{folder}/success_by_round.svg", svg.encode())
    store.write_file(f"{folder}/success_by_round.png", success_by_round_png(rows, title))
    svg_artifact("Success by round", svg, uri, key=artifact_key(run_id, "success-plot"))
    return uri
