"""Evaluate a policy on a suite's split: repeated runs (the paper runs twice and averages),
per-task results kept as trajectories, success rate with a 95% Wilson interval over all
episodes."""

from __future__ import annotations

from typing import Optional

from prefect import flow
from prefect.artifacts import create_table_artifact

from evolver_core.config import ModelSpec
from evolver_core.metrics import wilson_interval
from flows.evolve_round import storage_root
from tasks.common import results_storage
from tasks.sample import _key, sample


@flow(name="evaluate")
def evaluate(suite: str = "miniwob", split: str = "test", policy: str = "oracle", tasks: Optional[int] = 20,
             repeats: int = 1, run_id: str = "eval", storage: Optional[str] = None, backend: str = "transformers",
             base_url: Optional[str] = None, miniwob_tasks: str = "easy", max_steps: int = 12,
             concurrency: int = 2) -> dict:
    """`policy`: "oracle" (the suites' scripted solvers), or a model as `webevolver sample --model` takes it."""
    root = storage_root(storage)
    sample_t = sample.with_options(result_storage=results_storage(root))
    spec = None if policy == "oracle" else ModelSpec(model=policy, backend=backend, base_url=base_url)
    runs = [sample_t(root, run_id, 0, f"eval-{r}", suite, split, tasks, spec, max_steps=max_steps,
                     concurrency=concurrency, miniwob_tasks=miniwob_tasks, temperature=0.0 if repeats == 1 else 0.7)
            for r in range(repeats)]
    n = sum(r["with_gold"] for r in runs)
    solved = sum(r["solved"] for r in runs)
    low, high = wilson_interval(solved, n)
    result = {"suite": suite, "split": split, "policy": policy, "tasks": runs[0]["trajectories"], "repeats": repeats,
              "episodes": n, "success_rate": solved / n if n else None, "ci_low": low, "ci_high": high,
              "action_validity": sum(r["valid_actions"] for r in runs) / max(1, sum(r["steps"] for r in runs)),
              "storage": runs[0]["uri"].rsplit("/round=", 1)[0]}
    create_table_artifact([result], key=f"{_key(run_id)}-evaluate-{_key(suite)}-{_key(split)}",
                          description=f"evaluation of {policy} on {suite}/{split}")
    return result
