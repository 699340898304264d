"""Task suites on live websites: WebVoyager, GAIA-web, OpenWebVoyager, Mind2Web-Live.

These are the paper's training queries and benchmarks. Their task files ship in
`data/tasks/` (see `data/README.md`), so `tasks()` works offline; running an episode needs
internet access, which `start()` checks cheaply (a TCP connect to the first task's site,
2 s at most) so a run fails at once with a clear message instead of timing out page by page.
`WEBEVOLVER_OFFLINE=1` gives that answer without probing.

Scoring: WebVoyager and OpenWebVoyager tasks have no programmatic evaluator (`evaluate`
returns None; the LLM judge decides). GAIA-web compares the final answer with GAIA's
"Final answer" after normalisation (`gaia_answer_matches`). Mind2Web-Live scores key nodes
(`mind2web_live`). No suite has a scripted solver.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import string
from collections.abc import Awaitable, Callable
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from evolver_core.settings import VARIABLES, settings
from evolver_core.contracts.task import EpisodeState, Solver, Suite, SuiteUnavailable, Task, TaskFileError
from evolver_core.suites.mind2web_live import SemanticMatcher, evaluate_key_nodes, load_mind2web_live
from evolver_core.suites.taskfile import Record, build_tasks, data_dir, read_records, web_task

if TYPE_CHECKING:
    from playwright.async_api import Page

OFFLINE_ENV = VARIABLES["offline"]
PROBE_TIMEOUT_S = 2.0

Loader = Callable[[], list[Task]]
Scorer = Callable[[EpisodeState], Awaitable[float | None]]


async def reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to `host:port` (name lookup included) opens within `timeout`."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with suppress(OSError):
        await writer.wait_closed()
    return True


class LiveSuite:
    """A suite of tasks on live websites: loads lazily, checks internet access in `start()`."""

    def __init__(self, name: str, load: Loader, score: Scorer | None = None):
        self.name = name
        self._load = load
        self._score = score
        self._tasks: list[Task] | None = None
        self._online = False

    def tasks(self, split: str | None = None) -> list[Task]:
        if self._tasks is None:
            self._tasks = self._load()
        return [task for task in self._tasks if split is None or task.split == split]

    async def start(self) -> None:
        if self._online:
            return
        probe = urlsplit(self.tasks()[0].start_url)
        where = f"{probe.scheme}://{probe.hostname}/"
        if settings().offline:
            raise self._unavailable(where, f"{OFFLINE_ENV}=1 says this machine has none")
        if not await reachable(probe.hostname or "", probe.port or (443 if probe.scheme == "https" else 80)):
            raise self._unavailable(where, "this machine has none")
        self._online = True

    def _unavailable(self, where: str, reason: str) -> SuiteUnavailable:
        return SuiteUnavailable(
            f"{self.name} needs internet access to live websites ({where}); {reason}. "
            "Use the offline suites 'miniwob' or 'sandbox'."
        )

    async def stop(self) -> None:
        self._online = False

    async def begin(self, task: Task, page: Page) -> Task:
        await page.goto(task.start_url, wait_until="domcontentloaded")
        return task

    async def evaluate(self, state: EpisodeState) -> float | None:
        return None if self._score is None else await self._score(state)

    def solver(self, task: Task) -> Solver | None:
        return None


# ---- WebVoyager -------------------------------------------------------------------------


def _reference_answers(path: Path) -> dict[str, dict[str, Any]]:
    """`reference_answer.json` as gold per WebVoyager task id (`Allrecipes--0`)."""
    shown = str(path)
    try:
        sites = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TaskFileError(shown, getattr(exc, "lineno", None), None, f"cannot be read: {exc}") from exc
    if not isinstance(sites, dict):
        raise TaskFileError(shown, None, None, "must be a JSON object of sites")
    root = Record(shown, None, sites)
    gold: dict[str, dict[str, Any]] = {}
    for web_name, value in sites.items():
        site = root.nested(web_name, value)
        notice = (site.optional("notice", str) or "").strip()
        for i, item in enumerate(site.get("answers", list)):
            answer = site.nested(f"answers[{i}]", item)
            gold[f"{web_name}--{answer.get('id', int)}"] = {
                "answer": answer.get("ans", str),
                "answer_type": answer.text("type"),
                "notice": notice,
            }
    return gold


def load_webvoyager() -> list[Task]:
    """The 643 WebVoyager tasks (split "test"), with reference answers as gold."""
    root = data_dir() / "webvoyager"
    answers = _reference_answers(root / "reference_answer.json")

    def make(record: Record) -> Task:
        return web_task(record, "webvoyager", split="test", gold=answers.get(record.text("id"), {}))

    return build_tasks(read_records(root / "WebVoyager_data.jsonl"), make)


# ---- GAIA-web ---------------------------------------------------------------------------

_PUNCTUATION = str.maketrans("", "", string.punctuation + string.whitespace)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _answer_number(answer: str) -> float | None:
    """The answer as a number, ignoring `$`, `%`, thousands separators and spaces."""
    return _number(re.sub(r"[$%,\s]", "", answer))


def _element_matches(answer: str, truth: str) -> bool:
    wanted = _number(truth)
    if wanted is not None:
        got = _answer_number(answer)
        return got is not None and math.isclose(got, wanted, rel_tol=1e-9, abs_tol=1e-12)
    return answer.lower().translate(_PUNCTUATION) == truth.lower().translate(_PUNCTUATION)


def gaia_answer_matches(answer: str, truth: str) -> bool:
    """GAIA's scoring rule: numbers compare numerically; a truth with `,` or `;` is a list
    compared element by element (same length); other text compares ignoring case,
    whitespace and punctuation."""
    if _number(truth) is None and re.search(r"[,;]", truth):
        got, wanted = re.split(r"[,;]", answer), re.split(r"[,;]", truth)
        return len(got) == len(wanted) and all(_element_matches(g, w) for g, w in zip(got, wanted, strict=True))
    return _element_matches(answer, truth)


async def score_gaia(state: EpisodeState) -> float:
    """1.0 when the final answer matches GAIA's; 0.0 when it does not or none was given."""
    if state.answer is None:
        return 0.0
    return 1.0 if gaia_answer_matches(state.answer, state.task.gold["answer"]) else 0.0


