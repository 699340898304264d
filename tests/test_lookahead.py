"""WMLA: the pure helpers, and `LookaheadAgent.act` against local OpenAI-protocol servers per role."""

from __future__ import annotations

import json
import math
import re

import pytest

from helpers import page_number

from evolver_core.agents.lookahead import (SCORE_REGEX, LookaheadSpec, SimStep, dedupe_candidates, parse_score,
                                           select_best, world_model_score)
from evolver_core.agents.policy import PolicyAgent
from evolver_core.config import LookaheadConfig, ModelSpec, WorldModelConfig
from evolver_core.contracts.actions import REPLY_REGEX
from evolver_core.contracts.observation import Element, Observation, Tab
from evolver_core.contracts.task import Task
from evolver_core.llm import LLMClient
from evolver_core.world_model.model import OUTCOME_TOP_LOGPROBS

TASK = Task(id="la/t1", suite="la", site="example.org", start_url="http://example.org/", query="open the target")
OBS = Observation(url="http://example.org/", tabs=[Tab(0, "Home", True)],
                  elements=[Element(1, "RootWebArea", "Page 0", 0), Element(2, "link", "Target", 1),
                            Element(3, "link", "Other", 1)])


def test_dedupe_by_parsed_action():
    assert dedupe_candidates(["click [3]", "```click [3]```", "click  [3]", "click [2]"]) == [0, 3]
    assert dedupe_candidates(["nonsense", "click [2]", "stop"]) == [1, 2]
    assert dedupe_candidates(["nonsense", "more nonsense"]) == [0]  # none parses: keep the greedy one
    assert dedupe_candidates([]) == []


def test_parse_score():
    assert [parse_score(f"Thought: x\nScore: {s}") for s in ("0", "0.5", "1", "1.0", ".5")] == [0, 0.5, 1, 1, 0.5]
    assert parse_score("Thought: a score: 0 would be harsh.\n**Score:** 1") == 1.0  # the last one counts
    assert parse_score("garbage") is None and parse_score("Score: 7") is None and parse_score("") is None
    for grade in ("0", "0.5", "1"):  # every reply the constrained scorer can write parses to its grade
        assert re.fullmatch(SCORE_REGEX, f"Thought: on track.\nScore: {grade}")
        assert parse_score(f"Thought: on track.\nScore: {grade}") == float(grade)


def test_a_margin_keeps_the_greedy_candidate_against_scores_barely_higher():
    """The cpu preset's world model: ends at P(success) 0.99 to 0.99998 whatever the action."""
    assert select_best([0.9999, 0.99998, 0.9990], margin=0.1) == 0
    assert select_best([0.5, 0.9999, 0.99], margin=0.1) == 1  # the greedy action goes on, this one ends
    assert select_best([0.5, 0.55], margin=0.1) == 0 and select_best([0.5, 0.6], margin=0.1) == 1
    assert select_best([0.9999, 0.99998], margin=0.0) == 1  # the paper's argmax


def test_select_best_ties_go_to_the_greedy_candidate():
    assert select_best([0.5, 0.5, 0.0], margin=0.0) == 0
    assert select_best([0.0, 1.0, 1.0], margin=0.0) == 1
    assert select_best([0.0], margin=0.0) == 0


def look_ahead(depth: int = 1, form: str = "tree", **lookahead) -> LookaheadSpec:
    """A look-ahead spec for agents on the test's servers (its model specs are not served here)."""
    return LookaheadSpec(ModelSpec(), ModelSpec(), depth, LookaheadConfig(**lookahead), WorldModelConfig(form=form))


def test_a_look_ahead_spec_refuses_a_depth_it_cannot_simulate():
    with pytest.raises(ValueError, match="depth"):
        look_ahead(depth=4)


def scripted_policy(candidates: list[str], rollout: str = "click [9]"):
    """Candidate i answers the i-th action (read off how many "different from" actions the
    prompt names); inside a simulation (a predicted page) it answers `rollout`."""
    def respond(messages: list[dict]) -> str:
        user = messages[-1]["content"]
        if page_number(user) > 0:
            return f"Thought: simulated\nAction: {rollout}"
        i = user.split("different from:")[1].count(";") + 1 if "different from:" in user else 0
        return f"Thought: candidate {i}\nAction: {candidates[i]}"
    return respond


def wm_predicting(messages: list[dict]) -> str:
    user = messages[-1]["content"]
    action = user.split("NEW ACTION: ")[1].strip()
    return f"THOUGHT: because\nOBSERVATION:\n[1] RootWebArea 'Page {page_number(user) + 1}'\n\t[2] text '{action}'"


