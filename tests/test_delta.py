"""The delta format of the world model: grammar, parser, applying it, and the round trip
real transition -> delta -> text -> delta -> applied = the real next page, over transitions
the scripted solvers play in chromium on MiniWoB and the sandbox sites."""

from __future__ import annotations

import asyncio
import re
import statistics
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evolver_core.agents.oracle import OracleAgent
from evolver_core.browser.env import launch_browser
from evolver_core.contracts.observation import Element, Observation, Tab
from evolver_core.sampling.rollout import run_episode
from evolver_core.suites.miniwob import MiniWoBSuite
from evolver_core.suites.sandbox import SandboxSuite
from evolver_core.world_model.model import Transition, action_key, format_wm_target, parse_wm_output, reply_regex
from evolver_core.world_model.delta import (
    DELTA_REGEX, Change, Delta, DeltaError, apply_delta, change_items, diff, edits, format_delta, parse_delta,
)

MINIWOB_TASKS = ["click-button", "click-link", "enter-text", "login-user", "click-dialog", "focus-text"]
# In-page changes (filters, a dropdown, a star, a checkbox, a saved notice) and navigations.
SANDBOX_TASKS = ["shop/cheapest-filtered", "shop/add-to-cart", "code/owner-top-starred", "code/star-repo",
                 "news/subscribe", "news/save-article", "dictionary/first-definition", "recipes/top-rated-diet"]


def page(*elements: tuple[str, str, int] | tuple[str, str, int, dict], title: str = "Form") -> str:
    """The text our observation code renders for these (role, name, depth[, props]) elements."""
    els = [Element(id=i, role=e[0], name=e[1], depth=e[2], props=e[3] if len(e) > 3 else {})  # type: ignore[misc]
           for i, e in enumerate(elements, 1)]
    return Observation(url="http://x", tabs=[Tab(1, title, True)], elements=els).text


FORM = page(("RootWebArea", "Form", 0), ("StaticText", "Enter a name", 1), ("textbox", "", 1),
            ("button", "Submit", 1))


def round_trip(current: str, following: str, **terminal) -> str:
    delta = diff(current, following, **terminal)
    text = format_delta(delta)
    assert parse_delta(text) == delta, text
    assert apply_delta(current, parse_delta(text)) == following, text
    assert re.fullmatch(DELTA_REGEX, text), text
    return text


def test_typing_and_ending_are_a_line_each() -> None:
    typed = page(("RootWebArea", "Form", 0), ("StaticText", "Enter a name", 1),
                 ("textbox", "", 1, {"value": "Ada", "focused": "true"}), ("button", "Submit", 1))
    assert round_trip(FORM, typed) == "~ \t[3] textbox '' value: Ada focused: true"
    ended = page(("RootWebArea", "Form", 0), ("StaticText", "Enter a name", 1),
                 ("textbox", "", 1, {"value": "Ada"}), ("button", "Submit", 1, {"focused": "true"}),
                 ("StaticText", "START", 1))
    assert round_trip(typed, ended, ends=True, success=True) == (
        "= episode ends: success\n~ \t[3] textbox '' value: Ada\n~ \t[4] button 'Submit' focused: true\n"
        "+ \t[5] StaticText 'START'")
    assert round_trip(FORM, FORM) == "= no change"
    assert round_trip(FORM, FORM, ends=True, success=False) == "= episode ends: failure"
    assert round_trip(FORM, FORM, ends=True) == "= episode ends"


def test_ids_shift_without_renumbering_in_the_delta() -> None:
    """A notice inserted in the middle and an element removed before another: the delta names
    the current page's removed ids and the next page's new lines; apply renumbers the rest."""
    following = page(("RootWebArea", "Form", 0), ("StaticText", "Saved.", 1), ("StaticText", "Enter a name", 1),
                     ("button", "Submit", 1))
    delta = diff(FORM, following)
    assert delta == Delta(removed=(3,), changes=(Change("+", "\t[2] StaticText 'Saved.'"),))
    assert format_delta(delta) == "- [3]\n+ \t[2] StaticText 'Saved.'"
    assert apply_delta(FORM, delta) == following
    nested = page(("RootWebArea", "Form", 0), ("StaticText", "Enter a name", 1), ("textbox", "", 1),
                  ("list", "Suggestions", 1), ("option", "Ada", 2), ("option", "Alan", 2), ("button", "Submit", 1))
    assert round_trip(FORM, nested) == "+ \t[4] list 'Suggestions'\n+ \t\t[5] option 'Ada'\n+ \t\t[6] option 'Alan'"
    assert round_trip(nested, FORM) == "- [4-6]"  # a closed dropdown: one range


