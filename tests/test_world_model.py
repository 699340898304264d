"""World-model data and client: transitions from stored rows, capping, rationales, the one
prompt layout for training and inference (checked against a recorded HTTP request), output
parsing and the Parquet round trip."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from evolver_core.config import WorldModelConfig
from evolver_core.data.records import WM_TRANSITION_TABLE, StepRecord, TrajectoryRecord
from evolver_core.data.storage import Storage
from evolver_core.llm import LLMClient, TokenLogprob
from evolver_core.training.sft import examples_from_table, examples_to_table
from evolver_core.world_model.model import (outcome_probability,
    FIRST, Transition, WorldModel, action_key, build_wm_messages, cap_transitions, distill_rationales,
    format_wm_target, parse_wm_output, predictable, rationale_messages, transitions_from_records,
    reply_regex, transitions_from_table,
    transitions_to_table, wm_sft_examples,
)
from fixtures_models import FakeEndpoint, chat_response
from helpers import make_step, make_trajectory


def page(title: str, *names: str) -> str:
    lines = [f"[1] RootWebArea '{title}' focused: true"] + [f"\t[{i}] link '{n}'" for i, n in enumerate(names, 2)]
    return f"Tab 0 (current): {title}\n\n" + "\n".join(lines)


HOME, RESULTS, ITEM = page("Home", "Search"), page("Results", "Item"), page("Item", "Buy")


def step(traj: str, i: int, observation: str, action: str | None, *, valid: bool = True,
         thought: str | None = "because", error_shown: str | None = None) -> StepRecord:
    return make_step(trajectory_id=traj, step=i, url=f"http://shop/{traj}/{i}", observation=observation,
                     thought=thought, action_raw=action or "clik", action=action, action_valid=valid,
                     error_shown=error_shown)


def traj(tid: str, source: str = "real", site: str = "shop") -> TrajectoryRecord:
    return make_trajectory(trajectory_id=tid, query=f"task of {tid}", site=site, source=source, judge_verdict=0)


@pytest.fixture
def rows() -> tuple[list[TrajectoryRecord], list[StepRecord]]:
    """t#0: home -click-> results -(invalid)-> results(with its error) -click-> item -stop.
    t#1 (failed, synthetic): one step only."""
    steps = [
        step("t#0", 0, HOME, "click [2]"),
        step("t#0", 1, RESULTS, None, valid=False),
        step("t#0", 2, RESULTS, "click [2]", thought=None, error_shown="no action"),
        step("t#0", 3, ITEM, "stop [done]"),
        step("t#1", 0, ITEM, "stop [N/A]"),
    ]
    return [traj("t#0"), traj("t#1", source="synthetic", site="other")], steps[::-1]  # steps in any order


def test_transitions_from_records(rows: tuple[list[TrajectoryRecord], list[StepRecord]]) -> None:
    first, home_click, results_click, only = transitions_from_records(*rows)
    assert (first.step, first.last_observation, first.action, first.next_observation) == (0, None, None, HOME)
    assert (first.start_url, first.objective, first.action_key) == ("http://shop/t#0/0", "task of t#0", FIRST)
    assert (home_click.step, home_click.action, home_click.next_observation) == (1, "click [2]", RESULTS)
    assert home_click.last_observation == HOME
    assert home_click.past_actions == ()
    # the invalid step 1 makes no transition and no past action; step 2's error is not its page
    assert (results_click.step, results_click.last_observation, results_click.next_observation) == (3, RESULTS, ITEM)
    assert results_click.past_actions == ("Thought: because\nAction: click [2]",)
    assert (only.trajectory_id, only.action, only.source, only.site) == ("t#1", None, "synthetic", "other")


def test_missing_step_row_breaks_the_chain() -> None:
    steps = [step("t#0", 0, HOME, "click [2]"), step("t#0", 2, ITEM, "click [2]"), step("t#0", 3, RESULTS, "stop [x]")]
    transitions = transitions_from_records([traj("t#0")], steps)
    assert [(t.step, t.last_observation) for t in transitions] == [(0, None), (3, ITEM)]
    assert transitions[1].past_actions == ("Thought: because\nAction: click [2]",)


def test_action_key() -> None:
    assert action_key("click [12]") == "click [12]"
    assert action_key("type [5] [hello world] [1]") == "type [5]"
    assert action_key(None) == FIRST


