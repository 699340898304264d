"""Suites by name, and a deterministic choice of N tasks from one."""

from __future__ import annotations

from collections import defaultdict

from evolver_core.contracts.errors import WebEvolverError
from evolver_core.contracts.task import Suite, Task

OFFLINE_SUITES = ("miniwob", "sandbox")
LIVE_SUITES = ("webvoyager", "mind2web-live", "gaia-web", "openwebvoyager")
SUITES = OFFLINE_SUITES + LIVE_SUITES


MINIWOB_SEEDS_PER_TASK = 10  # per split; more are generated when a run asks for more tasks


def get_suite(name: str, *, miniwob_tasks: str = "easy", min_tasks: int | None = None) -> Suite:
    """A suite by name. `miniwob_tasks`: "easy", "all" or comma-separated MiniWoB task names.
    `min_tasks`: MiniWoB makes enough seeds per task for that many tasks per split (seeds are
    problem instances: any number exist); other suites hold what their sites or files hold."""
    if name == "miniwob":
        from evolver_core.suites.miniwob import EASY_TASKS, MiniWoBSuite, all_task_names

        names = miniwob_tasks if miniwob_tasks in ("easy", "all") else [n.strip() for n in miniwob_tasks.split(",")]
        count = len({"easy": EASY_TASKS, "all": all_task_names()}.get(miniwob_tasks, names)) if names else 1
        seeds = max(MINIWOB_SEEDS_PER_TASK, -(-(min_tasks or 0) // max(count, 1)))
        return MiniWoBSuite(names, seeds_per_task=seeds)
    if name == "sandbox":
        from evolver_core.suites.sandbox import SandboxSuite

        return SandboxSuite()
    if name in LIVE_SUITES:
        from evolver_core.suites.live import live_suites

        return live_suites()[name]
    raise ValueError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")


def split_seeds(name: str) -> dict[str, int]:
    """The first seed of each split of a suite whose splits are ranges of seeds (MiniWoB's
    train, validation and test); {} for the others (their tasks are sites' or files')."""
    if name == "miniwob":
        from evolver_core.suites.miniwob import SPLIT_SEEDS

        return dict(SPLIT_SEEDS)
    return {}


class NotEnoughTasks(WebEvolverError, ValueError):
    """A run asked for more tasks than a suite's split holds."""


def select_tasks(tasks: list[Task], n: int | None, *, where: str = "the suite") -> list[Task]:
    """The first `n` tasks taken round-robin over sites, so a small run still covers every
    site. Asking for more than there are is an error, never a silent cap."""
    if n is not None and n > len(tasks):
        raise NotEnoughTasks(f"{n} tasks asked of {where}, which holds {len(tasks)}; ask for at most {len(tasks)}, "
                             f"or None for all")
    by_site: dict[str, list[Task]] = defaultdict(list)
    for t in tasks:
        by_site[t.site].append(t)
    ordered: list[Task] = []
    queues = list(by_site.values())
    for i in range(max((len(q) for q in queues), default=0)):
        ordered.extend(q[i] for q in queues if i < len(q))
    return ordered if n is None else ordered[:n]