def scorer_rating(ratings: dict[str, str]):
    """Rates by the candidate's action found in the CANDIDATE RESPONSE."""
    def respond(messages: list[dict]) -> str:
        response = messages[-1]["content"].split("CANDIDATE RESPONSE:\n")[1].split("\nSIMULATION:")[0]
        action = response.split("Action: ")[1]
        return f"Thought: judged.\nScore: {ratings.get(action, 'junk')}"
    return respond


def make_agent(servers, candidates, ratings, depth=1, rollout="click [9]"):
    policy = servers(scripted_policy(candidates, rollout), "policy-model")
    wm = servers(wm_predicting, "wm-model")
    scorer = servers(scorer_rating(ratings), "scorer-model")
    agent = look_ahead(depth).make_agent(PolicyAgent(policy.client), wm.client, scorer.client)
    return agent, policy, wm, scorer


async def test_act_picks_the_highest_scored_candidate(servers):
    agent, policy, wm, scorer = make_agent(servers, ["click [3]", "click [2]", "```click [3]```"],
                                           {"click [3]": "0.5", "click [2]": "1"})
    turn = await agent.act(TASK, OBS, [])
    assert turn.action == "click [2]" and turn.thought == "candidate 1"
    la = turn.sampling["lookahead"]
    assert [c["action"] for c in la["candidates"]] == ["click [3]", "click [2]"] and la["chosen"] == 1
    assert [c["score"] for c in la["candidates"]] == [0.5, 1.0]
    assert json.loads(json.dumps(la)) == la
    temps = [b["temperature"] for b in policy.bodies]
    assert temps == [0.0, 0.7, 0.7]  # greedy, then the paper's candidate temperature
    assert "different from: click [3]; click [2]" in policy.bodies[2]["messages"][-1]["content"]
    assert {b["model"] for b in wm.bodies} == {"wm-model"} and len(wm.bodies) == 2  # the duplicate is not simulated
    assert len(scorer.bodies) == 2 and "Step 1:" in scorer.texts() and "THOUGHT" not in policy.texts()
    assert turn.prompt_tokens == 10 * 7 and turn.completion_tokens == 3 * 7  # 3 policy, 2 world-model, 2 scorer calls


async def test_ties_go_to_greedy_and_stop_is_not_simulated(servers):
    agent, policy, wm, scorer = make_agent(servers, ["click [3]", "stop [x]", "click [2]"],
                                           {"click [3]": "0.5", "stop [x]": "0.5", "click [2]": "0"})
    turn = await agent.act(TASK, OBS, [])
    assert turn.action == "click [3]"
    assert len(wm.bodies) == 2 and "stop" not in wm.texts()  # only the click candidates were simulated
    stop = turn.sampling["lookahead"]["candidates"][1]
    assert stop["simulated"] is False and stop["simulation"] == []
    assert sum("Not simulated" in b["messages"][-1]["content"] for b in scorer.bodies) == 1


async def test_single_candidate_is_taken_without_simulation(servers):
    agent, policy, wm, scorer = make_agent(servers, ["click [3]"] * 3, {})
    turn = await agent.act(TASK, OBS, [])
    assert turn.action == "click [3]" and wm.bodies == [] and scorer.bodies == []


async def test_depth_two_lets_the_policy_act_on_the_predicted_page(servers):
    agent, policy, wm, scorer = make_agent(servers, ["click [3]", "click [2]", "click [2]"],
                                           {"click [3]": "0", "click [2]": "garbage"}, depth=2)
    turn = await agent.act(TASK, OBS, [])
    assert turn.action == "click [3]"  # both count 0: the greedy one wins
    assert len(wm.bodies) == 4 and len(policy.bodies) == 3 + 2
    assert [b["temperature"] for b in policy.bodies[3:]] == [0.7, 0.7]
    sim = turn.sampling["lookahead"]["candidates"][0]["simulation"]
    assert [s["action"] for s in sim] == ["click [3]", "click [9]"]
    assert "Step 2:" in scorer.texts() and "THOUGHT" not in policy.texts()


def test_world_model_score():
    assert world_model_score([SimStep("click [2]", "[1] a 'b'", ends=True, success=True)]) == 1.0
    assert world_model_score([SimStep("click [2]", "[1] a 'b'", ends=True, success=False)]) == 0.0
    assert world_model_score([SimStep("click [2]", "[1] a 'b'", ends=True)]) == 0.5
    assert world_model_score([SimStep("click [2]", "[1] a 'b'")]) == 0.5  # the episode goes on
    assert world_model_score([SimStep("click [2]", None)]) is None  # the prediction did not parse
    assert world_model_score([]) == 0.5  # a stop candidate is not simulated