def transition(i: int, *, key: str = "click [2]", site: str = "shop", first: bool = False, nxt: str = "") -> Transition:
    return Transition(trajectory_id=f"t#{i}", step=0 if first else 1, objective="q", start_url="http://s",
                      past_actions=(), last_observation=None if first else HOME, action=None if first else key,
                      next_observation=nxt or f"page {i}", action_key=FIRST if first else key, site=site,
                      source="real")


def test_cap_transitions_dedupes_and_caps_deterministically() -> None:
    ts = ([transition(i, first=True) for i in range(5)] + [transition(i, first=True, site="b") for i in range(5, 7)]
          + [transition(i) for i in range(7, 17)] + [transition(17, key="type [3]")]
          + [transition(18, nxt="page 7")])  # duplicate of transition 7
    capped = cap_transitions(ts, first_per_site=3, per_action_key=4, seed=1)
    assert capped == cap_transitions(ts, first_per_site=3, per_action_key=4, seed=1)
    assert capped != cap_transitions(ts, first_per_site=3, per_action_key=4, seed=2)
    assert sum(t.site == "shop" and t.action is None for t in capped) == 3
    assert sum(t.site == "b" for t in capped) == 2
    assert sum(t.action_key == "click [2]" for t in capped) == 4
    assert any(t.action_key == "type [3]" for t in capped)
    assert capped == [t for t in ts if t in capped]  # input order kept
    assert len(cap_transitions(ts, first_per_site=99, per_action_key=99)) == len(ts) - 1  # only the duplicate goes
    limited = cap_transitions(ts, first_per_site=3, per_action_key=4, limit=5, seed=1)
    assert len(limited) == 5 and set(limited) <= set(capped) and limited == [t for t in ts if t in limited]
    assert limited != cap_transitions(ts, first_per_site=3, per_action_key=4, limit=5, seed=3)


def test_parse_wm_output_strips_the_rationale() -> None:
    full = parse_wm_output(format_wm_target("Clicking opens the results.", transition(1, nxt=RESULTS)) + "\n")
    assert (full.rationale, full.observation) == ("Clicking opens the results.", RESULTS)
    assert "THOUGHT" not in full.observation
    fenced = parse_wm_output(f"THOUGHT: x\nOBSERVATION:\n```\n{RESULTS}\n```")
    assert fenced.observation == RESULTS
    no_marker = parse_wm_output("THOUGHT: the item page opens\n[1] RootWebArea 'Item'\n\t[2] link 'Buy'")
    assert no_marker.rationale == "the item page opens"
    assert no_marker.observation == "[1] RootWebArea 'Item'\n\t[2] link 'Buy'"
    tabs_first = parse_wm_output("it opens\n" + ITEM)
    assert tabs_first.observation == ITEM
    for unparsable in ("I cannot tell.", "THOUGHT: hm\nOBSERVATION:\n  \n", ""):
        assert parse_wm_output(unparsable).observation is None


def test_build_wm_messages_layout() -> None:
    first = build_wm_messages("buy it", "http://shop", [], None, None)
    assert [m["role"] for m in first] == ["system", "user"]
    assert "http://shop" in first[1]["content"] and "open the start URL" in first[1]["content"]
    later = build_wm_messages("buy it", "http://shop", ["Thought: a\nAction: click [2]"], RESULTS, "click [3]")
    assert [m["role"] for m in later] == ["system", "user"]
    user = later[1]["content"]
    assert RESULTS in user and "Action: click [2]" in user and user.endswith("click [3]")
    assert "(none)" in build_wm_messages("q", "u", [], HOME, "click [2]")[1]["content"]
    with pytest.raises(ValueError):
        build_wm_messages("q", "u", [], HOME, None)


async def test_training_and_inference_use_the_same_layout(rows, fake_endpoint: FakeEndpoint) -> None:
    transitions = transitions_from_records(*rows)
    examples = wm_sft_examples(transitions, ["r"] * len(transitions))
    fake_endpoint.default = (200, chat_response(f"THOUGHT: opens\nOBSERVATION:\n{ITEM}"))
    wm = WorldModel(LLMClient(fake_endpoint.base_url, "wm"),
                    WorldModelConfig(temperature=0.7, max_tokens=64, form="tree"))
    for t, example in zip(transitions, examples):
        prediction = await wm.predict(t.objective, t.start_url, t.past_actions, t.last_observation, t.action, seed=3)
        assert (prediction.rationale, prediction.observation) == ("opens", ITEM)
        body = fake_endpoint.requests[-1].body
        assert body["messages"] == example["prompt"]
        assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.7, 64, 3)
    assert examples[2]["completion"] == [{"role": "assistant", "content": f"THOUGHT: r\nOBSERVATION:\n{ITEM}"}]
    assert {k: examples[2][k] for k in ("trajectory_id", "step", "source")} == {
        "trajectory_id": "t#0", "step": 3, "source": "real"}
    # the policy SFT storage (and `finetune.finetune`) take the examples unchanged
    assert examples_from_table(examples_to_table(examples, "run", 0, "wm_sft", "sample")) == examples


