"""Task runners for scale-out: sampling shards run as tasks of the flow's runner.

"threads" is Prefect's default thread pool; "dask" starts a local Dask cluster (one worker
process per shard up to the cores), or joins an existing one given as "dask:tcp://host:8786";
"ray" needs the optional `prefect-ray` package.
"""

from __future__ import annotations

from typing import Any


def make_runner(name: str) -> Any:
    if name == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    if name == "dask" or name.startswith("dask:"):
        from prefect_dask import DaskTaskRunner

        address = name.partition(":")[2] or None
        return DaskTaskRunner(address=address) if address else DaskTaskRunner(
            cluster_kwargs={"n_workers": 2, "threads_per_worker": 1})
    if name == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError:
            raise ValueError("the ray runner needs `pip install prefect-ray`") from None
        return RayTaskRunner()
    raise ValueError(f"unknown task runner {name!r}: threads, dask, dask:<scheduler address>, or ray")
