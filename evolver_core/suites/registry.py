"""Suites by name, and a deterministic choice of N tasks from one."""

from __future__ import annotations

from collections import defaultdict

from evolver_core.suites.base import Suite, Task

OFFLINE_SUITES = ("miniwob", "sandbox")
LIVE_SUITES = ("webvoyager", "mind2web-live", "gaia-web", "openwebvoyager")
SUITES = OFFLINE_SUITES + LIVE_SUITES


def get_suite(name: str, *, miniwob_tasks: str = "easy", seeds_per_task: int = 10) -> Suite:
    """A suite by name. `miniwob_tasks`: "easy", "all" or comma-separated MiniWoB task names."""
    if name == "miniwob":
        from evolver_core.suites.miniwob import MiniWoBSuite

        names = miniwob_tasks if miniwob_tasks in ("easy", "all") else [n.strip() for n in miniwob_tasks.split(",")]
        return MiniWoBSuite(names, seeds_per_task=seeds_per_task)
    if name == "sandbox":
        from evolver_core.suites.sandbox import SandboxSuite

        return SandboxSuite()
    if name in LIVE_SUITES:
        from evolver_core.suites.live import live_suites

        return live_suites()[name]
    raise ValueError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")


def select_tasks(tasks: list[Task], n: int | None) -> list[Task]:
    """The first `n` tasks taken round-robin over sites, so a small run still covers every site."""
    by_site: dict[str, list[Task]] = defaultdict(list)
    for t in tasks:
        by_site[t.site].append(t)
    ordered: list[Task] = []
    queues = list(by_site.values())
    for i in range(max((len(q) for q in queues), default=0)):
        ordered.extend(q[i] for q in queues if i < len(q))
    return ordered if n is None else ordered[:n]