async def test_distill_rationales(rows, fake_endpoint: FakeEndpoint) -> None:
    transitions = transitions_from_records(*rows)
    fake_endpoint.default = (200, chat_response("THOUGHT: The click\n opens the results."))
    rationales = await distill_rationales(LLMClient(fake_endpoint.base_url, "base"), transitions, concurrency=2)
    assert rationales[0] == "The browser opens http://shop/t#0/0 and shows its start page."
    assert rationales[1] == "The click opens the results."  # one line, no label
    assert rationales[3].startswith("The browser opens")
    assert len(fake_endpoint.requests) == 2  # first steps need no model
    assert all(r.body["temperature"] == 0.0 for r in fake_endpoint.requests)
    sent = sorted(json.dumps(r.body["messages"]) for r in fake_endpoint.requests)
    assert sent == sorted(json.dumps(rationale_messages(t)) for t in transitions[1:3])
    user = rationale_messages(transitions[1])[1]["content"]
    assert HOME in user and RESULTS in user and "click [2]" in user and "task of t#0" in user


def test_parquet_round_trip(rows, tmp_path) -> None:
    transitions = transitions_from_records(*rows)
    rationales = [f"r{i}" for i in range(len(transitions))]
    store = Storage(str(tmp_path))
    store.write_shard("run", 2, "wm_data", WM_TRANSITION_TABLE,
                      transitions_to_table(transitions, rationales, "run", 2, "wm_data"), "sample")
    table = store.read_table("run", 2, "wm_data", table_name=WM_TRANSITION_TABLE)
    assert table.column("round").to_pylist() == [2] * len(transitions)
    assert transitions_from_table(table) == (transitions, rationales)
    with pytest.raises(ValueError):
        transitions_to_table(transitions, rationales[:-1], "run", 2, "wm_data")


async def test_a_prediction_stopped_by_the_token_limit_ends_at_its_last_complete_line(
        fake_endpoint: FakeEndpoint) -> None:
    from evolver_core.world_model.fidelity import parse_tree

    page = "[1] RootWebArea 'Form'\n\t[2] textbox ''\n\t[3] button 'ok'\n\t[4] Stat"
    looping = chat_response(f"THOUGHT: same page\nOBSERVATION:\n{page}")
    looping["choices"][0]["finish_reason"] = "length"
    fake_endpoint.default = (200, looping)
    wm = WorldModel(LLMClient(fake_endpoint.base_url, "wm"), WorldModelConfig(max_tokens=16, form="tree"), greedy=True)
    cut = await wm.predict("Click ok.", "http://x/", [], page, "click [3]")
    assert cut.cut and cut.observation == page.rsplit("\n", 1)[0] and cut.raw.endswith("[4] Stat")
    assert parse_tree(cut.observation) is not None and parse_tree(page) is None
    fake_endpoint.default = (200, chat_response(f"THOUGHT: same page\nOBSERVATION:\n{page}"))
    whole = await wm.predict("Click ok.", "http://x/", [], page, "click [3]")
    assert not whole.cut and whole.observation == page  # ended by the model: left as it is


FORM = "[1] RootWebArea 'Form'\n\t[2] textbox ''\n\t[3] button 'ok'"
TYPED = "[1] RootWebArea 'Form'\n\t[2] textbox '' value: bob\n\t[3] button 'ok'"


