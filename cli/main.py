"""`webevolver`: sample trajectories, inspect them, observe pages, run benchmarks.

Every command that takes `--json`, and every `bench` command, prints one JSON object as its
last line of output.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Callable, Optional, TypeVar

import typer

from cli.bench import bench_app
from cli.errors import ReportingTyper, set_debug
from cli.options import config_option
from cli.output import console, emit_json
from cli.prefect_cmds import deploy, server_app, use_prefect_server, worker
from evolver_core.config import CallLimits, EvaluationConfig, ModelSpec, SamplingConfig
from evolver_core.reporting.formats import by_arm, pct
from evolver_core.settings import storage_root

app = ReportingTyper(
    help="WebEvolver: self-evolving web agents with a co-evolving world model.\n\n"
         "Start with `webevolver sample --suite miniwob --tasks 10 --policy oracle`.",
    no_args_is_help=True, add_completion=False,
)
app.add_typer(bench_app, name="bench")
app.add_typer(server_app, name="server")
app.command()(deploy)
app.command()(worker)


@app.callback()
def _global_options(debug: bool = typer.Option(False, "--debug", help="Print the full traceback of a failure "
                                                "(it always goes to the log file the error names).")) -> None:
    set_debug(debug)


def _checked_storage(value: Optional[str]) -> Optional[str]:
    """Refuse a storage root no run can use (`s3:/bucket`, an unknown scheme) before anything runs."""
    from evolver_core.data.storage import StorageURIError, check_root

    try:
        check_root(storage_root(value))
    except StorageURIError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


StorageOpt = typer.Option(None, "--storage", callback=_checked_storage,
                          help="Storage root (fsspec URI: a path, file://..., s3://bucket/prefix). "
                          "Default: $WEBEVOLVER_STORAGE, else the current directory.")


ModelOpt = config_option(ModelSpec, "model", "--model")
BackendOpt = config_option(ModelSpec, "backend", "--model-backend")
BaseUrlOpt = config_option(ModelSpec, "base_url", "--base-url")
KeyEnvOpt = config_option(ModelSpec, "api_key_env", "--api-key-env")
RequestTimeoutOpt = config_option(CallLimits, "request_timeout_s", "--request-timeout")
StepDeadlineOpt = config_option(CallLimits, "step_deadline_s", "--step-deadline")
EpisodeDeadlineOpt = config_option(CallLimits, "episode_deadline_s", "--episode-deadline")
ConstrainedOpt = config_option(SamplingConfig, "constrained", "--constrained/--free")
SuiteOpt = config_option(SamplingConfig, "suite")
MiniwobTasksOpt = config_option(SamplingConfig, "miniwob_tasks")
MaxStepsOpt = config_option(SamplingConfig, "max_steps")


T = TypeVar("T")


def checked(build: Callable[[], T], option: str) -> T:
    """`build()`, with a value no run can use (a config field's check) reported as an error of `option`."""
    try:
        return build()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def call_limits(request_timeout: float, step_deadline: float, episode_deadline: float) -> CallLimits:
    return checked(lambda: CallLimits(request_timeout_s=request_timeout, step_deadline_s=step_deadline,
                                      episode_deadline_s=episode_deadline),
                   "--request-timeout / --step-deadline / --episode-deadline")


@app.command()
def sample(
    suite: str = SuiteOpt,
    tasks: Optional[int] = typer.Option(10, "--tasks", help="Number of tasks (taken round-robin over sites)."),
    samples: int = config_option(SamplingConfig, "samples"),
    split: str = typer.Option("train", help="Task split: train, validation (MiniWoB: seeds kept for tuning) or test."),
    policy: str = typer.Option("oracle", help="oracle: the suite's scripted solver (demonstrations); model: the LLM "
                               "policy."),
    model: str = ModelOpt,
    model_backend: str = BackendOpt,
    base_url: Optional[str] = BaseUrlOpt,
    api_key_env: str = KeyEnvOpt,
    judge: str = typer.Option("auto", help="Judge model for r-hat: auto (the policy model for --policy model, none for "
                              "oracle), none, or a model name as for --model (same backend)."),
    temperature: Optional[float] = typer.Option(None, help="Policy sampling temperature (default: 0 for one sample, "
                                                f"{SamplingConfig.temperature:g} for several)."),
    miniwob_tasks: str = MiniwobTasksOpt,
    run: Optional[str] = typer.Option(None, help="Run id; reuse one to resume it. Default: <suite>-<policy>-<time>."),
    storage: Optional[str] = StorageOpt,
    round_: int = typer.Option(0, "--round", help="Evolution round the trajectories belong to."),
    concurrency: int = config_option(SamplingConfig, "concurrency"),
    max_steps: int = MaxStepsOpt,
    constrained: bool = ConstrainedOpt,
    screenshots: bool = typer.Option(False, "--screenshots", help="Store a PNG of each step's page beside the "
                                     "trajectories (shown by `webevolver view`)."),
    request_timeout: float = RequestTimeoutOpt,
    step_deadline: float = StepDeadlineOpt,
    episode_deadline: float = EpisodeDeadlineOpt,
    as_json: bool = typer.Option(False, "--json", help="End with a JSON summary line."),
) -> None:
    """Run episodes in the real browser, judge them, and store them as Parquet trajectories."""
    from evolver_core.llm import use_limits

    if policy not in ("oracle", "model"):
        raise typer.BadParameter(f"unknown policy {policy!r}; oracle or model", param_hint="--policy")
    policy_spec = ModelSpec(model=model, backend=model_backend, base_url=base_url, api_key_env=api_key_env)
    judge_name = (model if policy == "model" else "none") if judge == "auto" else judge
    judge_spec = None if judge_name == "none" else ModelSpec(model=judge_name, backend=model_backend, base_url=base_url,
                                                             api_key_env=api_key_env)
    run_id = run or f"{suite}-{policy}-{datetime.now():%Y%m%d-%H%M%S}"
    temp = temperature if temperature is not None else (0.0 if samples == 1 else SamplingConfig.temperature)
    sampling = checked(lambda: SamplingConfig(suite=suite, miniwob_tasks=miniwob_tasks, max_steps=max_steps,
                                              concurrency=concurrency, samples=samples, temperature=temp,
                                              constrained=constrained),
                       "--suite / --miniwob-tasks / --max-steps / --concurrency / --samples / --temperature")
    from evolver_core.data.run_layout import SAMPLE
    from evolver_core.stages.sample import SampleInputs

    inputs = SampleInputs(storage_root(storage), run_id, round_, SAMPLE, split, tasks,
                          policy_spec if policy == "model" else None, sampling, screenshots=screenshots)

    from cli.sampling import run_sampling

    from rich.progress import Progress

    from infra.serving import serving_session

    with Progress(console=console, transient=True) as progress, serving_session(), \
            use_limits(call_limits(request_timeout, step_deadline, episode_deadline)):
        bar = progress.add_task("episodes", total=(tasks or 0) * samples or None)

        def log(ep) -> None:
            progress.console.print(_episode_line(ep))
            progress.advance(bar)

        result = run_sampling(inputs, judge=judge_spec, log=log)
    summary, judged = result
    console.print(f"stored {summary.trajectories} trajectories ({summary.new} new, {summary.skipped} already there) "
                  f"at {summary.uri}")
    console.print(f"success rate {pct(summary.success_rate)}, action validity {pct(summary.action_validity)}"
                  + (f", judge: {judged.successes} of {judged.judged} judged successful ({judged.unparsable} "
                     f"unparsable), agreement with gold {pct(judged.agreement['accuracy'])}" if judged else "")
                  + f"; read them with: webevolver show {run_id}")
    if as_json:
        emit_json({"run": run_id, "uri": summary.uri, "trajectories": summary.trajectories, "new": summary.new,
                   "skipped": summary.skipped, "success_rate": summary.success_rate,
                   "action_validity": summary.action_validity,
                   "judge_agreement": judged.agreement if judged and judged.agreement["n"] else None,
                   "judged_successes": judged.successes if judged else None})


@app.command()
def evolve(
    rounds: int = typer.Option(1, help="Evolution rounds after the warm start (round 0: demonstrations)."),
    preset: str = typer.Option("smoke", help="smoke (tiny model, minutes), cpu (SmolLM2, under an hour), gpu (vLLM)."),
    suite: Optional[str] = typer.Option(None, help="Task suite (default: the preset's)."),
    run: str = typer.Option("evolve", help="Run id; rerunning a finished run is all cache hits, a killed one resumes."),
    storage: Optional[str] = StorageOpt,
    settings: list[str] = typer.Option([], "--set", help="Change a preset field, key=value (repeatable; typed and "
                                       "checked against the field's allowed values before anything runs): the key is "
                                       "a field's path or, where one section alone has it, its name, e.g. --set "
                                       "demo_tasks=60 --set synth_queries=none --set lookahead.depths=1,2,3 --set "
                                       "training.max_steps=200. `webevolver presets` lists every field, its meaning "
                                       "and range."),
    as_json: bool = typer.Option(False, "--json", help="End with a JSON summary line."),
) -> None:
    """Run the self-evolution flow on a local Prefect server (started if needed) and print where it all is.

    Each round samples real trajectories, trains the world model, synthesizes trajectories for the failed queries, retrains the policy on real + synthetic data, and evaluates it on the test split with and without world-model look-ahead; the world model's fidelity (STR / Sim. / O/A) is measured too."""  # noqa: E501 (one paragraph in --help)
    from evolver_core.presets import get_preset, parse_setting

    # The run's preset, built once and checked before anything starts.
    chosen = checked(lambda: get_preset(preset), "--preset")
    chosen = checked(lambda: chosen.override({"suite": suite} if suite else {}), "--suite")
    run_preset = checked(lambda: chosen.override(dict(parse_setting(s) for s in settings)), "--set")
    from evolver_core.data.lock import hold_run
    from evolver_core.data.storage import Storage

    # Held before the Prefect server and the flow run: a run another process holds is refused in
    # seconds; the flow joins this hold (and its own check still guards deployments).
    with hold_run(Storage(storage_root(storage)), run):
        server = use_prefect_server()
        from flows.evolve import evolve as evolve_flow

        state = evolve_flow(rounds=rounds, preset=run_preset, run_id=run, storage=storage_root(storage),
                            return_state=True)
    result = state.result()
    flow_run_url = f"{server.ui_url}/runs/flow-run/{state.state_details.flow_run_id}"
    from cli.output import cost_table, learning_table, paired_table, timing_table

    rounds = result["rounds"]
    for r in rounds:
        syn = r.synthetic
        console.print(f"round {r.round}: {r.real_trajectories} real trajectories ({r.kept_trajectories} kept), "
                      f"{syn.tried} synthetic ({syn.terminal} reached an end, {syn.kept} kept by {syn.filter}), "
                      f"{r.sft_examples} SFT examples, {r.eval_tasks} test episodes"
                      + (f" ({r.eval_errors} errors, not scored)" if r.eval_errors else "")
                      + f"; real episodes: {by_arm(r.real_episodes)}")
        for line in r.warnings:
            console.print(f"[yellow]warning[/yellow] round {r.round}: {line}")
    console.print(learning_table(rounds))
    console.print(paired_table(rounds))
    console.print(timing_table(rounds))
    console.print(cost_table({r.round: r.cost for r in rounds if r.cost}))
    root = storage_root(storage)
    adapter = rounds[-1].adapter.removeprefix("file://")
    console.print(f"data and adapters: {result['storage']}")
    console.print(f"success-by-round plot: {result['plot']}")
    console.print(f"Prefect UI (flow run, artifacts): {flow_run_url}")
    console.print(f"trajectories: webevolver show {run} --storage {root}   or   "
                  f"webevolver view {run} --storage {root} --out {run}-report")
    wm_adapter = rounds[-1].world_model.adapter.removeprefix("file://")
    console.print(f"evaluate the policy: webevolver eval --suite sandbox --split test --policy {adapter} "
                  f"--storage {root}   (or --suite miniwob; add --lookahead-depth 2 --world-model {wm_adapter})")
    if as_json:
        emit_json({**result, "rounds": [r.to_json() for r in rounds], "flow_run_url": flow_run_url,
                   "ui_url": server.ui_url})


@app.command()
def presets(as_json: bool = typer.Option(False, "--json", help="End with a JSON line of the fields.")) -> None:
    """Every preset field `evolve --set` changes: its value in each preset, the values a run can use, its meaning."""
    from operator import attrgetter

    from rich.table import Table

    from evolver_core.presets import PRESETS, field_paths

    rows = [{"field": path, **{name: attrgetter(path)(p) for name, p in PRESETS.items()},
             "allowed": f.allowed.describe() if f.allowed else "", "help": f.help}
            for path, f in field_paths().items()]
    table = Table(title="Preset fields (evolve --set FIELD=VALUE; a name one section alone has is enough)",
                  expand=True)
    for column in rows[0]:
        table.add_column(column, overflow="fold", ratio=3 if column == "help" else 1)
    for row in rows:
        table.add_row(*map(str, row.values()))
    console.print(table)
    if as_json:
        emit_json({"fields": rows})


@app.command("eval")
def eval_cmd(
    suite: str = SuiteOpt,
    split: str = typer.Option("test", help="Split: test, validation (MiniWoB: seeds kept for tuning) or train."),
    policy: str = typer.Option("oracle", help="oracle, tiny, smollm2, a model/adapter folder, or a remote model name."),
    tasks: Optional[int] = typer.Option(EvaluationConfig.test_tasks, help="Number of tasks (round-robin over "
                                        "sites); 0 = all."),
    repeats: int = typer.Option(1, help="Runs per task (the paper averages two)."),
    model_backend: str = BackendOpt,
    base_url: Optional[str] = BaseUrlOpt,
    miniwob_tasks: str = MiniwobTasksOpt,
    max_steps: int = MaxStepsOpt,
    constrained: bool = ConstrainedOpt,
    lookahead_depth: int = typer.Option(0, "--lookahead-depth", min=0, max=3,
                                        help="World-model look-ahead: simulate each candidate action this many "
                                             "steps (1-3) and take the best; 0 = off. Needs --world-model."),
    world_model: Optional[str] = typer.Option(None, "--world-model", help="World model for look-ahead: a model or "
                                              "adapter folder, e.g. runs/<run>/round=<i>/finetune_wm/adapter."),
    scorer: Optional[str] = typer.Option(None, "--scorer", help="Model rating look-ahead simulations "
                                         "(default: --judge, else smollm2; unused where --preset's scorer is "
                                         "the world model)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Take look-ahead's settings (world-model reply "
                                         "form, temperatures, candidates, scorer) from this preset: the one "
                                         "the world model was trained with. Default: the sections' defaults."),
    judge: Optional[str] = typer.Option(None, "--judge", help="Judge model r̂ for episodes the suite cannot score "
                                        "(WebVoyager has no gold answers); without it they stay unrated."),
    screenshots: bool = typer.Option(False, "--screenshots", help="Keep a screenshot of every step (for `view`)."),
    request_timeout: float = RequestTimeoutOpt,
    step_deadline: float = StepDeadlineOpt,
    episode_deadline: float = EpisodeDeadlineOpt,
    run: Optional[str] = typer.Option(None, help="Run id for the evaluation's trajectories. Default: "
                                      "eval-<policy>-<digest of what is evaluated>, so evaluations of different "
                                      "policies, code or tasks never share episodes."),
    storage: Optional[str] = StorageOpt,
    as_json: bool = typer.Option(False, "--json", help="End with a JSON summary line."),
) -> None:
    """Evaluate a policy, optionally with world-model look-ahead, on a suite's split (success rate with a
    95% interval) as a Prefect flow run."""
    if lookahead_depth and not world_model:
        raise typer.BadParameter("look-ahead needs --world-model (e.g. runs/<run>/round=<i>/finetune_wm/adapter)",
                                 param_hint="--lookahead-depth")
    if preset is not None:
        from evolver_core.presets import get_preset

        checked(lambda: get_preset(preset), "--preset")
    sampling = checked(lambda: SamplingConfig(suite=suite, miniwob_tasks=miniwob_tasks, max_steps=max_steps,
                                              constrained=constrained),
                       "--suite / --miniwob-tasks / --max-steps")
    limits = call_limits(request_timeout, step_deadline, episode_deadline)
    use_prefect_server()
    from flows.evaluate import evaluate

    result = evaluate(split=split, policy=policy, tasks=tasks or None, repeats=repeats, run_id=run,
                      storage=storage_root(storage), backend=model_backend, base_url=base_url, sampling=sampling,
                      lookahead_depth=lookahead_depth, world_model=world_model, scorer=scorer, judge_model=judge,
                      screenshots=screenshots, limits=limits, preset=preset)
    how = f" with look-ahead d={lookahead_depth}" if lookahead_depth else ""
    console.print(f"{policy}{how} on {suite}/{split}: success {pct(result['success_rate'])} "
                  f"(95% CI {pct(result['ci_low'])}-{pct(result['ci_high'])}) over {result['episodes']} episodes "
                  f"of {result['tasks']} tasks ({result['rated_by_gold']} rated by the suite, "
                  f"{result['rated_by_judge']} by the judge, {result['unrated']} unrated"
                  + (f", {result['errors']} error episodes" if result["errors"] else "") + "); "
                  f"trajectories: webevolver view {result['run']} --storage {storage_root(storage)} --out "
                  f"{result['run']}-report")
    if as_json:
        emit_json(result)


@app.command()
def doctor(storage: Optional[str] = StorageOpt,
           stop_strays: bool = typer.Option(False, "--stop-strays",
                                            help="Stop model servers left running by webevolver processes that died.")
           ) -> None:
    """Check this machine (chromium, model files, storage, Prefect server, stray services) and say what to fix."""
    from cli.doctor import run_checks

    raise typer.Exit(run_checks(storage_root(storage), stop_strays=stop_strays))



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
def view(
    run: str = typer.Argument(..., help="Run id."),
    out: str = typer.Option(..., "--out", help="Folder to write the report into (index.html)."),
    storage: Optional[str] = StorageOpt,
) -> None:
    """Write a static HTML report of a run's trajectories (filters, steps side by side); open out/index.html."""
    from pathlib import Path

    from evolver_core.data.records import from_table
    from evolver_core.data.storage import Storage
    from evolver_core.judge.stored import split_judged
    from evolver_core.reporting.viewer import copy_screenshots, render_report

    store = Storage(storage_root(storage))
    if run not in store.list_runs():
        raise typer.BadParameter(f"no run {run!r} under {store.uri()}", param_hint="RUN")
    trajs, broken = store.read_table_checked(run, table_name="trajectories")
    steps, broken_steps = store.read_table_checked(run, table_name="steps")
    for uri in broken + broken_steps:
        console.print(f"[yellow]skipped unreadable file {uri}[/yellow]")
    typed = from_table(trajs)
    trajs, verdicts = split_judged(trajs.to_pylist())
    steps = steps.to_pylist()
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    images = copy_screenshots(store, steps, target)  # the report must open without the storage root
    from evolver_core.reporting.compare import evaluation_table

    from evolver_core.reporting.plots import success_by_round_svg, success_rows

    success = evaluation_table(store, [run], skip_unreadable=True)
    plot = success_by_round_svg(success_rows(typed)) if success else ""
    (target / "index.html").write_text(render_report(run, trajs, steps, verdicts, images, success, plot))
    console.print(f"wrote {target.resolve() / 'index.html'} ({len(trajs)} trajectories"
                  + (f", {len(images)} screenshots" if images else "") + ")")


@app.command()
def compare(
    runs: list[str] = typer.Argument(..., help="Run ids to compare (their eval stages)."),
    out: str = typer.Option("comparison", "--out", help="Folder for comparison.csv and comparison.svg."),
    storage: Optional[str] = StorageOpt,
    as_json: bool = typer.Option(False, "--json", help="End with a JSON line of the table."),
) -> None:
    """Success by run, round and suite across runs (models): a table and a chart, as files in --out and under
    the first run, and as artifacts of a `compare` flow run on the Prefect server."""
    from pathlib import Path

    from evolver_core.data.storage import Storage
    from evolver_core.reporting.compare import NoEvaluations, comparison_files

    store = Storage(storage_root(storage))
    if unknown := sorted(set(runs) - set(store.list_runs())):  # a typo: say so before starting a flow run
        raise typer.BadParameter(f"no run {', '.join(map(repr, unknown))} under {store.uri()}", param_hint="RUNS")
    server = use_prefect_server()
    from flows.compare import compare as compare_flow

    state = compare_flow(runs=runs, storage=storage_root(storage), return_state=True)
    try:
        result = state.result()
    except NoEvaluations as exc:
        raise typer.BadParameter(str(exc), param_hint="RUNS") from None
    rows = result["rows"]
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    files = comparison_files(rows)  # the same text as the files under the run
    for name in ("comparison.csv", "comparison.svg"):
        (target / name).write_text(files[name])
    for r in rows:
        console.print(f"{r['label']}: {pct(r['success_rate'])} of {r['episodes']} "
                      f"(95% CI {pct(r['ci_low'])}-{pct(r['ci_high'])})")
    console.print(f"wrote {target.resolve()}/comparison.csv and comparison.svg")
    flow_run_url = f"{server.ui_url}/runs/flow-run/{state.state_details.flow_run_id}"
    console.print(f"under the run: {result['folder']}")
    console.print(f"Prefect UI (flow run, artifacts): {flow_run_url}")
    if as_json:
        emit_json({"rows": rows, "files": result["files"], "flow_run_id": str(state.state_details.flow_run_id),
                   "flow_run_url": flow_run_url})


@app.command()
def observe(
    url: str = typer.Argument(..., help="Any http(s) URL, e.g. a page of a local server."),
    max_elements: int = typer.Option(300, help="Element cap."),
    deadline: float = typer.Option(CallLimits.step_deadline_s, "--deadline", min=0.1,
                                   help="Seconds the page may take to load and be observed."),
) -> None:
    """Print the observation the agent would see for a page (a debugging aid)."""
    from evolver_core.browser.env import EnvConfig, launch_browser
    from evolver_core.browser.launch import PageTimeout

    async def go():
        async with launch_browser() as browser:
            return await browser.observe_url(url, EnvConfig(max_elements=max_elements))

    try:
        obs = asyncio.run(asyncio.wait_for(go(), deadline))  # a looping script blocks the page, not us
    except TimeoutError:
        raise PageTimeout(f"{url} was not observed within {deadline:g} s (a script that never yields, or a server "
                          "that never answers); raise --deadline for a slow page") from None
    print(f"URL: {obs.url}\n{obs.text}")
    if obs.truncated:
        print(f"(cut at {max_elements} elements)")


if __name__ == "__main__":
    app()