def load_gaia_web() -> list[Task]:
    """The 90 GAIA level-1/2 questions of the WebVoyager repository (split "test")."""

    def make(record: Record) -> Task:
        gold = {"answer": record.get("Final answer", str)}
        meta = {"level": record.get("Level", int), "gaia_task_id": record.text("task_id")}
        return web_task(record, "gaia-web", split="test", gold=gold, meta=meta)

    return build_tasks(read_records(data_dir() / "webvoyager" / "GAIA_web.jsonl"), make)


# ---- OpenWebVoyager ---------------------------------------------------------------------

_OPENWEBVOYAGER_FILE = re.compile(r"data_for_(training|test)__(.+)\.jsonl")


def load_openwebvoyager() -> list[Task]:
    """Every OpenWebVoyager query file: `data_for_training__<set>__<collection>.jsonl` as split
    "train" (set "IL", "optim_iter1".."3"), `data_for_test__<collection>.jsonl` as split
    "test" (set "test"). Ids are `openwebvoyager/<collection>/<id>`: the same WebVoyager id
    recurs across collections. `meta` carries `set` and `collection`."""
    folder = data_dir() / "openwebvoyager"
    matches = [m for path in sorted(folder.glob("*.jsonl")) if (m := _OPENWEBVOYAGER_FILE.fullmatch(path.name))]
    if not matches:
        problem = "holds no data_for_training__*.jsonl / data_for_test__*.jsonl files"
        raise TaskFileError(str(folder), None, None, problem)
    tasks: list[Task] = []
    for match in matches:
        split = "train" if match[1] == "training" else "test"
        set_name, _, collection = match[2].rpartition("__")
        meta = {"set": set_name or "test", "collection": collection}
        make = partial(web_task, suite="openwebvoyager", split=split, collection=collection, meta=meta)
        tasks += build_tasks(read_records(folder / match[0]), make)
    return tasks


# ---- registry ---------------------------------------------------------------------------


def live_suites(semantic: SemanticMatcher | None = None) -> dict[str, Suite]:
    """The live-website suites by name. `semantic` scores Mind2Web-Live's semantic key nodes
    (an LLM); without it those nodes count as unmatched."""
    suites = [
        LiveSuite("webvoyager", load_webvoyager),
        LiveSuite("gaia-web", load_gaia_web, score_gaia),
        LiveSuite("openwebvoyager", load_openwebvoyager),
        LiveSuite("mind2web-live", load_mind2web_live, partial(evaluate_key_nodes, semantic=semantic)),
    ]
    return {suite.name: suite for suite in suites}
