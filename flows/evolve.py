"""N evolution rounds on top of the warm start: round 0 (demonstrations), then rounds 1..N,
each sampling with the previous round's policy."""

from __future__ import annotations

from typing import Optional

from prefect import flow
from prefect.artifacts import create_table_artifact

from evolver_core.config import (CallLimits, EvaluationConfig, JudgeConfig, LookaheadConfig, SamplingConfig,
                                 TrainingConfig, WorldModelConfig)
from evolver_core.data.storage import Storage
from evolver_core.reporting.plots import success_by_round_svg
from evolver_core.settings import storage_root
from flows.artifacts import svg_artifact
from flows.evolve_round import evolve_round
from flows.runners import make_runner
from tasks.common import artifact_key


@flow(name="evolve")
def evolve(rounds: int = 1, preset: str = "smoke", run_id: str = "evolve", storage: Optional[str] = None,
           overrides: Optional[dict] = None, task_runner: str = "threads",
           sampling: Optional[SamplingConfig] = None, evaluation: Optional[EvaluationConfig] = None,
           judge: Optional[JudgeConfig] = None, training: Optional[TrainingConfig] = None,
           world_model: Optional[WorldModelConfig] = None, lookahead: Optional[LookaheadConfig] = None,
           limits: Optional[CallLimits] = None) -> dict:
    """Rounds 0..`rounds` of `evolve_round`, which takes the preset, sections and `overrides`
    as given here. `task_runner`: "threads" (default) or "dask" (a local Dask cluster runs the
    sampling shards)."""
    round_flow = evolve_round if task_runner == "threads" else evolve_round.with_options(task_runner=make_runner(task_runner))
    sections = dict(sampling=sampling, evaluation=evaluation, judge=judge, training=training, world_model=world_model,
                    lookahead=lookahead, limits=limits)
    results = []
    for i in range(rounds + 1):
        results.append(round_flow(run_id=run_id, round=i, preset=preset, storage=storage, overrides=overrides,
                                  **sections))
    create_table_artifact([learning_row(r) for r in results], key=artifact_key(run_id, "rounds"),
                          description="success by round and arm, 95% intervals (paper Figure 3 / Table 1)")
    create_table_artifact([{"round": r["round"], **{k: r["world_model"][k] for k in ("str", "sim", "oa",
                                                                                   "fidelity_transitions")}}
                           for r in results], key=artifact_key(run_id, "wm-fidelity"),
                          description="world-model fidelity by round (paper Table 2)")
    plot = _plot(_plot_rows(results), storage_root(storage), run_id)
    return {"run": run_id, "rounds": results, "storage": results[-1]["storage"], "plot": plot}


def learning_row(r: dict) -> dict:
    """One round of the learning table: each arm's success with its interval."""
    def ci(x):
        return [round(v, 3) for v in x] if x else None
    return {"round": r["round"], "webevolver": r["success_rate"], "webevolver_ci": ci(r["success_ci"]),
            "self_improve": r["success_rate_self_improve"], "self_improve_ci": ci(r["success_ci_self_improve"]),
            **{f"wmla{d}": v for d, v in r["success_rate_lookahead"].items()},
            **{f"plain_on_wmla{d}_tasks": v for d, v in r["success_rate_plain_on_lookahead_tasks"].items()},
            "generalization": r["generalization_success_rate"], "generalization_ci": ci(r["generalization_ci"]),
            "wm_str": r["world_model"]["str"], "wm_sim": r["world_model"]["sim"]}


def _plot_rows(results: list[dict]) -> list[dict]:
    """Per round a bar per arm (WebEvolver, self-improve, look-ahead depths), with intervals."""
    rows = []
    for r in results:
        rows.append({"label": f"r{r['round']} WE", "success_rate": r["success_rate"], "ci": r["success_ci"]})
        if r["success_rate_self_improve"] is not None:
            rows.append({"label": f"r{r['round']} SI", "success_rate": r["success_rate_self_improve"],
                         "ci": r["success_ci_self_improve"]})
        rows += [{"label": f"r{r['round']} d={d}", "success_rate": v} for d, v in r["success_rate_lookahead"].items()]
    return rows


def _plot(results: list[dict], root: str, run_id: str) -> str:
    """The success-by-round chart: an SVG file under the run, shown inline in a markdown artifact."""
    svg = success_by_round_svg(results, f"{run_id}: test success by round")
    store = Storage(root)
    uri = store.write_file(store.path(run_id) + "/report/success_by_round.svg", svg.encode())
    svg_artifact("Success by round", svg, uri, key=artifact_key(run_id, "success-plot"))
    return uri
