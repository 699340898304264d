"""`webevolver`: sample trajectories, inspect them, observe pages, run benchmarks.

Every command that takes `--json`, and every `bench` command, prints one JSON object as its
last line of output.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from typing import Optional

import typer

from cli.bench import bench_app
from cli.output import console, emit_json

app = typer.Typer(
    help="WebEvolver: self-evolving web agents with a co-evolving world model.\n\n"
         "Start with `webevolver sample --suite miniwob --tasks 10 --policy oracle`.",
    no_args_is_help=True, add_completion=False,
)
app.add_typer(bench_app, name="bench")

STORAGE_ENV = "WEBEVOLVER_STORAGE"
StorageOpt = typer.Option(None, "--storage", help=f"Storage root (fsspec URI: a path, file://..., s3://bucket/prefix). "
                          f"Default: ${STORAGE_ENV}, else the current directory.")


def storage_root(storage: Optional[str]) -> str:
    return storage or os.environ.get(STORAGE_ENV) or os.getcwd()


@app.command()
def sample(
    suite: str = typer.Option("miniwob", help="Task suite: miniwob, sandbox, webvoyager, mind2web-live, gaia-web, openwebvoyager."),
    tasks: Optional[int] = typer.Option(10, "--tasks", help="Number of tasks (taken round-robin over sites)."),
    samples: int = typer.Option(1, help="Trajectories per task (k, for rejection sampling)."),
    split: str = typer.Option("train", help="Task split: train or test."),
    policy: str = typer.Option("oracle", help="oracle: the suite's scripted solver (demonstrations)."),
    miniwob_tasks: str = typer.Option("easy", help="MiniWoB tasks: easy (the solver-backed subset), all, or a comma list."),
    run: Optional[str] = typer.Option(None, help="Run id; reuse one to resume it. Default: <suite>-<policy>-<time>."),
    storage: Optional[str] = StorageOpt,
    round_: int = typer.Option(0, "--round", help="Evolution round the trajectories belong to."),
    concurrency: int = typer.Option(2, help="Concurrent browser contexts."),
    max_steps: int = typer.Option(12, help="Step limit per episode."),
    as_json: bool = typer.Option(False, "--json", help="End with a JSON summary line."),
) -> None:
    """Run episodes in the real browser and store them as Parquet trajectories."""
    from evolver_core.agent import OracleAgent
    from evolver_core.sampling import SampleConfig, sample_trajectories
    from evolver_core.storage import Storage
    from evolver_core.suites.registry import get_suite, select_tasks

    if policy != "oracle":
        raise typer.BadParameter(f"unknown policy {policy!r}", param_hint="--policy")
    run_id = run or f"{suite}-{policy}-{datetime.now():%Y%m%d-%H%M%S}"
    the_suite = get_suite(suite, miniwob_tasks=miniwob_tasks)
    store = Storage(storage_root(storage))
    cfg = SampleConfig(run_id=run_id, round=round_, samples=samples, concurrency=concurrency, max_steps=max_steps)

    async def go():
        await the_suite.start()
        try:
            chosen = select_tasks(the_suite.tasks(split), tasks)
            console.print(f"sampling {len(chosen)} tasks x {samples} from {suite}/{split} -> run {run_id}")
            return await sample_trajectories(the_suite, chosen, lambda: OracleAgent(the_suite), store, cfg,
                                             on_done=lambda ep: console.print(_episode_line(ep)))
        finally:
            await the_suite.stop()

    summary = asyncio.run(go())
    console.print(f"stored {summary.trajectories} trajectories ({summary.new} new, {summary.skipped} already there) "
                  f"at {summary.uri}")
    console.print(f"success rate {_pct(summary.success_rate)}, action validity {_pct(summary.action_validity)}; "
                  f"read them with: webevolver show {run_id}")
    if as_json:
        emit_json({"run": run_id, "uri": summary.uri, "trajectories": summary.trajectories, "new": summary.new,
                   "skipped": summary.skipped, "success_rate": summary.success_rate,
                   "action_validity": summary.action_validity, "judge_agreement": None})


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _episode_line(ep) -> str:
    reward = "-" if ep.gold_reward is None else f"{ep.gold_reward:g}"
    return f"  {ep.trajectory_id}: {len(ep.steps)} steps, {ep.stop_reason}, reward {reward}"


@app.command()
def show(
    run: str = typer.Argument(..., help="Run id."),
    trajectory: Optional[str] = typer.Option(None, help="Trajectory id (default: every trajectory of the run)."),
    round_: Optional[int] = typer.Option(None, "--round"),
    stage: Optional[str] = typer.Option(None),
    limit: int = typer.Option(5, help="At most this many trajectories."),
    storage: Optional[str] = StorageOpt,
) -> None:
    """Print stored trajectories step by step: observation, thought, action, error."""
    from cli.show import render_run

    render_run(storage_root(storage), run, trajectory=trajectory, round_=round_, stage=stage, limit=limit)


@app.command()
def observe(
    url: str = typer.Argument(..., help="Any http(s) URL, e.g. a page of a local server."),
    max_elements: int = typer.Option(300, help="Element cap."),
) -> None:
    """Print the observation the agent would see for a page (a debugging aid)."""
    from evolver_core.browser.env import EnvConfig, launch_browser

    async def go():
        async with launch_browser() as browser:
            return await browser.observe_url(url, EnvConfig(max_elements=max_elements))

    obs = asyncio.run(go())
    print(f"URL: {obs.url}\n{obs.text}")
    if obs.truncated:
        print(f"(cut at {max_elements} elements)")


if __name__ == "__main__":
    app()