def test_navigation_replaces_the_page_and_titles_are_changes() -> None:
    other = page(("RootWebArea", "Cart", 0), ("heading", "Your cart", 1), ("button", "Pay", 1), title="Cart")
    text = round_trip(FORM, other)
    assert text == f"= page replaced\n{other}" and diff(FORM, other).page == other
    assert round_trip(FORM, other, ends=True).startswith("= episode ends\n= page replaced\n")
    retitled = FORM.replace("Tab 1 (current): Form", "Tab 1 (current): Form (2)")
    assert round_trip(FORM, retitled) == "~ Tab 1 (current): Form (2)"
    assert round_trip("garbage", FORM) == f"= page replaced\n{FORM}"  # not a page: no changes to name
    assert edits("garbage", FORM) is None
    assert round_trip("", FORM) == f"= page replaced\n{FORM}"  # the first page: nothing to change yet


def test_parse_takes_any_order_and_rejects_other_text() -> None:
    assert parse_delta("+ \t[5] StaticText 'START'\n\n~ \t[4] button 'ok'\n") == Delta(
        changes=(Change("~", "\t[4] button 'ok'"), Change("+", "\t[5] StaticText 'START'")))
    outside = ["", "\n", "The page shows a form.", "+ button 'ok'", "= episode ends\n= episode ends"]
    for bad in [*outside, "- [3]\n- [2-4]", "~ [2] a 'b'\n+ [2] c 'd'", "- [5-3]"]:  # the last three name ids twice
        with pytest.raises(DeltaError):
            parse_delta(bad)
    assert not any(re.fullmatch(DELTA_REGEX, bad) for bad in outside)


def test_apply_rejects_ids_the_pages_do_not_have() -> None:
    for bad in ["- [9]", "~ \t[7] button 'x'", "+ \t[9] button 'x'"]:
        with pytest.raises(DeltaError):
            apply_delta(FORM, parse_delta(bad))
    with pytest.raises(DeltaError):
        apply_delta("not a page", parse_delta("- [1]"))
    assert apply_delta(FORM, parse_delta("+ \t[5] button 'x'")).endswith("\n\t[5] button 'x'")


def test_an_update_past_the_page_end_adds_the_element() -> None:
    """The world model's slip at a MiniWoB episode end: `~` for the appended 'START'."""
    added = apply_delta(FORM, parse_delta("+ \t[5] StaticText 'START'\n~ \t[4] button 'Submit' focused: true"))
    assert apply_delta(FORM, parse_delta("~ \t[5] StaticText 'START'\n~ \t[4] button 'Submit' focused: true")) == added
    with pytest.raises(DeltaError):  # past the end by more than the new elements: still no page
        apply_delta(FORM, parse_delta("~ \t[6] StaticText 'START'"))


def test_change_items_are_one_per_element() -> None:
    delta = parse_delta("~ Tab 1 (current): B\n- [2-3]\n~ [1] RootWebArea 'B'")
    assert change_items(delta) == ["~ Tab 1 (current): B", "- [2]", "- [3]", "~ [1] RootWebArea 'B'"]


_ELEMENTS = st.tuples(st.sampled_from(["button", "link", "StaticText", "textbox"]), st.sampled_from(["a", "b", "c d"]),
                      st.sampled_from([{}, {"focused": "true"}, {"value": "x y"}]))


@st.composite
def pages_and_edits(draw: st.DrawFn) -> tuple[str, str]:
    """A random tree and a random edit of it (drop, insert, change elements at valid depths)."""
    def tree(elements: list[tuple[str, str, dict]], depths: list[int]) -> str:
        return page(("RootWebArea", "R", 0), *[(r, n, d, p) for (r, n, p), d in zip(elements, depths)])

    def depths(n: int) -> list[int]:
        out: list[int] = []
        for _ in range(n):
            out.append(draw(st.integers(1, (out[-1] if out else 1) + 1)))
        return out

    before = draw(st.lists(_ELEMENTS, max_size=12))
    after = [e for e in before if draw(st.booleans()) or draw(st.booleans())]
    for _ in range(draw(st.integers(0, 4))):
        after.insert(draw(st.integers(0, len(after))), draw(_ELEMENTS))
    return tree(before, depths(len(before))), tree(after, depths(len(after)))


