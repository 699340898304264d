"""Speed benchmarks, each against a baseline run in the same process (ratios, not seconds).

- observe: our two-call observation vs the reference approach, which measured every AX
  node's box with its own CDP round trips (`DOM.resolveNode` + `Runtime.callFunctionOn`).
- env: observe+act steps per second with 1, 2, 4 concurrent contexts vs a sequential
  harness that sleeps 3 s after each action, as the reference did.
- serve: replies per second of each CPU serving backend vs today's default.
- train: seconds per LoRA step with the training's thread choice vs torch's default, on a
  quiet machine and beside one busy process (each case in a fresh process).
- round: every stage of a round against this machine's own limits (`reporting.cost`), the
  limits measured here (`machine_limits`: a matmul's FLOP/s, an array copy's bandwidth).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from evolver_core.agents.oracle import OracleAgent
from evolver_core.browser.env import EnvConfig, launch_browser
from evolver_core.browser.observe import observe
from evolver_core.config import SamplingConfig
from evolver_core.data.run_layout import adapter_uri
from evolver_core.data.storage import Storage
from evolver_core.llm import current_limits
from evolver_core.models.folders import weights_size
from evolver_core.reporting.cost import MachineLimits, RoundCost, round_cost
from evolver_core.settings import download_cache
from evolver_core.suites.httpserver import LocalHTTPServer

REFERENCE_SLEEP_S = 3.0


def catalogue_html(rows: int = 250) -> str:
    """A page of ~4 elements per row (link, text, button, textbox): ~1,000 elements at 250 rows."""
    body = "".join(
        f"<tr><td><a href='#r{i}'>Item {i}</a></td><td>{i * 3} units in stock</td>"
        f"<td><button>Buy {i}</button></td><td><input aria-label='quantity {i}' value='{i % 7}'></td></tr>"
        for i in range(rows))
    return ("<!doctype html><html><head><title>Catalogue</title></head><body><h1>Catalogue</h1>"
            f"<table>{body}</table></body></html>")


class _CatalogueHandler(BaseHTTPRequestHandler):
    page = catalogue_html().encode()

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: Any) -> None:
        pass


_BOX_JS = ("function() { const r = (this.nodeType === 3 ? (() => { const g = document.createRange(); "
           "g.selectNode(this); return g; })() : this).getBoundingClientRect(); "
           "return [r.x, r.y, r.width, r.height]; }")


async def reference_observe(cdp: Any) -> int:
    """The reference's measurement: the AX tree, then one box query per node. Returns nodes measured."""
    ax = await cdp.send("Accessibility.getFullAXTree")
    measured = 0
    for node in ax["nodes"]:
        backend = node.get("backendDOMNodeId")
        if backend is None:
            continue
        try:
            obj = await cdp.send("DOM.resolveNode", {"backendNodeId": backend})
            await cdp.send("Runtime.callFunctionOn", {"objectId": obj["object"]["objectId"],
                                                      "functionDeclaration": _BOX_JS, "returnByValue": True})
            measured += 1
        except Exception:
            pass
    return measured


@dataclass
class Timing:
    ms_per_call: float
    calls: int


async def _time(fn, repeats: int) -> Timing:
    await fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        await fn()
    return Timing((time.perf_counter() - t0) * 1000 / repeats, repeats)


