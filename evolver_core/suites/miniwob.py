"""MiniWoB++ as a task suite: the pages of the `miniwob` wheel served on 127.0.0.1.

No Selenium: an episode is started in the page itself (`Math.seedrandom(seed)`, then
`core.startEpisodeReal()`), the utterance is read with `core.getUtterance()`, and the reward
from the `WOB_*` globals. The page is reused between episodes of the same task (a new
context per episode is ~10x slower). Changes to MiniWoB's defaults, and why:
- the 10 s episode timer is lifted (an LLM on CPU needs seconds per step) and the raw,
  not time-discounted, reward is used;
- the reward/timer panel is hidden (it is not part of the task and costs tokens);
- the "START" cover shown after an episode ends no longer starts a new episode when
  clicked, so an agent that keeps clicking cannot wipe the reward it earned.
Reward: `max(0, WOB_RAW_REWARD_GLOBAL)` once the episode is done, else 0; the episode ends
when the page says it is done (`done`), so demonstrations carry no `stop` MiniWoB never asks for.
Task ids are `miniwob/<name>/<seed>`; train seeds are 0.., validation seeds 50000.., test
seeds 100000.., so the splits never share a problem instance. Validation is where a value
is tuned (a margin, a threshold, which task types a preset trains); test seeds are read
once per reported number.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import miniwob

from evolver_core.contracts.task import EpisodeState, Solver, Task
from evolver_core.suites.httpserver import LocalHTTPServer
from evolver_core.suites.miniwob_solvers import SOLVERS

HTML_DIR = Path(os.path.dirname(miniwob.__file__)) / "html"
# The first seed of each split; a split holds at most the gap to the next one.
SPLIT_SEEDS: dict[str, int] = {"train": 0, "validation": 50_000, "test": 100_000}
# Tasks our scripted solvers complete; the default subset for demonstrations and smoke runs.
EASY_TASKS: tuple[str, ...] = tuple(sorted(SOLVERS))

_BEGIN_JS = """
async (seed) => {
  for (let i = 0; i < 100 && (typeof core === 'undefined' || typeof genProblem === 'undefined'); i++)
    await new Promise(r => setTimeout(r, 20));
  Math.seedrandom(seed);
  core.EPISODE_MAX_TIME = 24 * 3600 * 1000;
  if (core.cover_div === null) core.startEpisode();
  core.startEpisodeReal();
  core.cover_div.onclick = null;
  const panel = document.getElementById('reward-display');
  if (panel) panel.style.display = 'none';
  for (let i = 0; i < 100 && !WOB_TASK_READY; i++) await new Promise(r => setTimeout(r, 20));
  return core.getUtterance();
}
"""


def all_task_names() -> list[str]:
    return sorted(p.stem for p in (HTML_DIR / "miniwob").glob("*.html"))


class MiniWoBSuite:
    name = "miniwob"

    def __init__(self, task_names: list[str] | tuple[str, ...] | str = "easy", seeds_per_task: int = 10):
        if task_names == "easy":
            task_names = EASY_TASKS
        elif task_names == "all":
            task_names = all_task_names()
        unknown = sorted(set(task_names) - set(all_task_names()))
        if unknown:
            raise ValueError(f"unknown MiniWoB tasks: {', '.join(unknown)}")
        if seeds_per_task > SPLIT_SEEDS["validation"]:
            raise ValueError(f"at most {SPLIT_SEEDS['validation']} seeds per task and split, got {seeds_per_task}")
        self.task_names = list(task_names)
        self.seeds_per_task = seeds_per_task
        self._server: LocalHTTPServer | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("MiniWoBSuite.start() must run before tasks() (it serves the pages)")
        return self._server.url

    def tasks(self, split: str | None = None) -> list[Task]:
        """The tasks of `split` (train, validation, test), or of all three."""
        if split is not None and split not in SPLIT_SEEDS:
            raise ValueError(f"unknown MiniWoB split {split!r}; choose one of {', '.join(SPLIT_SEEDS)}")
        out = []
        for sp in SPLIT_SEEDS if split is None else [split]:
            offset = SPLIT_SEEDS[sp]
            for name in self.task_names:
                for seed in range(offset, offset + self.seeds_per_task):
                    out.append(Task(
                        id=f"miniwob/{name}/{seed}", suite=self.name, site=name,
                        start_url=f"{self.base_url}miniwob/{name}.html", query="", split=sp, seed=seed,
                        allowed_hosts=(self._server.netloc,) if self._server else (),
                        meta={"task_name": name},
                    ))
        return out

    async def start(self) -> None:
        if self._server is None:
            self._server = LocalHTTPServer.static(str(HTML_DIR))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def begin(self, task: Task, page: Any) -> Task:
        if page.url.split("?")[0] != task.start_url:
            await page.goto(task.start_url, wait_until="load")
        utterance = await page.evaluate(_BEGIN_JS, task.seed if task.seed is not None else 0)
        return task.with_(query=utterance)

    async def evaluate(self, state: EpisodeState) -> float | None:
        """Reward once the episode is done, else 0. A crashed or closed page raises (the
        episode is an error episode, not a failure); a page the agent navigated away from
        has no reward globals and scores 0."""
        if state.page is None:
            return 0.0
        done, raw = await self._wob_state(state.page)
        return max(0.0, float(raw)) if done else 0.0

    async def done(self, state: EpisodeState) -> bool:
        """MiniWoB ends its episode itself (`WOB_DONE`), as BrowserGym's MiniWoB does."""
        return state.page is not None and (await self._wob_state(state.page))[0]

    @staticmethod
    async def _wob_state(page: Any) -> tuple[bool, float]:
        if page.is_closed():
            raise RuntimeError("the MiniWoB page was closed before its reward was read")
        try:
            done, raw = await page.evaluate(
                "typeof WOB_DONE_GLOBAL === 'undefined' ? [false, 0] : [WOB_DONE_GLOBAL, WOB_RAW_REWARD_GLOBAL]")
        except Exception as exc:  # the renderer crashed, or the page is navigating
            raise RuntimeError(f"could not read the MiniWoB reward: {exc}") from exc
        return bool(done), float(raw or 0.0)

    def solver(self, task: Task) -> Solver | None:
        factory = SOLVERS.get(task.meta.get("task_name", ""))
        return factory(task) if factory else None
