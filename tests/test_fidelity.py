"""World-model fidelity: STR (tree parsing), Sim. (identical 1, disjoint 0, partial between),
O/A verdict parsing and the report over a scripted judge endpoint."""

from __future__ import annotations

import pytest

from evolver_core.config import WorldModelConfig
from evolver_core.contracts.observation import Element, Observation, Tab
from evolver_core.llm import LLMClient
from evolver_core.world_model.fidelity import (
    ChangeScore, TreeLine, changed_element_f1, copy_baseline, equivalence_messages, fidelity_report, measure_fidelity,
    next_page_report, next_page_score, parse_equivalence, parse_tree, similarity,
)
from evolver_core.world_model.model import Transition, WorldModel
from fixtures_models import FakeEndpoint, chat_response


def observation(*elements: tuple[str, str, int], props: dict[str, str] | None = None) -> str:
    """The text our observation code renders for these (role, name, depth) elements."""
    els = [Element(id=i, role=r, name=n, depth=d, props=props or {}) for i, (r, n, d) in enumerate(elements, 1)]
    return Observation(url="http://x", tabs=[Tab(0, "Shop", True)], elements=els).text


SHOP = observation(("RootWebArea", "Shop", 0), ("link", "Home", 1), ("button", "Search", 1),
                   ("heading", "Deals", 1), ("StaticText", "50% off, 'today' only", 2))


def test_parse_tree_accepts_our_format() -> None:
    tree = parse_tree(SHOP)
    assert tree is not None and len(tree) == 5
    assert tree[4] == TreeLine(id=5, role="StaticText", name="50% off, 'today' only", depth=2)
    assert parse_tree(observation(("RootWebArea", "A", 0), ("textbox", "q", 1), props={"focused": "true"})) is not None
    assert parse_tree("[1] RootWebArea 'A'\n\t[2] link 'b'\n") is not None  # tab lines are optional


@pytest.mark.parametrize("bad", [
    "",
    "The page shows a search box.",
    "Tab 0 (current): A\n[1] RootWebArea 'A'",  # no blank line after the tabs
    "Tab 0 (current): A\n\n",  # no elements
    "[1] RootWebArea 'A'\n\t[3] link 'b'",  # ids skip
    "[2] RootWebArea 'A'",  # ids do not start at 1
    "[1] RootWebArea 'A'\n\t\t[2] link 'b'",  # depth jumps by 2
    "\t[1] RootWebArea 'A'",  # the first line is not at depth 0
    "[1] RootWebArea A",  # name not quoted
    "[1] RootWebArea 'A'\nsome prose",
])
def test_parse_tree_rejects_other_text(bad: str) -> None:
    assert parse_tree(bad) is None


def test_similarity() -> None:
    assert similarity(SHOP, SHOP) == 1.0
    other = observation(("RootWebArea", "News", 0), ("link", "Sports", 1), ("article", "Today", 1))
    assert similarity(other, SHOP) == 0.0
    partial = observation(("RootWebArea", "Shop", 0), ("link", "Home", 1), ("button", "Cart", 1))
    assert 0.2 < similarity(partial, SHOP) < 0.8
    renumbered = "\n".join(line for line in SHOP.split("\n") if "Home" not in line).replace("[3]", "[2]") \
        .replace("[4]", "[3]").replace("[5]", "[4]")
    assert similarity(renumbered, SHOP) > similarity(partial, SHOP)  # ids do not count
    assert similarity("no tree", SHOP) == 0.0
    cut = SHOP[:SHOP.index("[5]") + 12]  # the token limit hit mid-line: no tree, but four elements right
    assert parse_tree(cut) is None and 0.7 < similarity(cut, SHOP) < 1.0


def test_parse_equivalence() -> None:
    assert parse_equivalence("Both list the same links.\nEQUIVALENT") == 1
    assert parse_equivalence("The button is missing.\nNOT EQUIVALENT") == 0
    assert parse_equivalence("Not equivalent at first sight, but EQUIVALENT") == 1  # the last verdict word
    assert parse_equivalence("They look equivalent.") is None  # lower case is no verdict
    assert parse_equivalence("") is None


def context(action: str | None) -> Transition:
    return Transition(trajectory_id="t#0", step=1, objective="find deals", start_url="http://x", past_actions=(),
                      last_observation=None if action is None else SHOP, action=action, next_observation=SHOP,
                      action_key="k", site="s", source="real")


def test_equivalence_messages() -> None:
    later = equivalence_messages("find deals", SHOP, "click [4]", "PRED", "REAL")[1]["content"]
    assert all(s in later for s in ("find deals", SHOP, "click [4]", "PRED", "REAL"))
    first = equivalence_messages("find deals", None, None, "PRED", "REAL")[1]["content"]
    assert "start URL" in first and "PRED" in first


async def test_fidelity_report(fake_endpoint: FakeEndpoint) -> None:
    predictions, reals = [SHOP, "garbage", SHOP], [SHOP, SHOP, SHOP]
    without_judge = await fidelity_report(predictions, reals)
    assert without_judge["n"] == 3 and without_judge["str"] == pytest.approx(2 / 3)
    assert without_judge["sim"] == pytest.approx(2 / 3) and without_judge["oa"] is None
    fake_endpoint.script = [(200, chat_response("Same page.\nEQUIVALENT")), (200, chat_response("no idea"))]
    judged = await fidelity_report(predictions, reals, judge=LLMClient(fake_endpoint.base_url, "judge"),
                                   contexts=[context("click [4]"), context(None), context(None)])
    assert len(fake_endpoint.requests) == 2  # the unparsable prediction is not judged
    assert judged["oa"] == pytest.approx(1 / 3) and judged["oa_unparsable"] == 1
    assert (await fidelity_report([], []))["str"] is None
    with pytest.raises(ValueError):
        await fidelity_report(predictions, reals, judge=LLMClient(fake_endpoint.base_url, "judge"))


