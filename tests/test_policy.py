"""The policy: reply parsing (never raises), the clipped-history prompt layout, and one real
step against the tiny model's server."""

from __future__ import annotations

import pytest

from evolver_core.contracts.agent import Turn
from evolver_core.agents.policy import PolicyAgent
from evolver_core.contracts.prompt import FewShot, PastStep, build_messages, system_prompt
from evolver_core.contracts.reply import FORMAT_ERROR, Reply, format_reply, parse_reply
from evolver_core.contracts.actions import ActionParseError, parse_action
from evolver_core.contracts.actions import describe_actions
from evolver_core.contracts.observation import Element, Observation, Tab
from evolver_core.prompts import load_prompt
from evolver_core.contracts.episode import StepResult
from evolver_core.contracts.task import Task
from infra.model_server import ModelServer

OMITTED = load_prompt("policy_omitted")


@pytest.mark.parametrize("text, thought, action", [
    ("Thought: the button submits.\nAction: click [3]", "the button submits.", "click [3]"),
    ("thought: lower case\naction: scroll [down]", "lower case", "scroll [down]"),
    ("Thought: fenced\nAction: ```click [3]```", "fenced", "click [3]"),
    ("Thought: block\nAction:\n```\ntype [2] [hello] [press_enter_after=0]\n```", "block",
     "type [2] [hello] [press_enter_after=0]"),
    ("Thought: tagged block\nAction: ```text\nwait\n```", "tagged block", "wait"),
    ("Thought: inline `code`\nAction: `goback`", "inline `code`", "goback"),
    ("**Thought:** bold labels\n**Action:** stop [42]", "bold labels", "stop [42]"),
    ("Thought: one line. Action: click [7]", "one line.", "click [7]"),
    ("Sure! Thought: spans\ntwo lines\nAction: click [1]\nObservation: more text\nAction: click [9]",
     "spans two lines", "click [1]"),
    ("Thought: the action: is mentioned\nAction: click [4]", "the action: is mentioned", "click [4]"),
    ("Thought: extra text after\nAction: click [5] because it is the button\nand more", "extra text after",
     "click [5] because it is the button"),
])
def test_parse_reply(text: str, thought: str, action: str) -> None:
    assert parse_reply(text) == Reply(thought, action, None)


@pytest.mark.parametrize("text", [
    "", "   ", "Thought: I will click the button.", "no labels at all", "Action:", "Action: ```\n```",
    "Thought:\nAction:", "\x00\x01 garbage ```", None,
])
def test_replies_without_an_action_give_an_invalid_action(text: str | None) -> None:
    reply = parse_reply(text)  # type: ignore[arg-type]
    assert reply.action == "" and reply.error == FORMAT_ERROR
    with pytest.raises(ActionParseError):
        parse_action(reply.action)  # the rollout turns this into an error observation


def test_reply_without_a_thought_keeps_the_action() -> None:
    assert parse_reply("Action: click [3]") == Reply("", "click [3]", FORMAT_ERROR)
    assert parse_reply("click [3]") == Reply("", "", FORMAT_ERROR)


def test_format_reply_round_trips() -> None:
    assert parse_reply(format_reply("find the box", "type [4] [cat] [press_enter_after=1]")) == \
        Reply("find the box", "type [4] [cat] [press_enter_after=1]", None)


def history(n: int) -> list[PastStep]:
    return [PastStep(observation=f"obs {i}", thought=f"thought {i}", action=f"click [{i + 1}]") for i in range(n)]


def user_texts(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


def test_first_step_layout() -> None:
    messages = build_messages("Click OK.", "[1] button 'OK'", [])
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == system_prompt()
    assert messages[1]["content"] == "OBSERVATION:\n[1] button 'OK'\nOBJECTIVE: Click OK."


def test_history_clipping_k1_keeps_every_thought_and_action_and_only_the_current_observation() -> None:
    messages = build_messages("Do it.", "obs 3", history(3), k=1)
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert user_texts(messages) == [OMITTED, OMITTED, OMITTED, "OBSERVATION:\nobs 3\nOBJECTIVE: Do it."]
    assert [m["content"] for m in messages if m["role"] == "assistant"] == [
        f"Thought: thought {i}\nAction: click [{i + 1}]" for i in range(3)]


def test_history_clipping_k2_keeps_the_previous_observation_too() -> None:
    messages = build_messages("Do it.", "obs 3", history(3), k=2)
    assert user_texts(messages) == [OMITTED, OMITTED, "OBSERVATION:\nobs 2", "OBSERVATION:\nobs 3\nOBJECTIVE: Do it."]
    assert len([m for m in messages if m["role"] == "assistant"]) == 3
    everything = build_messages("Do it.", "obs 3", history(3), k=10)
    assert OMITTED not in user_texts(everything)
    with pytest.raises(ValueError):
        build_messages("Do it.", "obs 3", history(3), k=0)


def test_few_shot_examples_go_into_the_system_prompt() -> None:
    example = FewShot(observation="[2] button 'Go'", objective="Press Go.", thought="Go is [2].", action="click [2]")
    system = build_messages("x", "y", [], few_shot=[example])[0]["content"]
    assert system.startswith(load_prompt("policy_system", actions=describe_actions()))
    assert "OBSERVATION:\n[2] button 'Go'\nOBJECTIVE: Press Go.\nThought: Go is [2].\nAction: click [2]" in system


def test_past_step_from_a_rollout_step_keeps_the_error_beside_the_page() -> None:
    turn = Turn(thought="t", action="click [2]", model="m")
    step = StepResult(step=0, url="http://x/", observation="[1] link 'a'", error_shown="boom",
                      turn=turn, action=parse_action("click [2]"), parse_error=None)
    past = PastStep.from_step(step)
    assert past == PastStep("[1] link 'a'", "t", "click [2]", error_shown="boom")
    shown = build_messages("x", "[1] link 'b'", [past], k=2)[1]["content"]
    assert shown == load_prompt("policy_past_user", observation="ERROR: boom\n\n[1] link 'a'")


async def test_policy_agent_acts_through_a_real_server(tiny_server: ModelServer) -> None:
    agent = PolicyAgent(tiny_server.client(), history_k=1, max_tokens=16, seed=1)
    task = Task(id="t/1", suite="test", site="test", start_url="http://127.0.0.1/", query="Click OK.")
    obs = Observation(url="http://127.0.0.1/", tabs=[Tab(0, "Test", True)],
                      elements=[Element(1, "button", "OK", 0)], error="click [9] failed: no element 9")
    agent.start(task)
    turn = await agent.act(task, obs, [])
    assert turn.model == tiny_server.model and agent.name == f"policy:{tiny_server.model}"
    assert turn.prompt is not None and turn.prompt[-1]["content"] == \
        f"OBSERVATION:\nERROR: click [9] failed: no element 9\n\n{obs.text}\nOBJECTIVE: Click OK."
    assert turn.response is not None
    assert (turn.thought, turn.action) == (lambda r: (r.thought, r.action))(parse_reply(turn.response))
    assert turn.sampling["max_tokens"] == 16 and turn.sampling["seed"] == 1 and turn.sampling["temperature"] == 0.0
    assert turn.prompt_tokens > 0 and 0 < turn.completion_tokens <= 16
