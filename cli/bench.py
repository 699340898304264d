"""`webevolver bench ...`: speed against an in-process baseline; prints JSON with `ratio`."""

from __future__ import annotations

import asyncio

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
