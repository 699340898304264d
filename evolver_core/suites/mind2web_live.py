"""Mind2Web-Live: 104 tasks on live websites, scored by key nodes (WebCanvas).

Each task lists key nodes: states a correct episode must pass through, such as "a visited
URL has `store=2630` in its query" or "the agent typed `abc@test.com` into `#email`". The
reward is WebCanvas's completion rate, the mean node score; the task succeeds when every
node scores 1. Node scores follow WebCanvas (`evaluate/step_score.py` and
`evaluate/evaluate_utils.py` in iMeanAI/WebCanvas); a node, once matched, stays matched:

- `url_exactly_match` / `url_included_match`: on every URL the episode visited, take the
  value of the query parameter `key` (the whole URL when `key` is empty), percent-decode it,
  and compare it to `reference_answer`: equal / containing it. Comparisons are
  case-sensitive, as in WebCanvas.
- `element_path_exactly_match` / `element_path_included_match`: an action on the node's
  site (WebCanvas's `netloc` label: `www.imdb.com` -> `imdb`, `industry.flightaware.com` ->
  `industry`) hit the element the reference CSS selector names. WebCanvas decides "same
  element" by resolving both selectors in the live page; after the episode that page is
  gone, so the browser environment resolves the task's reference selectors at action time
  with `MATCHING_SELECTORS_JS (browser/execute.py)` (a reference naming a `<span>` also matches its parent, as in
  WebCanvas) and records the hits in `ActionEvent.matched_selectors`. Without those
  hits the recorded `element_path` must equal the reference (whitespace around `>`
  ignored) / contain it.
- `element_value_exactly_match` / `element_value_included_match`: an action on the node's
  site, on the element named by `path` when the node gives one, had a value (text typed,
  or the element's value for clicks) equal to / containing `reference_answer`.
- `url_semantic_match` / `element_value_semantic_match`: `reference_answer` is an
  instruction for an LLM ("Decide whether are searching for wireless headphones") applied
  to the URL's parameter / the element's value. They need a `SemanticMatcher`; without one
  the node scores 0 and its result says `evaluable=False` (22 of the 443 nodes).

The browser environment fills `EpisodeState.events` (a list of `ActionEvent`, one per
click / type / select on an element); `evaluate` reads it with `getattr(state, "events", [])`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from evolver_core.contracts.task import ActionEvent, EpisodeState, Task
from evolver_core.suites.taskfile import Record, allowed_hosts, build_tasks, data_dir, read_records

SUITE = "mind2web-live"
TASK_FILE = "mind2web-live/mind2web-live_test_20241024.json"

TARGETS = ("url", "element_path", "element_value")
MODES = ("exactly", "included", "semantic")
MATCH_FUNCTIONS = tuple(f"{target}_{mode}_match" for target in TARGETS for mode in MODES)

SemanticMatcher = Callable[[str, str], Awaitable[float]]
"""`(text, instruction) -> score in [0, 1]`: an LLM's verdict for the semantic nodes."""

@dataclass(frozen=True)
class KeyNode:
    """One WebCanvas evaluation step of a task."""

    function: str  # one of MATCH_FUNCTIONS
    reference: str  # WebCanvas's `reference_answer`
    url: str  # where the annotator saw the node
    key: str = ""  # url_* nodes: the query parameter compared ("" = the whole URL)
    netloc: str = ""  # element_* nodes: the site label the action must be on
    path: str = ""  # element_value_* nodes: the selector of the element the value goes into

    @property
    def target(self) -> str:
        return next(target for target in TARGETS if self.function.startswith(target + "_"))

    @property
    def mode(self) -> str:
        return self.function.removeprefix(self.target + "_").removesuffix("_match")


@dataclass(frozen=True)
class NodeResult:
    node: KeyNode
    score: float  # in [0, 1]
    evaluable: bool = True  # False: a semantic node scored 0 for want of an LLM


@dataclass(frozen=True)
class KeyNodeReport:
    results: tuple[NodeResult, ...]

    @property
    def completion(self) -> float:
        """WebCanvas's completion rate: the mean node score."""
        return sum(result.score for result in self.results) / len(self.results)

    @property
    def task_success(self) -> bool:
        return all(result.score >= 1 for result in self.results)

    @property
    def not_evaluable(self) -> int:
        return sum(not result.evaluable for result in self.results)


def webcanvas_netloc(url: str) -> str:
    """WebCanvas's site label: the label after `www.`, else the host's first label."""
    labels = (urlsplit(url).hostname or "").split(".")
    if labels[0].startswith("www"):
        return labels[1] if len(labels) > 2 else ""
    return labels[0] if len(labels) > 1 else ""


def _url_value(url: str, key: str) -> str | None:
    if not key:
        return unquote(url)
    values = parse_qs(urlsplit(url).query).get(key)
    return unquote(values[0]) if values else None