async def bench_observe(repeats: int = 10, rows: int = 250) -> dict:
    server = LocalHTTPServer(_CatalogueHandler)
    _CatalogueHandler.page = catalogue_html(rows).encode()
    try:
        async with launch_browser() as browser:
            context = await browser.browser.new_context(viewport={"width": 1280, "height": 720})
            page = await context.new_page()
            await page.goto(server.url)
            cdp = await context.new_cdp_session(page)
            ax_nodes = len((await cdp.send("Accessibility.getFullAXTree"))["nodes"])
            ours = await _time(lambda: observe(page, cdp), repeats)
            ref = await _time(lambda: reference_observe(cdp), max(2, repeats // 5))
            elements = len((await observe(page, cdp, max_elements=10_000)).elements)
    finally:
        server.close()
    return {"bench": "observe", "ax_nodes": ax_nodes, "viewport_elements": elements,
            "ours_ms": round(ours.ms_per_call, 1), "reference_ms": round(ref.ms_per_call, 1),
            "ratio": round(ref.ms_per_call / ours.ms_per_call, 2), "target": 8}


async def _run_steps(browser: Any, suite: Any, tasks: list, *, sleep_s: float = 0.0) -> int:
    """Play oracle episodes on one context; returns env steps taken."""
    env = await browser.new_env(suite, EnvConfig())
    step_s = current_limits().step_deadline_s  # every page call bounded, as in a rollout
    steps = 0
    try:
        for task in tasks:
            obs = await env.within(step_s, env.reset(task))
            agent = OracleAgent(suite)
            agent.start(env.task)
            for _ in range(SamplingConfig.max_steps):
                turn = await agent.act(env.task, obs, [])
                if turn.action.startswith("stop"):
                    break
                obs = await env.within(step_s, env.step(turn.action))
                steps += 1
                if sleep_s:
                    await asyncio.sleep(sleep_s)
    finally:
        await env.close()
    return steps


async def bench_env(episodes_per_context: int = 6, baseline_episodes: int = 2,
                    concurrencies: tuple[int, ...] = (1, 2, 4)) -> dict:
    from evolver_core.suites.miniwob import MiniWoBSuite

    suite = MiniWoBSuite(["enter-text", "login-user", "click-checkboxes"], seeds_per_task=100)
    await suite.start()
    try:
        tasks = suite.tasks("train")
        async with launch_browser() as browser:
            rates = {}
            for n in concurrencies:
                chunks = [tasks[i * episodes_per_context:(i + 1) * episodes_per_context] for i in range(n)]
                t0 = time.perf_counter()
                steps = sum(await asyncio.gather(*(_run_steps(browser, suite, c) for c in chunks)))
                rates[n] = steps / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            steps = await _run_steps(browser, suite, tasks[:baseline_episodes], sleep_s=REFERENCE_SLEEP_S)
            baseline = steps / (time.perf_counter() - t0)
    finally:
        await suite.stop()
    best = max(rates.values())
    return {"bench": "env", "steps_per_s": {str(k): round(v, 2) for k, v in rates.items()},
            "baseline_steps_per_s": round(baseline, 3), "ratio": round(best / baseline, 2), "target": 10}


# -- serve: replies per second of a model server under the cpu preset's requests ------------

SERVE_TASKS = ("click-button", "enter-text", "login-user", "click-link")  # the cpu preset's MiniWoB tasks
SERVE_MIX = (("policy", 6), ("judge", 1), ("world_model", 1))  # per 8 requests; policy turns dominate a round


@dataclass(frozen=True)
class ServeRequest:
    """One chat request of the serve benchmark, built by the project's own prompt builders."""

    kind: str  # policy | judge | world_model
    messages: list
    max_tokens: int


@dataclass(frozen=True)
class PageSample:
    """A real page of a task: what the policy, the judge and the world model are shown."""

    query: str
    url: str
    observation: str
    thought: str  # the scripted solver's step on this page (history for the next prompt)
    action: str


async def capture_pages(tasks: tuple[str, ...] = SERVE_TASKS, seeds: int = 2, steps: int = 2) -> list[list[PageSample]]:
    """Real MiniWoB observations in headless chromium: for each task and seed, the first
    `steps` pages of the scripted solver's episode (a list per episode)."""
    from evolver_core.suites.miniwob import MiniWoBSuite

    suite = MiniWoBSuite(list(tasks), seeds_per_task=seeds)
    await suite.start()
    episodes: list[list[PageSample]] = []
    try:
        async with launch_browser() as browser:
            env = await browser.new_env(suite, EnvConfig())
            step_s = current_limits().step_deadline_s
            try:
                for task in suite.tasks("train"):
                    obs = await env.within(step_s, env.reset(task))
                    agent = OracleAgent(suite)
                    agent.start(env.task)
                    pages: list[PageSample] = []
                    for _ in range(steps):
                        turn = await agent.act(env.task, obs, [])
                        pages.append(PageSample(env.task.query, obs.url, obs.text, turn.thought, turn.action))
                        if turn.action.startswith("stop"):
                            break
                        obs = await env.within(step_s, env.step(turn.action))
                    episodes.append(pages)
            finally:
                await env.close()
    finally:
        await suite.stop()
    return episodes


def serve_workload(episodes: list[list[PageSample]], n: int, *, judge_max_tokens: int,
                   wm_max_tokens: int, policy_max_tokens: int,
                   mix: tuple[tuple[str, int], ...] = SERVE_MIX) -> list[ServeRequest]:
    """`n` requests shaped like a round's (sizes: a preset's reply budgets): policy turns
    (the current page, the earlier step's thought and action), judge verdicts (the episode's
    pages) and world-model predictions (page + action -> next page), in `mix` proportions,
    interleaved, cycling over the episodes."""
    from evolver_core.contracts.prompt import PastStep, build_messages
    from evolver_core.judge.judge import judge_messages
    from evolver_core.world_model.model import build_wm_messages

    # each kind spread evenly over a cycle (6/1/1: policy x3, judge, policy x3, world_model)
    slots = [((j + 0.5) / count, -count, kind) for kind, count in mix for j in range(count)]
    order = [kind for _, _, kind in sorted(slots)]
    requests = []
    for i in range(n):
        kind, pages = order[i % len(order)], episodes[i % len(episodes)]
        last = pages[-1]
        if kind == "policy":
            history = [PastStep(p.observation, p.thought, p.action) for p in pages[:-1]]
            requests.append(ServeRequest(kind, build_messages(last.query, last.observation, history),
                                         policy_max_tokens))
        elif kind == "judge":
            requests.append(ServeRequest(kind, judge_messages(last.query, None, [p.observation for p in pages]),
                                         judge_max_tokens))
        else:
            first = pages[0]
            requests.append(ServeRequest(kind, build_wm_messages(first.query, first.url, [], first.observation,
                                                                 first.action), wm_max_tokens))
    return requests


async def time_requests(client: Any, requests: list[ServeRequest], concurrency: int, *,
                        by_kind: dict[str, Any] | None = None) -> dict:
    """Send `requests` (temperature 0) with at most `concurrency` in flight; replies/s and tokens.
    `by_kind`: other clients for some request kinds (e.g. an adapter's for policy turns)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(request: ServeRequest):
        async with gate:
            chosen = (by_kind or {}).get(request.kind, client)
            return await chosen.chat(request.messages, temperature=0.0, max_tokens=request.max_tokens, seed=0)

    t0 = time.perf_counter()
    replies = await asyncio.gather(*(one(r) for r in requests))
    elapsed = time.perf_counter() - t0
    return {"concurrency": concurrency, "replies": len(replies), "elapsed_s": round(elapsed, 2),
            "replies_per_s": round(len(replies) / elapsed, 4),
            "prompt_tokens": sum(r.prompt_tokens for r in replies),
            "completion_tokens": sum(r.completion_tokens for r in replies),
            "completion_tokens_per_s": round(sum(r.completion_tokens for r in replies) / elapsed, 2),
            "texts": [r.text for r in replies]}


# -- train: LoRA steps on a machine shared with one busy process -----------------------------

TRAIN_WARMUP_STEPS = 1  # the first step also pays for setup; the clock starts at its end
SPIN = "while True: pass"  # the busy neighbour: one process keeping one core busy
# What would set torch's threading before it starts: every case runs without them.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_TRAIN_FIELDS = ("email", "password", "first name", "last name", "city", "phone", "company", "notes")


def synthetic_sft_examples(n: int, fields_per_page: int = 8) -> list[dict[str, Any]]:
    """`n` policy SFT examples built as `sft.to_sft_examples` builds them (`build_messages`,
    `format_reply`): a MiniWoB-like form of `fields_per_page` labelled textboxes, one past
    step, a typing action; ~450 SmolLM2 tokens each, like the cpu preset's examples."""
    from evolver_core.contracts.observation import Element, Observation, Tab
    from evolver_core.contracts.prompt import PastStep, build_messages
    from evolver_core.contracts.reply import format_reply

    examples = []
    for i in range(n):
        elements = [Element(id=1, role="RootWebArea", name=f"Form {i}", depth=0),
                    Element(id=2, role="StaticText", name=f"Fill in the form of customer {i} and submit it.", depth=1)]
        for j in range(fields_per_page):
            label = _TRAIN_FIELDS[(i + j) % len(_TRAIN_FIELDS)]
            elements += [Element(id=len(elements) + 1, role="StaticText", name=label.title(), depth=1),
                         Element(id=len(elements) + 2, role="textbox", name=label, depth=1,
                                 props={"value": f"{label} {i * j}"} if j % 2 else {})]
        elements.append(Element(id=len(elements) + 1, role="button", name="Submit", depth=1))
        page = Observation(url=f"http://localhost/form-{i}.html", tabs=[Tab(1, f"Form {i}", True)],
                           elements=elements).text
        field_id = 4 + 2 * (i % fields_per_page)
        history = [PastStep(observation=page, thought="The form is empty; I start with the first field.",
                            action="click [4]")]
        messages = build_messages(f"Enter customer {i}'s details and submit the form.", page, history, k=1)
        reply = format_reply(f"The next empty field is {_TRAIN_FIELDS[i % len(_TRAIN_FIELDS)]}.",
                             f"type [{field_id}] [value {i}] [press_enter_after=0]")
        examples.append({"prompt": messages, "completion": [{"role": "assistant", "content": reply}]})
    return examples


def train_step_times(base_model_dir: str, steps: int, warmup: int, share_cpu: bool) -> list[float]:
    """Seconds of each of `steps` LoRA steps after `warmup` (>= 1: a step's time runs from the
    previous step's log) ones, through `finetune` with the default `TrainingConfig` (batch 2).
    Runs in the process the bench starts for one case."""
    from evolver_core.config import TrainingConfig
    from evolver_core.training.finetune import finetune

    total = warmup + steps
    ends: list[float] = []
    training = TrainingConfig(max_steps=total, logging_steps=1)

    def step_ended(step: int, logs: dict[str, float]) -> None:
        if "loss" in logs:  # logging_steps=1: a loss log ends every step (the summary log has none)
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="bench-train-") as out:
        finetune(synthetic_sft_examples(total * training.per_device_train_batch_size), training, base_model_dir,
                 str(Path(out) / "adapter"), on_log=step_ended, share_cpu=share_cpu)
    return [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])]


