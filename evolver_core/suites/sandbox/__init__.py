"""The sandbox suite: the project's own offline websites, with templated tasks and gold answers.

Why: the live WebVoyager sites need internet and change under our feet; MiniWoB++ pages are
single widgets. These five multi-page sites (a shop, a recipe site, a code host, a
dictionary and a news site) are modelled on WebVoyager's kinds of sites, run on 127.0.0.1
with stdlib servers, and generate their data from fixed seeds, so every run sees the same
pages and the same tasks. They share a small framework: web.py (serving, routing, visitor
state, `Site.render`), spec.py (task specs, plans, the split) and `templates/` (Jinja2: a
base layout and shared widgets). A site is one module (its data, its routes, its task
templates, each an `@template` method) and a folder `templates/<site>/` (its pages). The suite:

* `tasks(split)` - 435 tasks, 87 per site: information-seeking ones (gold answer plus
  aliases) and state-changing ones (gold server state, e.g. the cart). The test split is
  not a copy of training: some templates are test-only, and the entities of test tasks
  never appear in train tasks (spec.py).
* `begin` gives the browser context a fresh visitor (`/__reset`) and opens the site's home
  page; `evaluate` matches the answer (answers.py) or reads `/__state` through the page's
  context; `solver` follows the task's plan, looking only at observations (solver.py).

Task ids are `sandbox/<site>/<template>/<nnn>` and do not depend on ports, so a task that
was stored in another run is resolved to this run's URLs by `begin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evolver_core.contracts.task import EpisodeState, Task
from evolver_core.suites.sandbox.answers import matches
from evolver_core.suites.sandbox.code import Code
from evolver_core.suites.sandbox.dictionary import Dictionary
from evolver_core.suites.sandbox.news import News
from evolver_core.suites.sandbox.recipes import Recipes
from evolver_core.suites.sandbox.shop import Shop
from evolver_core.suites.sandbox.solver import PlanSolver
from evolver_core.suites.sandbox.spec import TaskSpec
from evolver_core.suites.sandbox.web import Site, SiteServer

if TYPE_CHECKING:
    from playwright.async_api import Page

__all__ = ["SandboxSuite"]

SITE_TYPES: tuple[type[Site], ...] = (Shop, Recipes, Code, Dictionary, News)


class SandboxSuite:
    name = "sandbox"

    def __init__(self) -> None:
        self._servers = {site.name: SiteServer(site) for site in (cls() for cls in SITE_TYPES)}
        self._specs = [(name, spec) for name, server in self._servers.items() for spec in server.site.task_specs()]
        self._tasks: dict[str, Task] = {}

    @property
    def sites(self) -> dict[str, Site]:
        return {name: server.site for name, server in self._servers.items()}

    def base_url(self, site: str) -> str:
        return self._servers[site].base_url

    def tasks(self, split: str | None = None) -> list[Task]:
        if not self._tasks:
            raise RuntimeError("SandboxSuite.tasks() needs the sites' addresses: `await suite.start()` first")
        return [t for t in self._tasks.values() if split is None or t.split == split]

    async def start(self) -> None:
        for server in self._servers.values():
            server.start()
        if not self._tasks:
            self._tasks = {t.id: t for t in (self._task(site, spec) for site, spec in self._specs)}

    async def stop(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._tasks = {}

    async def begin(self, task: Task, page: "Page") -> Task:
        current = self._tasks.get(task.id, task)
        await page.context.request.post(f"{self.base_url(current.site)}/__reset")
        await page.goto(current.start_url)
        return current

    async def evaluate(self, state: EpisodeState) -> float:
        gold = state.task.gold
        if "answer" in gold:
            return 1.0 if matches(state.answer, gold) else 0.0
        if state.page is None:
            return 0.0
        try:
            response = await state.page.context.request.get(f"{self.base_url(state.task.site)}/__state")
            actual = await response.json()
        except Exception:  # noqa: BLE001 - a closed page or a dead server scores 0, not a crash
            return 0.0
        return 1.0 if all(actual.get(key) == want for key, want in gold["state"].items()) else 0.0

    def solver(self, task: Task) -> PlanSolver:
        return PlanSolver(task.meta["plan"])

    def _task(self, site: str, spec: TaskSpec) -> Task:
        server = self._servers[site]
        return Task(
            id=f"sandbox/{site}/{spec.template}/{spec.index:03d}",
            suite=self.name,
            site=site,
            start_url=f"{server.base_url}/",
            query=spec.query,
            split=spec.split,
            allowed_hosts=(server.host,),
            gold=spec.gold,
            meta={"template": spec.template, "entities": list(spec.entities), "plan": [dict(s) for s in spec.plan]},
        )