def _selector(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\s*>\s*", " > ", text)).strip()


def _names(event: ActionEvent, selector: str) -> bool:
    wanted = _selector(selector)
    return any(_selector(s) == wanted for s in (event.element_path, *event.matched_selectors))


def _candidates(node: KeyNode, urls: Sequence[str], events: Sequence[ActionEvent]) -> list[str]:
    """The texts of the episode this node compares its reference with."""
    if node.target == "url":
        return [value for url in urls if (value := _url_value(url, node.key)) is not None]
    on_site = [event for event in events if webcanvas_netloc(event.url) == node.netloc]
    if node.target == "element_path":
        return [_selector(s) for event in on_site for s in (event.element_path, *event.matched_selectors)]
    return [event.element_value for event in on_site if not node.path or _names(event, node.path)]


async def _score_node(
    node: KeyNode, urls: Sequence[str], events: Sequence[ActionEvent], semantic: SemanticMatcher | None = None
) -> NodeResult:
    texts = _candidates(node, urls, events)
    if node.mode == "semantic":
        if semantic is None:
            return NodeResult(node, 0.0, evaluable=False)
        scores = [await semantic(text, node.reference) for text in texts if text]
        return NodeResult(node, min(1.0, max([0.0, *scores])))
    reference = _selector(node.reference) if node.target == "element_path" else node.reference
    if node.mode == "exactly":
        matched = any(text == reference for text in texts)
    else:
        matched = any(reference in text for text in texts)
    return NodeResult(node, 1.0 if matched else 0.0)


def key_nodes(task: Task) -> list[KeyNode]:
    return [KeyNode(**node) for node in task.gold["key_nodes"]]


def key_node_selectors(task: Task) -> tuple[str, ...]:
    """Every selector the task's element nodes name: what the env checks on each acted-on element."""
    return _selectors(key_nodes(task))


def _selectors(nodes: Sequence[KeyNode]) -> tuple[str, ...]:
    nodes = [node for node in nodes if node.target != "url"]
    selectors = [node.reference for node in nodes if node.target == "element_path"]
    return tuple(dict.fromkeys(selectors + [node.path for node in nodes if node.path]))


async def score_key_nodes(
    task: Task, urls: Sequence[str], events: Sequence[ActionEvent], semantic: SemanticMatcher | None = None
) -> KeyNodeReport:
    """Score every key node of `task` on an episode's visited URLs and element actions."""
    all_urls = list(dict.fromkeys([*urls, *(event.url for event in events)]))
    return KeyNodeReport(tuple([await _score_node(node, all_urls, events, semantic) for node in key_nodes(task)]))


async def evaluate_key_nodes(state: EpisodeState, semantic: SemanticMatcher | None = None) -> float:
    """The episode's completion rate (reads `state.events`, which the env fills)."""
    events: Sequence[ActionEvent] = getattr(state, "events", [])
    return (await score_key_nodes(state.task, state.urls, events, semantic)).completion


def _key_node(record: Record) -> KeyNode:
    function = record.text("match_function_name")
    if function not in MATCH_FUNCTIONS:
        raise record.error("match_function_name", f"unknown function {function!r}; expected one of {MATCH_FUNCTIONS}")
    content = record.nested("content", record.get("content", dict))
    node: dict[str, Any] = {
        "function": function, "reference": content.text("reference_answer"), "url": content.url("url"),
    }
    if function.startswith("url_"):
        node["key"] = content.optional("key", str) or ""
    else:
        node["netloc"] = content.text("netloc")
        node["path"] = content.optional("path", str) or ""
    return KeyNode(**node)


def _task(record: Record) -> Task:
    index = record.get("index", int)
    query = record.text("task")
    length = record.get("reference_task_length", int)
    evaluation = record.get("evaluation", list)
    if not evaluation:
        raise record.error("evaluation", "must list at least one key node")
    nodes = [_key_node(record.nested(f"evaluation[{i}]", item)) for i, item in enumerate(evaluation)]
    # The first node is always "reached the site"; its recorded URL may carry stale dates and
    # ad-tracking parameters, so the episode starts at that site's root.
    first = urlsplit(nodes[0].url)
    start_url = f"{first.scheme}://{first.netloc}/"
    return Task(
        id=f"{SUITE}/{index}",
        suite=SUITE,
        site=first.hostname or "",
        start_url=start_url,
        query=query,
        split="test",
        allowed_hosts=allowed_hosts(start_url, *(node.url for node in nodes)),
        gold={"key_nodes": [asdict(node) for node in nodes]},
        meta={"index": index, "reference_task_length": length,
              # the env checks each acted-on element against these (ActionEvent.matched_selectors)
              "watch_selectors": list(_selectors(nodes))},
    )


def load_mind2web_live() -> list[Task]:
    return build_tasks(read_records(data_dir() / TASK_FILE), _task)
