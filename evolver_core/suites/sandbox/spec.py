"""Task specs, solver plans, and the train/test split of the sandbox suite.

A site turns its seeded data into *drafts*: every possible task of a template (one `@template`
method each, named once, in its decorator), each with its query, gold, the entities it names or
asks about, and a plan for the scripted solver (`Site.about` builds the common kind: open one
entity's page, then read or do something there).
`choose` then picks a fixed number per split so that the test split is not a copy of training:

* each site's entities are partitioned once into a train pool and a test pool (`Pools`);
  a draft may only go to the split whose pool holds all of its entities, so no entity of a
  test task appears in any train task;
* some templates are test-only: their phrasing and solution path are never trained on;
* picks come from a seeded shuffle, so task ids (`sandbox/<site>/<template>/<nnn>`) are stable.

Entity keys look like `shop:product:NW-1042`. A key may name its parent first, separated by
'/', e.g. `code:owner:lunar-labs/repo:fast-json`: the pool is decided by the part before the
first '/', so all of an owner's repositories (or an author's articles) share one pool.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from random import Random
from typing import Any, Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")

TEST_FRACTION = 0.3
N_TRAIN, N_TEST, N_TEST_ONLY = 12, 3, 6  # tasks per template and split


@dataclass(frozen=True)
class TaskSpec:
    query: str
    gold: dict[str, Any]
    entities: tuple[str, ...]
    plan: tuple[dict[str, Any], ...]
    template: str = ""  # these three are set by `choose`
    split: str = ""
    index: int = 0


class Pools:
    """A seeded partition of a site's root entities into a train pool and a test pool."""

    def __init__(self, site: str, roots: Iterable[str]):
        ordered = sorted(set(roots))
        Random(f"sandbox-pools:{site}").shuffle(ordered)
        self._test = set(ordered[: round(len(ordered) * TEST_FRACTION)])
        self._all = set(ordered)

    def of(self, key: str) -> str:
        root = key.split("/")[0]
        if root not in self._all:
            raise KeyError(f"entity {key!r} has no pool")
        return "test" if root in self._test else "train"

    def split_of(self, entities: Sequence[str]) -> str | None:
        """The split all entities share, or None when they straddle both pools."""
        splits = {self.of(e) for e in entities}
        return splits.pop() if len(splits) == 1 else None


def choose(
    site: str, template: str, drafts: Sequence[TaskSpec], pools: Pools, *, test_only: bool = False
) -> list[TaskSpec]:
    """The template's tasks: N_TRAIN + N_TEST (or N_TEST_ONLY test tasks), numbered in order."""
    wanted = {"test": N_TEST_ONLY} if test_only else {"train": N_TRAIN, "test": N_TEST}
    rng = Random(f"sandbox-tasks:{site}/{template}")
    out: list[TaskSpec] = []
    for split, count in wanted.items():
        fitting = [d for d in drafts if pools.split_of(d.entities) == split]
        rng.shuffle(fitting)
        if len(fitting) < count:
            raise ValueError(f"sandbox/{site}/{template}: only {len(fitting)} {split} drafts, need {count}")
        start = len(out)
        out.extend(replace(d, template=template, split=split, index=start + i) for i, d in enumerate(fitting[:count]))
    return out


def unique_best(items: Iterable[T], key: Callable[[T], Any]) -> T | None:
    """The item with the lowest `key`, where no other item ties with it (else the question
    "which is best" has no single gold answer, and None)."""
    ranked = sorted(items, key=key)
    if len(ranked) < 2 or key(ranked[0]) == key(ranked[1]):
        return None
    return ranked[0]


Drafts = TypeVar("Drafts", bound=Callable[..., list[TaskSpec]])


def template(name: str, *, test_only: bool = False) -> Callable[[Drafts], Drafts]:
    """Marks a site method as the draft maker of template `name` (`Site.task_specs` collects them)."""

    def mark(make: Drafts) -> Drafts:
        make.template = (name, test_only)  # type: ignore[attr-defined]
        return make

    return mark


def answer_gold(answer: str, *aliases: str) -> dict[str, Any]:
    alts = [a for a in dict.fromkeys(aliases) if a != answer]
    return {"answer": answer, "aliases": alts} if alts else {"answer": answer}


def state_gold(**state: Any) -> dict[str, Any]:
    return {"state": state}


# Plan steps for the scripted solver (see solver.py). `why` becomes the step's thought.


def search(label: str, text: str, why: str) -> dict[str, Any]:
    return {"do": "type", "roles": ["searchbox"], "name": label, "text": text, "enter": True, "why": why}


def click(name: str, why: str, role: str | Sequence[str] = "link") -> dict[str, Any]:
    roles = [role] if isinstance(role, str) else list(role)
    return {"do": "click", "roles": roles, "name": name, "why": why}


def fill(label: str, text: str, why: str) -> dict[str, Any]:
    return {"do": "type", "roles": ["textbox", "spinbutton"], "name": label, "text": text, "enter": False, "why": why}


def answer(value: str, visible: str, why: str, seek: str = "the answer") -> dict[str, Any]:
    """Stop with `value` once `visible` shows in the observation (`seek` names it while scrolling)."""
    return {"do": "stop", "answer": value, "visible": visible, "why": why, "seek": seek}