def _train_case(base_model_dir: str, steps: int, warmup: int, share_cpu: bool, env: dict[str, str]) -> list[float]:
    """`train_step_times` in a fresh Python, so OpenMP starts from `env`'s settings."""
    code = ("import json, sys; from evolver_core.benchmarks import train_step_times; "
            "print(json.dumps(train_step_times(*json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps([base_model_dir, steps, warmup, share_cpu])],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training case failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _case_env() -> dict[str, str]:
    """Our environment without threading settings (so torch starts with its defaults; the
    choice acts at run time), offline, importing this very copy of the project."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV} | {"HF_HUB_OFFLINE": "1"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def bench_train(steps: int = 4, model: str = "smollm2", warmup: int = TRAIN_WARMUP_STEPS) -> dict:
    """Median seconds per LoRA step of torch's default threading and of the training's choice
    (`training.threads`), quiet and beside one busy process; `ratio` = chosen shared / quiet."""
    from evolver_core.models.refs import resolve_model
    from evolver_core.training.threads import usable_cores

    base = resolve_model(model).base
    env = _case_env()
    runs: dict[str, list[float]] = {}
    for load in ("quiet", "shared"):
        busy = subprocess.Popen([sys.executable, "-c", SPIN]) if load == "shared" else None
        try:
            for name, share_cpu in (("default", False), ("chosen", True)):
                runs[f"{name}_{load}"] = _train_case(base, steps, warmup, share_cpu, env)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    step_s = {case: round(statistics.median(times), 2) for case, times in runs.items()}
    return {"bench": "train", "model": model, "cores": usable_cores(), "steps": steps, "warmup": warmup,
            "step_s": step_s, "runs": {case: [round(t, 2) for t in times] for case, times in runs.items()},
            "ratio": round(step_s["chosen_shared"] / step_s["chosen_quiet"], 2), "target": 2,
            "quiet_cost": round(step_s["chosen_quiet"] / step_s["default_quiet"], 3), "quiet_target": 1.1,
            "default_ratio": round(step_s["default_shared"] / step_s["default_quiet"], 2)}


# -- round: every stage of a round against the machine's limits ------------------------------

LIMIT_MATMUL_N = 2048  # fp32 square matmuls: large enough for the BLAS's peak on a few cores
LIMIT_COPY_BYTES = 256 << 20  # far past any CPU cache
LIMIT_REPEATS = 3


def _fastest(fn, repeats: int) -> float:
    """The fastest of `repeats` timed calls of `fn` (after one untimed): the machine's best."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def machine_limits(threads: int | None = None, *, matmul_n: int = LIMIT_MATMUL_N,
                   copy_bytes: int = LIMIT_COPY_BYTES, repeats: int = LIMIT_REPEATS) -> MachineLimits:
    """This machine's limits, measured now in this process with torch on `threads` threads
    (default: the cores training may use, `training.threads.usable_cores`): the FLOP/s of an
    fp32 `matmul_n`-square matmul (prefill and training are matmuls) and the bytes/s of copying
    `copy_bytes` (read and written: decoding streams the weights from memory). Takes ~2 s."""
    import torch

    from evolver_core.training.threads import usable_cores

    threads = threads or usable_cores()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b, out = torch.randn(matmul_n, matmul_n), torch.randn(matmul_n, matmul_n), torch.empty(matmul_n, matmul_n)
        flops = 2 * matmul_n ** 3 / _fastest(lambda: torch.mm(a, b, out=out), repeats)
        src = torch.ones(copy_bytes // 4)
        dst = torch.empty_like(src)
        bandwidth = 2 * copy_bytes / _fastest(lambda: dst.copy_(src), repeats)
    finally:
        torch.set_num_threads(before)
    return MachineLimits(flops_per_s=flops, bytes_per_s=bandwidth, threads=threads)


def model_round_cost(store: Storage, run_id: str, round_: int, base_model_dir: str) -> RoundCost:
    """`reporting.cost.round_cost` of a stored round, for the base model in `base_model_dir`,
    against the limits measured now, in this process."""
    size = weights_size(base_model_dir)
    return round_cost(store, run_id, round_, machine_limits(), size.params, size.bytes)


def stored_base_model(store: Storage, run_id: str, round_: int) -> str:
    """The base model folder a stored round trained on, as its policy adapter names it."""
    adapter = store.local_dir(adapter_uri(store, run_id, round_), download_cache())
    return json.loads((Path(adapter) / "adapter_config.json").read_text())["base_model_name_or_path"]


def bench_round(store: Storage, run_id: str, round_: int, cost: RoundCost) -> dict:
    """`webevolver bench round`'s JSON: every timed stage of the round, its seconds, tokens and
    ratios to the machine's limits (`reporting.cost.RoundCost`)."""
    return {"bench": "round", "run": run_id, "round": round_, "storage": store.uri(run_id), **cost.to_json()}