@settings(max_examples=300, deadline=None)
@given(pages_and_edits())
def test_round_trip_on_random_edits(pages: tuple[str, str]) -> None:
    round_trip(*pages)


# -- real transitions --------------------------------------------------------------------

@dataclass(frozen=True)
class RealTransition:
    task_id: str
    action: str
    current: str
    following: str
    ends: bool  # the page ended the episode after this action
    success: bool | None


async def _play(suite, tasks, env_factory) -> list[RealTransition]:
    env = await env_factory(suite)
    out = []
    for task in tasks:
        episode = await run_episode(env, task, OracleAgent(suite), max_steps=10)
        pages = [s.observation for s in episode.steps] + [episode.final_observation]
        for i, (step, current, following) in enumerate(zip(episode.steps, pages, pages[1:])):
            if following is None:  # ended by `stop`: no page after it
                continue
            ends = i == len(episode.steps) - 1 and episode.stop_reason == "done"
            out.append(RealTransition(task.id, step.turn.action, current, following, ends,
                                      (episode.gold_reward == 1.0) if ends else None))
    await env.close()
    return out


async def _collect() -> list[RealTransition]:
    miniwob, sandbox = MiniWoBSuite(MINIWOB_TASKS, seeds_per_task=2), SandboxSuite()
    await miniwob.start()
    await sandbox.start()
    try:
        wanted = {f"sandbox/{t}/000" for t in SANDBOX_TASKS}
        async with launch_browser() as browser:
            return [t for batch in await asyncio.gather(
                _play(miniwob, miniwob.tasks("train"), browser.new_env),
                _play(sandbox, [t for t in sandbox.tasks() if t.id in wanted], browser.new_env)) for t in batch]
    finally:
        await miniwob.stop()
        await sandbox.stop()


@pytest.fixture(scope="module")
def real_transitions() -> list[RealTransition]:
    return asyncio.run(_collect())


def test_round_trip_over_real_transitions(real_transitions: list[RealTransition]) -> None:
    assert {t.task_id.split("/")[1] for t in real_transitions if t.task_id.startswith("miniwob")} == set(MINIWOB_TASKS)
    assert len({t.task_id for t in real_transitions if t.task_id.startswith("sandbox")}) == len(SANDBOX_TASKS)
    ended = [t for t in real_transitions if t.ends]
    assert len(ended) == 2 * len(MINIWOB_TASKS) and all(t.success for t in ended)  # MiniWoB ends by the page
    ratios: dict[str, list[float]] = {"miniwob": [], "sandbox": []}
    for t in real_transitions:
        text = round_trip(t.current, t.following, ends=t.ends, success=t.success)
        assert text.startswith("= episode ends: success") == t.ends
        ratios[t.task_id.split("/")[0]].append(len(text) / len(t.following))
    everything = ratios["miniwob"] + ratios["sandbox"]
    replaced = sum(diff(t.current, t.following).page is not None for t in real_transitions)
    print(f"\n{len(real_transitions)} real transitions ({len(ratios['miniwob'])} MiniWoB, {len(ratios['sandbox'])} "
          f"sandbox, {replaced} pages replaced); delta/page length: mean {statistics.mean(everything):.3f}, "
          f"MiniWoB {statistics.mean(ratios['miniwob']):.3f}, sandbox {statistics.mean(ratios['sandbox']):.3f}")
    assert statistics.mean(ratios["miniwob"]) < 0.3  # a line or two of a 6-13 element page
    assert statistics.mean(everything) < 0.6


@pytest.mark.parametrize("form", ["delta", "tree"])
def test_every_real_target_is_within_the_reply_grammar(real_transitions: list[RealTransition], form: str) -> None:
    """What M_w is trained to write, with and without its rationale line, is a reply the
    constrained decoder allows (`reply_regex`), and it parses back to the real next page."""
    for thought in (False, True):
        for r in real_transitions:
            t = Transition(trajectory_id=r.task_id, step=1, objective="o", start_url="u", past_actions=(),
                           last_observation=r.current, action=r.action, next_observation=r.following,
                           action_key=action_key(r.action), site="s", source="real", ends=r.ends, success=r.success)
            target = format_wm_target("It changes." if thought else None, t, form)
            assert re.fullmatch(reply_regex(form, thought), target), target
            parsed = parse_wm_output(target, form=form, current=r.current)
            assert (parsed.observation, parsed.ends) == (r.following, r.ends)