async def test_the_world_models_own_verdict_can_pick_another_candidate_than_the_greedy_one(servers):
    """The cpu preset's scorer: M_w's prediction that the episode ends in success; no scorer
    LLM is asked. The greedy candidate's page goes on, the second candidate's ends in success."""
    def wm_ending(messages: list[dict]) -> str:
        user = messages[-1]["content"]
        ends = "= episode ends: success\n" if user.rstrip().endswith("click [2]") else ""
        return f"THOUGHT: because\nCHANGES:\n{ends}~ \t[2] link 'Target' focused: true"

    policy = servers(scripted_policy(["click [3]", "click [2]", "click [3]"]), "policy-model")
    wm = servers(wm_ending, "wm-model")
    agent = look_ahead(form="delta", scorer="world_model").make_agent(PolicyAgent(policy.client), wm.client, None)
    turn = await agent.act(TASK, OBS, [])
    la = turn.sampling["lookahead"]
    assert turn.action == "click [2]" and la["chosen"] == 1
    assert [c["score_parsed"] for c in la["candidates"]] == [0.5, 1.0]
    assert la["candidates"][1]["simulation"][0]["ends"] is True
    assert "focused: true" in la["candidates"][0]["simulation"][0]["page"]  # the delta applied to the real page
    with pytest.raises(ValueError, match="scorer"):
        look_ahead(scorer="llm").make_agent(PolicyAgent(policy.client), wm.client, None)


def vllm_tokens(text: str, p_success: float) -> dict:
    """`text` as vLLM's chat logprobs give it: a word (with its leading space) a token, each
    with its top alternatives; at the outcome word, " success" and " failure" share the mass
    as `p_success` says."""
    content = []
    for token in re.findall(r"\s*\S+|\s+", text):
        top = {token: -0.01}
        if token.strip() in ("success", "failure"):
            top = {" success": math.log(p_success), " failure": math.log(1 - p_success)}
        content.append({"token": token, "logprob": top.get(token, -0.01), "bytes": None,
                        "top_logprobs": [{"token": t, "logprob": v, "bytes": None} for t, v in top.items()]})
    return {"content": content}


async def test_the_world_models_probability_of_success_ranks_ends_it_writes_alike(servers):
    """The cpu preset's world models write "success" at every end they predict; the
    probability of the outcome word decides between two such ends. A server without
    log-probabilities falls back to the written outcome: a tie, kept by the greedy candidate."""
    def wm_ending(messages: list[dict]) -> dict:
        reply = "CHANGES:\n= episode ends: success"
        p = 0.9 if messages[-1]["content"].rstrip().endswith("click [2]") else 0.3
        return {"content": reply, "logprobs": vllm_tokens(reply, p)}

    policy = servers(scripted_policy(["click [3]", "click [2]", "click [3]"]), "policy-model")
    wm = servers(wm_ending, "wm-model")
    with_logprobs = LLMClient(wm.client.base_url, "wm-model", logprobs=True)
    spec = look_ahead(form="delta", scorer="world_model")
    agent = spec.make_agent(PolicyAgent(policy.client), with_logprobs, None)
    la = (await agent.act(TASK, OBS, [])).sampling["lookahead"]
    assert la["chosen"] == 1
    assert [c["score_parsed"] for c in la["candidates"]] == pytest.approx([0.3, 0.9])
    assert wm.bodies[-1]["top_logprobs"] == OUTCOME_TOP_LOGPROBS

    written_only = spec.make_agent(PolicyAgent(policy.client), wm.client, None)
    la = (await written_only.act(TASK, OBS, [])).sampling["lookahead"]
    assert la["chosen"] == 0 and [c["score_parsed"] for c in la["candidates"]] == [1.0, 1.0]
    assert "logprobs" not in wm.bodies[-1]  # never sent to a server that does not return them


def test_world_model_score_prefers_the_probability_of_success():
    assert world_model_score([SimStep("click [2]", "[1] a 'b'", ends=True, success=True, p_success=0.25)]) == 0.25
    assert world_model_score([SimStep("click [2]", "[1] a 'b'", p_success=None)]) == 0.5


async def test_a_constrained_policys_sampled_candidates_click_none_of_the_earlier_candidates_elements(servers):
    """Where the server decodes within the grammar, it holds the "different from" request: the
    second candidate may click no element the greedy one clicked, the third neither of theirs."""
    policy = servers(scripted_policy(["click [3]", "click [2]", "type [2] [x] [press_enter_after=1]"]), "policy-model")
    wm = servers(wm_predicting, "wm-model")
    structured = LLMClient(policy.client.base_url, "policy-model", structured=True)
    agent = look_ahead(scorer="world_model").make_agent(PolicyAgent(structured, constrained=True), wm.client, None)
    await agent.act(TASK, OBS, [])
    grammars = [b.get("structured_outputs", {}).get("regex") for b in policy.bodies]
    assert grammars[0] == REPLY_REGEX
    clickable = [[i for i in (1, 2, 3) if re.fullmatch(g, f"Thought: t\nAction: click [{i}]")] for g in grammars]
    assert clickable == [[1, 2, 3], [1, 2], [1]]