def test_the_delta_target_says_what_changed_and_when_the_episode_ends() -> None:
    typed = replace(transition(1, key="type [2]"), last_observation=FORM, action="type [2] [bob]",
                    next_observation=TYPED)
    target = format_wm_target("It types.", typed, "delta")
    assert target == "THOUGHT: It types.\nCHANGES:\n~ \t[2] textbox '' value: bob"
    back = parse_wm_output(target, form="delta", current=FORM)
    assert (back.rationale, back.observation, back.ends) == ("It types.", TYPED, False)
    done = replace(typed, last_observation=TYPED, action="click [3]", next_observation=TYPED, ends=True,
                   success=True)
    ended = parse_wm_output(format_wm_target("Done.", done, "delta"), form="delta", current=TYPED)
    assert (ended.observation, ended.ends, ended.success) == (TYPED, True, True)
    tree_form = parse_wm_output(format_wm_target("Done.", done, "tree"), form="tree")
    assert (tree_form.observation, tree_form.ends, tree_form.success) == (TYPED, True, True)
    assert parse_wm_output("THOUGHT: x\nCHANGES:\n~ \t[9] textbox 'a'", form="delta", current=FORM).observation is None
    with pytest.raises(ValueError, match="first page"):
        format_wm_target("x", transition(2, first=True), "delta")


def test_the_last_transition_of_an_episode_the_page_ended_carries_the_end_and_its_gold_outcome() -> None:
    steps = [step("t#0", 0, HOME, "click [2]")]
    ended = make_trajectory(trajectory_id="t#0", query="q", stop_reason="done", gold_reward=1.0,
                            final_observation=RESULTS, n_steps=1)
    first, last = transitions_from_records([ended], steps)
    assert (first.ends, last.ends, last.success, last.next_observation) == (False, True, True, RESULTS)
    cut = replace(ended, stop_reason="max_steps")
    assert not transitions_from_records([cut], steps)[-1].ends  # cut by the step limit: not an end
    assert predictable([first, last], "delta") == [last] and predictable([first, last], "tree") == [first, last]


async def test_without_rationales_the_world_model_writes_the_changes_alone(
        rows, fake_endpoint: FakeEndpoint) -> None:
    """rationale_max_tokens 0 (the cpu preset): no distillation call, no THOUGHT line in the
    target, a prompt that asks for the changes alone, the same prompt at inference, and a
    constrained request where the server has structured outputs."""
    transitions = predictable(transitions_from_records(*rows), "delta")
    client = LLMClient(fake_endpoint.base_url, "wm", structured=True)
    rationales = await distill_rationales(client, transitions, max_tokens=0)
    assert rationales == [None] * len(transitions) and not fake_endpoint.requests
    examples = wm_sft_examples(transitions, rationales, "delta")
    completion = examples[0]["completion"][0]["content"]
    assert completion.startswith("CHANGES:\n") and "THOUGHT" not in json.dumps(examples)
    fake_endpoint.default = (200, chat_response(completion))
    wm = WorldModel(client, WorldModelConfig(rationale_max_tokens=0))
    t = transitions[0]
    prediction = await wm.predict(t.objective, t.start_url, t.past_actions, t.last_observation, t.action)
    assert (prediction.rationale, prediction.observation) == ("", t.next_observation)
    body = fake_endpoint.requests[-1].body
    assert body["messages"] == examples[0]["prompt"]
    assert body["structured_outputs"] == {"regex": reply_regex("delta", thought=False)}
    with pytest.raises(ValueError, match="all None or all text"):
        wm_sft_examples(transitions[:2], [None, "r"], "delta")



def test_outcome_probability_is_read_at_the_word_after_episode_ends() -> None:
    """P(success) / (P(success) + P(failure)) at the outcome token of a reply split as
    SmolLM2's tokenizer splits it (":" and " success" apart), from its alternatives."""
    def tok(text: str, top: dict[str, float] | None = None) -> TokenLogprob:
        return TokenLogprob(token=text, logprob=-0.1, top=top or {text: -0.1})

    head = [tok("CHANGES"), tok(":\n"), tok("="), tok(" episode"), tok(" ends"), tok(":")]
    outcome = tok(" success", {" success": math.log(0.6), " failure": math.log(0.2), " Success": math.log(0.1)})
    assert outcome_probability([*head, outcome, tok("\n")]) == pytest.approx(0.7 / 0.9)
    assert outcome_probability([*head, tok(" failure", {" failure": -0.01})]) == 0.0
    assert outcome_probability([*head, tok(" maybe", {" maybe": -0.01})]) is None  # neither word
    split = tok(" f", {" f": math.log(0.3), " success": math.log(0.6), " ": math.log(0.1)})  # " failure" in pieces
    assert outcome_probability([*head, split, tok("ail"), tok("ure")]) == pytest.approx(0.6 / 0.9)
    assert outcome_probability([*head, tok(" "), outcome]) == pytest.approx(0.7 / 0.9)  # a space token first
    assert outcome_probability(head[:-1]) is None  # the reply never names an outcome
    assert outcome_probability([]) is None
