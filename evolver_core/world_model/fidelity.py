"""World-model fidelity (paper Table 2: STR, Sim., O/A), defined precisely here because
neither the paper nor the reference code does (reference notes section 10).

For N predicted next pages p_i against the real next pages r_i:

- **STR** (structure rate): the fraction of p_i that `parse_tree` accepts (a p_i the token
  limit stopped counts as the page up to its last complete line, `model.parse_wm_output`, as
  synthesis and look-ahead use it; the rows say which were `cut`), i.e. that are
  in our observation format: optional tab lines (``Tab <i>...``) followed by one blank line,
  then at least one element line ``^\\t*\\[<id>\\] <role> '<name>'( <prop>: <value>)*$``,
  ids 1..n in order, the first at depth 0 and the depth (leading tabs) rising by at most
  1 from one line to the next.
- **Sim.** (similarity): the mean over all i of `similarity(p_i, r_i)`, computed on the
  lines of each text that are element lines (the regex above; the tree's structure is
  STR's business, so a prediction cut off mid-line by the token limit still gets credit
  for the elements it has right): 0 when either has none, else the mean of
  (a) the F1 of the multisets of (role, name) pairs of the two, and
  (b) `difflib.SequenceMatcher` ratio between the two lists of element lines with the ids
      removed (line by line: fast on 300-element trees, and an element counts as equal
      only when its role, name, properties and depth all are).
  Identical trees score 1; trees sharing no element score 0.
- **O/A** (overall accuracy): the fraction of p_i that an LLM judge finds functionally
  equivalent to r_i for the task, given the previous page and the action
  (`functional_equivalence`). Unparsable predictions count as 0 without asking; an
  unparsable verdict counts as 0 and is reported in ``oa_unparsable``.

Beside them, measures of what changed (issue 20), for a predicted page p, the current page c
and the real next page r (`next_page_score`, `next_page_report`):

- **exact**: p is r, character for character (trailing whitespace aside).
- **change F1**: the F1 of the multisets of changed elements, `delta.change_items` of
  `delta.edits(c, p)` against those of `delta.edits(c, r)`: an item per removed element (its
  id in c), per added or updated element (its whole line in r, id and depth included) and per
  tab line when the tabs changed. 1 when neither changes anything; when a page is not in the
  format, 1 if p is r, else 0.
- **terminal**: the prediction that the action ends the episode is right.
- **copy baseline** (`copy_baseline`): the same measures for the world model that predicts
  "nothing changes" (p = c; nothing for a first page) and never ends an episode. On MiniWoB,
  where most actions change one field, it scores high STR and Sim.: the bar to beat.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from evolver_core.config import JudgeConfig
from evolver_core.contracts.observation import ELEMENT_ID, ELEMENT_LINE
from evolver_core.judge.verdicts import last_verdict
from evolver_core.llm import LLMClient
from evolver_core.prompts import load_prompt
from evolver_core.world_model.delta import change_items, edits
from evolver_core.world_model.model import Transition, WorldModel

_TAB_LINE = "Tab "
# Upper case, whole words, the last one decides (as `judge.parse_verdict`).


@dataclass(frozen=True)
class TreeLine:
    id: int
    role: str
    name: str
    depth: int


def _element_lines(text: str) -> list[str] | None:
    """The element lines of an observation text, after its tab lines and blank line."""
    lines = text.rstrip("\n").split("\n")
    tabs = 0
    while tabs < len(lines) and lines[tabs].startswith(_TAB_LINE):
        tabs += 1
    if tabs:
        if tabs == len(lines) or lines[tabs] != "":
            return None
        tabs += 1
    return lines[tabs:] or None


def parse_tree(text: str) -> list[TreeLine] | None:
    """The elements of `text`, or None unless it is in our observation format (module docstring)."""
    lines = _element_lines(text or "")
    if lines is None:
        return None
    out: list[TreeLine] = []
    for line in lines:
        m = ELEMENT_LINE.match(line)
        if m is None:
            return None
        element = TreeLine(id=int(m.group(2)), role=m.group(3), name=m.group(4), depth=len(m.group(1)))
        previous_depth = out[-1].depth if out else -1
        if element.id != len(out) + 1 or element.depth > previous_depth + 1:
            return None
        out.append(element)
    return out


def _f1(predicted: Counter, real: Counter) -> float:
    common = sum((predicted & real).values())
    if not common:
        return 0.0
    precision, recall = common / sum(predicted.values()), common / sum(real.values())
    return 2 * precision * recall / (precision + recall)


def _element_matches(text: str) -> list[re.Match]:
    """The element lines of `text`, wherever they are and however they nest."""
    return [m for line in (text or "").split("\n") if (m := ELEMENT_LINE.match(line)) is not None]


def similarity(predicted: str, real: str) -> float:
    """Sim. of one prediction (module docstring); 0 when either text has no element line."""
    p_elements, r_elements = _element_matches(predicted), _element_matches(real)
    if not p_elements or not r_elements:
        return 0.0
    f1 = _f1(Counter((m.group(3), m.group(4)) for m in p_elements),
             Counter((m.group(3), m.group(4)) for m in r_elements))
    p_lines, r_lines = ([ELEMENT_ID.sub(r"\1", m.group(0)) for m in ms] for ms in (p_elements, r_elements))
    return (f1 + SequenceMatcher(None, p_lines, r_lines, autojunk=False).ratio()) / 2


# -- O/A -----------------------------------------------------------------------------------

def parse_equivalence(text: str) -> int | None:
    """1 EQUIVALENT, 0 NOT EQUIVALENT (the last verdict word decides), None without one."""
    return last_verdict(text, "EQUIVALENT")[0]


def equivalence_messages(objective: str, last_observation: str | None, action: str | None, predicted: str,
                         real: str) -> list[dict]:
    if action is None:
        user = load_prompt("fidelity_user_first", objective=objective, real=real, predicted=predicted)
    else:
        user = load_prompt("fidelity_user", objective=objective, observation=last_observation, action=action,
                           real=real, predicted=predicted)
    return [{"role": "system", "content": load_prompt("fidelity_system")}, {"role": "user", "content": user}]


async def functional_equivalence(client: LLMClient, objective: str, last_observation: str | None,
                                 action: str | None, predicted: str, real: str, *, seed: int | None = 42,
                                 max_tokens: int = JudgeConfig.max_tokens) -> int | None:
    """The judge's verdict (temperature 0) whether `predicted` works like `real` for the task;
    `action` None is the first step (opening the start URL)."""
    messages = equivalence_messages(objective, last_observation, action, predicted, real)
    completion = await client.chat(messages, temperature=0.0, seed=seed, max_tokens=max_tokens)
    return parse_equivalence(completion.text)


@dataclass(frozen=True)
class FidelityScore:
    """One prediction against the real next page."""

    structured: bool  # STR
    sim: float
    oa: int | None  # 1/0; None: no judge asked, or its verdict did not parse


async def score_predictions(predictions: Sequence[str], reals: Sequence[str], *, judge: LLMClient | None = None,
                            contexts: Sequence[Transition] | None = None, concurrency: int = 4) -> list[FidelityScore]:
    """STR, Sim. and (with `judge` and one context per pair: the transition predicted) the
    O/A verdict of each prediction; unparsable predictions get verdict 0 without asking."""
    if len(predictions) != len(reals):
        raise ValueError(f"{len(predictions)} predictions but {len(reals)} real pages")
    if judge is not None and (contexts is None or len(contexts) != len(reals)):
        raise ValueError("O/A needs one context per prediction")
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(i: int) -> FidelityScore:
        p, r = predictions[i], reals[i]
        structured = parse_tree(p) is not None
        verdict = None
        if judge is not None and contexts is not None:
            if not structured:
                verdict = 0
            else:
                c = contexts[i]
                async with gate:
                    verdict = await functional_equivalence(judge, c.objective, c.last_observation, c.action, p, r)
        return FidelityScore(structured=structured, sim=similarity(p, r), oa=verdict)

    return list(await asyncio.gather(*(one(i) for i in range(len(reals)))))


def summarize(scores: Sequence[FidelityScore], *, judged: bool) -> dict:
    """The rates over `scores` (None when there are none; O/A None unless `judged`)."""
    n = len(scores)
    return {
        "n": n,
        "str": sum(s.structured for s in scores) / n if n else None,
        "sim": sum(s.sim for s in scores) / n if n else None,
        "oa": sum(s.oa or 0 for s in scores) / n if judged and n else None,
        "oa_unparsable": sum(s.oa is None for s in scores) if judged else None,
    }


async def fidelity_report(predictions: Sequence[str], reals: Sequence[str], *, judge: LLMClient | None = None,
                          contexts: Sequence[Transition] | None = None) -> dict:
    """STR, Sim. and O/A (module docstring) of predictions against the real next pages.
    O/A needs the `judge` and one context per pair (the transition predicted: objective,
    last observation, action); without a judge it is None. Rates are None when n is 0."""
    scores = await score_predictions(predictions, reals, judge=judge, contexts=contexts)
    return summarize(scores, judged=judge is not None)


async def measure_fidelity(world_model: WorldModel, transitions: Sequence[Transition], *,
                           judge: LLMClient | None = None, seed: int = 0) -> tuple[dict, list[dict]]:
    """Predict each transition's next page with `world_model` (use temperature 0) and score
    it: (the report, one row per transition with the prediction and its scores). The report
    has STR, Sim., O/A, exact, change F1 and terminal accuracy, and the same measures of the
    copy baseline on the same transitions (`copy`)."""
    predictions = await asyncio.gather(*(
        world_model.predict(t.objective, t.start_url, t.past_actions, t.last_observation, t.action, seed=seed)
        for t in transitions))
    pages = [p.observation or "" for p in predictions]
    reals, currents = [t.next_observation for t in transitions], [t.last_observation for t in transitions]
    real_ends = [t.ends for t in transitions]
    scores = await score_predictions(pages, reals, judge=judge, contexts=transitions)
    changes = next_page_report(currents, pages, reals, predicted_ends=[p.ends for p in predictions],
                               real_ends=real_ends)
    report = summarize(scores, judged=judge is not None) | {
        k: changes[k] for k in ("exact", "change_f1", "terminal")} | {
        "copy": copy_baseline(currents, reals, real_ends=real_ends)}
    rows = [{"trajectory_id": t.trajectory_id, "step": t.step, "action": t.action, "predicted": p.raw,
             "real": t.next_observation, "str": s.structured, "sim": s.sim, "oa": s.oa, "cut": p.cut,
             "exact": _same_page(page, t.next_observation), "ends": p.ends}
            for t, p, page, s in zip(transitions, predictions, pages, scores, strict=True)]
    return report, rows


# -- what changed, beside the copy baseline ------------------------------------------------

@dataclass(frozen=True)
class ChangeScore:
    """One predicted next page against the real one, by what changed (module docstring)."""

    exact: bool
    change_f1: float
    terminal: bool | None  # None: no "episode ends" prediction to check


def _same_page(predicted: str, real: str) -> bool:
    # Predictions lose trailing whitespace when parsed (`model.parse_wm_output`).
    return predicted.rstrip() == real.rstrip()


def changed_element_f1(current: str, predicted: str, real: str) -> float:
    """Change F1 of one prediction (module docstring)."""
    predicted_edits, real_edits = edits(current, predicted), edits(current, real)
    if predicted_edits is None or real_edits is None:
        return float(_same_page(predicted, real))
    p_items, r_items = Counter(change_items(predicted_edits)), Counter(change_items(real_edits))
    return 1.0 if not p_items and not r_items else _f1(p_items, r_items)


def next_page_score(current: str, predicted: str, real: str, *, predicted_ends: bool | None = None,
                    real_ends: bool | None = None) -> ChangeScore:
    terminal = None if predicted_ends is None or real_ends is None else predicted_ends == real_ends
    return ChangeScore(exact=_same_page(predicted, real), change_f1=changed_element_f1(current, predicted, real),
                       terminal=terminal)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def next_page_report(currents: Sequence[str | None], predictions: Sequence[str], reals: Sequence[str], *,
                     predicted_ends: Sequence[bool] | None = None, real_ends: Sequence[bool] | None = None) -> dict:
    """STR, Sim., exact, change F1 and (given both `*_ends`) terminal accuracy of `predictions`
    of the pages after `currents` (None: a first page); rates None when there are none."""
    if not len(currents) == len(predictions) == len(reals):
        raise ValueError(f"{len(currents)} current pages, {len(predictions)} predictions, {len(reals)} real pages")
    ends = list(zip(predicted_ends, real_ends, strict=True)) if predicted_ends is not None and real_ends is not None \
        else [(None, None)] * len(reals)
    scores = [next_page_score(c or "", p, r, predicted_ends=pe, real_ends=re_)
              for c, p, r, (pe, re_) in zip(currents, predictions, reals, ends, strict=True)]
    return {
        "n": len(reals),
        "str": _mean([parse_tree(p) is not None for p in predictions]),
        "sim": _mean([similarity(p, r) for p, r in zip(predictions, reals)]),
        "exact": _mean([s.exact for s in scores]),
        "change_f1": _mean([s.change_f1 for s in scores]),
        "terminal": _mean([s.terminal for s in scores if s.terminal is not None]),
    }


def copy_baseline(currents: Sequence[str | None], reals: Sequence[str], *,
                  real_ends: Sequence[bool] | None = None) -> dict:
    """`next_page_report` of the "nothing changes" world model on the same transitions."""
    never = None if real_ends is None else [False] * len(reals)
    return next_page_report(currents, [c or "" for c in currents], reals, predicted_ends=never, real_ends=real_ends)
