"""`webevolver bench ...`: speed against an in-process baseline; prints JSON with `ratio`."""

from __future__ import annotations

import asyncio
from typing import Optional

import typer

from cli.output import emit_json

bench_app = typer.Typer(help="Benchmarks: each prints one JSON object whose `ratio` is ours vs a baseline run "
                             "in the same process.", no_args_is_help=True)


@bench_app.command("observe")
def bench_observe_cmd(repeats: int = typer.Option(10, help="Observations to time."),
                      rows: int = typer.Option(250, help="Table rows (4 elements each).")) -> None:
    """ms per observation on a ~1,000-element page vs one box query per node (the reference)."""
    from evolver_core.benchmarks import bench_observe

    emit_json(asyncio.run(bench_observe(repeats, rows)))


@bench_app.command("env")
def bench_env_cmd(episodes: int = typer.Option(6, help="Episodes per context."),
                  baseline_episodes: int = typer.Option(2, help="Episodes of the sleeping baseline.")) -> None:
    """Steps/s with 1, 2, 4 contexts vs a sequential harness sleeping 3 s per action (the reference)."""
    from evolver_core.benchmarks import bench_env

    emit_json(asyncio.run(bench_env(episodes, baseline_episodes)))


@bench_app.command("cache")
def bench_cache_cmd(preset: str = typer.Option("smoke", help="Preset of the round to run twice."),
                    storage: Optional[str] = typer.Option(None, help="Storage root (default: a fresh temporary folder).")) -> None:
    """A round run twice with the same inputs: `ratio` = rerun time / first run time (target <= 0.1)."""
    import tempfile
    import time

    from cli.main import use_prefect_server

    use_prefect_server()
    from flows.evolve_round import evolve_round

    root = storage or tempfile.mkdtemp(prefix="webevolver-bench-cache-")
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        evolve_round(run_id="bench-cache", round=0, preset=preset, storage=root)
        times.append(time.perf_counter() - t0)
    emit_json({"bench": "cache", "preset": preset, "first_s": round(times[0], 2), "rerun_s": round(times[1], 2),
               "ratio": round(times[1] / times[0], 3), "target": 0.1, "storage": root})