async def test_measure_fidelity_predicts_each_transition_and_scores_it(servers) -> None:
    """A world model that gets the page after `click [4]` right and answers prose otherwise."""
    def world_model(messages: list[dict]) -> str:
        return f"THOUGHT: the deals open\nOBSERVATION:\n{SHOP}" if "click [4]" in messages[-1]["content"] else "A page."

    wm = servers(world_model, "wm")
    judge = servers(lambda messages: "They work alike.\nEQUIVALENT", "judge")
    held_out = [context("click [4]"), context("click [2]"), context(None)]
    report, rows = await measure_fidelity(WorldModel(wm.client, WorldModelConfig(form="tree"), greedy=True), held_out,
                                          judge=judge.client)
    assert {k: report[k] for k in ("n", "str", "sim", "oa", "oa_unparsable")} == {
        "n": 3, "str": 1 / 3, "sim": 1 / 3, "oa": 1 / 3, "oa_unparsable": 0}
    assert (report["exact"], report["change_f1"], report["terminal"]) == (1 / 3, 1 / 3, 1.0)
    # "nothing changes" is right twice here (the page stays SHOP), and has no first page
    assert {k: report["copy"][k] for k in ("str", "sim", "exact")} == {"str": 2 / 3, "sim": 2 / 3, "exact": 2 / 3}
    assert [r["exact"] for r in rows] == [True, False, False]
    assert [(r["action"], r["str"], r["sim"], r["oa"]) for r in rows] == [
        ("click [4]", True, 1.0, 1), ("click [2]", False, 0.0, 0), (None, False, 0.0, 0)]
    assert rows[1]["predicted"] == "A page." and rows[0]["real"] == SHOP
    assert len(judge.bodies) == 1  # unparsable predictions are not sent to the judge
    assert all(b["temperature"] == 0.0 for b in wm.bodies)
    without_judge, _ = await measure_fidelity(WorldModel(wm.client, WorldModelConfig(form="tree")), held_out[:1])
    assert without_judge["oa"] is None and without_judge["str"] == 1.0


# The pages of a real MiniWoB enter-text episode (seed 0, the scripted solver): type, then
# submit, which ends the episode.
_ENTER = ("Tab 1 (current): Enter Text Task\n\n[1] RootWebArea 'Enter Text Task' focused: true\n"
          "\t[2] StaticText 'Enter \"'\n\t[3] StaticText 'Agustina'\n"
          "\t[4] StaticText '\" into the text field and press Submit.'\n")
START = _ENTER + "\t[5] textbox ''\n\t[6] button 'Submit'"
TYPED = _ENTER + "\t[5] textbox '' value: Agustina focused: true\n\t[6] button 'Submit'"
ENDED = _ENTER + "\t[5] textbox '' value: Agustina\n\t[6] button 'Submit' focused: true\n\t[7] StaticText 'START'"


def test_changed_element_f1_and_exact_on_real_pages() -> None:
    assert next_page_score(START, TYPED, TYPED, predicted_ends=False, real_ends=False) == ChangeScore(True, 1.0, True)
    copy = next_page_score(START, START, TYPED, predicted_ends=False, real_ends=False)
    assert copy == ChangeScore(exact=False, change_f1=0.0, terminal=True)
    focus_missed = TYPED.replace(" focused: true", "").replace("[1] RootWebArea 'Enter Text Task'",
                                                               "[1] RootWebArea 'Enter Text Task' focused: true")
    assert changed_element_f1(START, focus_missed, TYPED) == 0.0  # the element's line must be right
    # Submitting changes three elements; a prediction of the ended episode with only "START":
    # precision 1, recall 1/3.
    only_start = TYPED + "\n\t[7] StaticText 'START'"
    assert changed_element_f1(TYPED, only_start, ENDED) == pytest.approx(0.5)
    assert changed_element_f1(TYPED, TYPED, TYPED) == 1.0  # nothing changes, nothing predicted
    assert changed_element_f1(TYPED, "prose", ENDED) == 0.0
    assert next_page_score(TYPED, ENDED + "\n", ENDED).exact  # trailing whitespace aside
    assert next_page_score(TYPED, ENDED, ENDED).terminal is None  # no "episode ends" to check


def test_copy_baseline_beside_a_world_model() -> None:
    currents, reals, ends = [None, START, TYPED], [START, TYPED, ENDED], [False, False, True]
    copy = copy_baseline(currents, reals, real_ends=ends)
    assert copy["n"] == 3 and copy["exact"] == 0.0 and copy["change_f1"] == 0.0
    assert copy["str"] == pytest.approx(2 / 3)  # nothing is predicted for the first page
    assert 0.5 < copy["sim"] < 2 / 3  # real pages differ from the current one by a line or two
    assert copy["terminal"] == pytest.approx(2 / 3)  # the copy never ends an episode
    perfect = next_page_report(currents, reals, reals, predicted_ends=ends, real_ends=ends)
    assert perfect == {"n": 3, "str": 1.0, "sim": 1.0, "exact": 1.0, "change_f1": 1.0, "terminal": 1.0}
    assert copy_baseline([], [])["exact"] is None and copy_baseline([TYPED], [TYPED])["terminal"] is None
    with pytest.raises(ValueError):
        next_page_report([START], [], [TYPED])
