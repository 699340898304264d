"""What every task suite provides.

A suite yields `Task`s (`id, suite, site, start_url, query`), knows how to begin an episode
on a Playwright page, and where it can, scores the episode with a programmatic evaluator
(reward in [0, 1]). Suites that serve their own pages (miniwob, sandbox) start an HTTP
server on 127.0.0.1 in `start()`; live suites need internet and say so in `start()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from evolver_core.contracts.errors import WebEvolverError

if TYPE_CHECKING:
    from playwright.async_api import Page

    from evolver_core.contracts.reply import Reply
    from evolver_core.contracts.observation import Observation


class TaskFileError(WebEvolverError, ValueError):
    """A task file is malformed; the message names the file, line and field."""

    def __init__(self, path: str, line: int | None, field_name: str | None, problem: str):
        where = path if line is None else f"{path}:{line}"
        what = f" field {field_name!r}" if field_name else ""
        super().__init__(f"{where}:{what} {problem}")
        self.path, self.line, self.field, self.problem = path, line, field_name, problem


class SuiteUnavailable(WebEvolverError, RuntimeError):
    """The suite cannot run here (e.g. a live-website suite on a machine without internet)."""


@dataclass(frozen=True)
class Task:
    id: str
    suite: str
    site: str  # the host (or logical site name) the task lives on
    start_url: str
    query: str
    split: str = "train"
    seed: int | None = None
    allowed_hosts: tuple[str, ...] = ()  # navigation allowlist; empty = host of start_url
    gold: dict[str, Any] = field(default_factory=dict)  # gold answer / state checks / key nodes
    meta: dict[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> "Task":
        return replace(self, **changes)


@dataclass(frozen=True)
class ActionEvent:
    """An element the agent acted on (Mind2Web-Live's element key nodes match these)."""

    url: str  # the page's URL when the action was taken
    element_path: str  # CSS path from <html>, e.g. "html > body > div:nth-of-type(2) > a"
    element_value: str  # typed text, chosen option, or the element's value / text
    action: str = "click"  # "click" | "type" | "select"
    matched_selectors: frozenset[str] = frozenset()  # which of the task's watch_selectors name it


@dataclass
class EpisodeState:
    """What an evaluator may look at when an episode ends."""

    task: Task
    answer: str | None  # the `stop [answer]` text, None if the agent never stopped
    urls: list[str]  # every URL the main page visited, in order
    observations: list["Observation"]
    page: "Page | None"  # still open: evaluators may read page state (e.g. MiniWoB's WOB_*)
    events: list[ActionEvent] = field(default_factory=list)


class Solver(Protocol):
    """A scripted, per-episode solver (the suites' oracle policy used for demonstrations)."""

    def act(self, obs: "Observation") -> "Reply": ...


class Suite(Protocol):
    name: str

    def tasks(self, split: str | None = None) -> list[Task]:
        """All tasks, or those of one split ("train" / "test")."""

    async def start(self) -> None:
        """Start whatever the suite serves; fills in base URLs. Idempotent."""

    async def stop(self) -> None: ...

    async def begin(self, task: Task, page: "Page") -> Task:
        """Put the page at the task's start state; returns the task with its final query."""

    async def evaluate(self, state: EpisodeState) -> float | None:
        """Reward in [0, 1], or None when the suite has no programmatic evaluator."""

    def solver(self, task: Task) -> Solver | None:
        """A scripted solver for this task, or None if the suite has none."""
