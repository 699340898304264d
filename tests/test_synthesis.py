"""Synthetic trajectories against local OpenAI-protocol servers, one per role (policy, world
model): the `servers` fixture's `ChatServer`s."""

from __future__ import annotations

import json

import pytest

from evolver_core.agents.oracle import OracleAgent
from evolver_core.agents.policy import PolicyAgent
from evolver_core.browser.env import launch_browser
from evolver_core.contracts.task import Task
from evolver_core.data.episodes import read_episodes
from evolver_core.data.records import from_table
from evolver_core.data.storage import Storage
from evolver_core.config import SamplingConfig, WorldModelConfig
from evolver_core.sampling.sampler import SampleConfig, episode_records, sample_trajectories
from evolver_core.suites.miniwob import MiniWoBSuite
from evolver_core.training.sft import convert_trajectories, read_sft_parquet, write_sft_parquet
from evolver_core.world_model.model import WorldModel, format_wm_target, transitions_from_records
from evolver_core.world_model.replay import one_at_a_time
from evolver_core.world_model.synthesis import (WM_UNPARSABLE, failed_task_ids, real_starts, synthesize,
                                                synthesize_episode)
from helpers import Responder, make_step, make_trajectory, page_number

def last_user(messages: list[dict]) -> str:
    return messages[-1]["content"]


def tree(n: int) -> str:
    return f"Tab 0 (current): P{n}\n\n[1] RootWebArea 'Page {n}'"


def wm_page(n: int, ends: bool = False) -> str:
    ending = "= episode ends: success\n" if ends else ""
    return f"THOUGHT: the click opens page {n}\nOBSERVATION:\n{ending}{tree(n)}"


def counting_wm(unparsable_at: int | None = None, ends_at: int | None = None) -> Responder:
    """Page n+1 after an action on page n (read off the request); `unparsable_at`: that page
    is junk; `ends_at`: the WM says the action leading to that page ends the episode."""
    def respond(messages: list[dict]) -> str:
        n = page_number(last_user(messages)) + 1
        return "I cannot tell." if n == unparsable_at else wm_page(n, ends=n == ends_at)
    return respond


def policy_acting(actions: dict[int, str], default: str = "click [1]") -> Responder:
    """The reply's action depends on the page number the policy sees."""
    def respond(messages: list[dict]) -> str:
        n = page_number(last_user(messages))
        return f"Thought: on page {n}\nAction: {actions.get(n, default)}"
    return respond


TASK = Task(id="synth/t1", suite="synth", site="example.org", start_url="http://example.org/", query="find it")


async def run(servers, policy_respond: Responder, wm_respond: Responder, **kw):
    policy = servers(policy_respond, "policy-model")
    wm = servers(wm_respond, "wm-model")
    ep = await synthesize_episode(TASK, tree(1), PolicyAgent(policy.client),
                                  WorldModel(wm.client, WorldModelConfig(form="tree")), seed=5, **kw)
    return ep, policy, wm


async def test_starts_from_the_real_first_page_and_stops_on_stop_action(servers):
    ep, policy, wm = await run(servers, policy_acting({3: "stop [42]"}), counting_wm())
    assert (ep.stop_reason, ep.final_answer, len(ep.steps)) == ("stop", "42", 3)
    assert [s.observation for s in ep.steps] == [tree(n) for n in (1, 2, 3)]
    assert len(wm.bodies) == 2 and len(policy.bodies) == 3  # no first page, no page after the stop
    assert ep.gold_reward is None and ep.steps[0].url == TASK.start_url and ep.steps[1].url == ""
    assert ep.final_observation is None  # ended by `stop`, as a real episode


async def test_ends_where_the_world_model_says_the_episode_ends(servers):
    ep, _, wm = await run(servers, policy_acting({}), counting_wm(ends_at=3))
    assert (ep.stop_reason, len(ep.steps), len(wm.bodies)) == ("done", 2, 2)
    assert ep.final_observation == tree(3)  # the page the last action led to: what the filter sees


async def test_stops_on_policy_parse_failure(servers):
    ep, _, _ = await run(servers, policy_acting({2: "fly away"}), counting_wm())
    assert ep.stop_reason == "invalid" and len(ep.steps) == 2
    assert ep.steps[-1].action is None and ep.steps[-1].parse_error


async def test_stops_on_unparsable_world_model_output(servers):
    ep, _, _ = await run(servers, policy_acting({}), counting_wm(unparsable_at=3))
    assert ep.stop_reason == "invalid" and len(ep.steps) == 2 and ep.steps[-1].error == WM_UNPARSABLE
    first, _, _ = await run(servers, policy_acting({}), counting_wm(unparsable_at=2))
    assert first.stop_reason == "invalid" and len(first.steps) == 1


async def test_asks_for_the_page_after_the_last_allowed_action(servers):
    ep, policy, wm = await run(servers, policy_acting({}), counting_wm(ends_at=4), max_actions=3)
    assert ep.stop_reason == "done" and len(ep.steps) == 3  # the third action's page says it is over
    capped, policy, wm = await run(servers, policy_acting({}), counting_wm())
    assert capped.stop_reason == "max_steps" and len(capped.steps) == 7
    assert len(policy.bodies) == 7 and len(wm.bodies) == 7 and capped.final_observation == tree(8)


async def test_roles_and_rationale_never_reach_the_policy(servers):
    ep, policy, wm = await run(servers, policy_acting({4: "stop"}), counting_wm())
    assert all(b["model"] == "policy-model" for b in policy.bodies)
    assert all(b["model"] == "wm-model" for b in wm.bodies)
    assert "THOUGHT:" not in policy.texts() and "the click opens" not in policy.texts()
    assert "OBJECTIVE: find it" in last_user(policy.bodies[0]["messages"])  # the policy's prompt layout
    assert "START URL: http://example.org/" in last_user(wm.bodies[0]["messages"])  # the WM's
    assert "Thought: on page 1" in last_user(wm.bodies[1]["messages"])  # past thoughts+actions reach the WM
    # the policy's history has the same layout as real rollouts: earlier replies as assistant turns
    assert [m["role"] for m in policy.bodies[2]["messages"]] == ["system", "user", "assistant", "user",
                                                                  "assistant", "user"]
    assert [b["seed"] for b in wm.bodies] == [6, 7, 8]


async def test_records_round_trip_as_synthetic(servers):
    ep, _, _ = await run(servers, policy_acting({2: "stop [done]"}), counting_wm())
    cfg = SampleConfig(run_id="r", stage="synthesize", source="synthetic")
    steps, traj = episode_records(ep, cfg)
    assert traj.source == "synthetic" and traj.stop_reason == "stop" and traj.final_answer == "done"
    assert [s.action for s in steps] == ["click [1]", "stop [done]"]
    assert steps[0].observation == ep.steps[0].observation and steps[0].model == "policy-model"


async def test_synthesize_stores_judges_and_resumes(servers, tmp_path):
    judged = servers(lambda m: "The page shows it.\nSUCCESS", "judge-model")
    policy = servers(policy_acting({2: "stop [done]"}), "policy-model")
    wm = WorldModel(servers(counting_wm(), "wm-model").client, WorldModelConfig(form="tree"))
    storage = Storage(str(tmp_path))
    cfg = SampleConfig(run_id="r", stage="synthesize", source="synthetic",
                       sampling=SamplingConfig(samples=2))
    tasks = [TASK, TASK.with_(id="synth/t2")]
    starts = {t.id: tree(1) for t in tasks}
    summary = await synthesize(tasks, starts, lambda t, k: PolicyAgent(policy.client), wm, storage, cfg,
                               judge_client=judged.client)
    assert (summary.new, summary.trajectories, summary.steps) == (4, 4, 8)
    trajs = from_table(storage.read_table("r", 0, "synthesize", table_name="trajectories"))
    assert {t.source for t in trajs} == {"synthetic"} and {t.judge_verdict for t in trajs} == {1}
    assert len(judged.bodies) == 4
    again = await synthesize(tasks, starts, lambda t, k: PolicyAgent(policy.client), wm, storage, cfg)
    assert (again.new, again.skipped, again.trajectories) == (0, 4, 4)
    with pytest.raises(ValueError, match="synthetic"):
        await synthesize(tasks, starts, lambda t, k: PolicyAgent(policy.client), wm, storage, SampleConfig(run_id="r"))
    # Kept by r̂, converted like real trajectories, and merged with the real examples of the round.
    conv = convert_trajectories(*read_episodes(storage, "r", 0, "synthesize"))
    assert conv.kept == 4 and len(conv.examples) == 8 and {e["source"] for e in conv.examples} == {"synthetic"}
    assert "THOUGHT" not in json.dumps([e["prompt"] for e in conv.examples])  # the WM's rationale never leaks
    real = [{**conv.examples[0], "source": "real", "trajectory_id": "real#0"}]
    write_sft_parquet(real, storage, "r", 0, source_stage="sample")
    write_sft_parquet(conv.examples, storage, "r", 0, source_stage="synthesize")
    merged = read_sft_parquet(storage, "r", 0)
    assert sorted(e["source"] for e in merged) == ["real"] + ["synthetic"] * 8


def test_failed_task_ids_are_the_queries_rejection_sampling_keeps_nothing_of() -> None:
    def traj(task: str, k: int, gold: float | None, verdict: int | None = None, stop: str = "stop"):
        return make_trajectory(trajectory_id=f"{task}#{k}", task_id=task, gold_reward=gold, judge_verdict=verdict,
                               stop_reason=stop, final_answer="done", n_steps=1)

    trajs = [traj("a", 0, 0.0), traj("a", 1, 1.0),  # one success of two: not failed
             traj("b", 0, 1.0, stop="max_steps"),  # gold success, but never stopped: nothing to keep
             traj("c", 0, 0.0, verdict=1), traj("d", 0, 1.0, verdict=0)]
    steps = [make_step(trajectory_id=t.trajectory_id) for t in trajs]
    assert failed_task_ids(trajs, steps, use_gold=True) == ["b", "c"]
    assert failed_task_ids(trajs, steps, use_gold=False) == ["a", "b", "d"]  # by the judge's verdicts
    assert failed_task_ids(trajs, steps[1:], use_gold=True) == ["b", "c"]  # a's kept one still has its step
    assert failed_task_ids(trajs, [], use_gold=True) == ["a", "b", "c", "d"]  # steps missing: nothing to keep


# -- with the shapes the real parts produce --------------------------------------------------

def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


async def test_synthesis_from_real_first_pages_reaches_the_end_and_is_kept_by_replay(servers, tmp_path):
    """Real MiniWoB tasks (their objectives come from their pages), stored real episodes of the
    scripted solver, a world model that plays the stored real transitions back as deltas, a
    policy that acts as the solver did on each page, and the real filter (replay on the real
    page, then `to_sft`'s rules): every synthetic trajectory starts from the real first page,
    reaches the end the world model predicts, and is kept."""
    suite = MiniWoBSuite(["click-button", "enter-text", "login-user"], seeds_per_task=1)
    await suite.start()
    store = Storage(str(tmp_path))
    real = SampleConfig(run_id="r", sampling=SamplingConfig(concurrency=2))
    await sample_trajectories(suite, suite.tasks("train"), lambda t, k: OracleAgent(suite), store, real)
    trajs, steps = read_episodes(store, "r", 0, "sample")
    assert all(t.stop_reason == "done" and t.gold_reward == 1 for t in trajs)
    played = {(t.last_observation, t.action): t for t in transitions_from_records(trajs, steps) if t.action}
    acted = {s.observation: s for s in steps}

    def world_model(messages: list[dict]) -> str:
        user = messages[-1]["content"]
        key = (_between(user, "CURRENT PAGE:\n", "\nNEW ACTION: "), user.split("NEW ACTION: ")[1].strip())
        return format_wm_target("as it went", played[key], "delta") if key in played else "no idea"

    def policy(messages: list[dict]) -> str:
        step = acted[_between(messages[-1]["content"], "OBSERVATION:\n", "\nOBJECTIVE: ")]
        return f"Thought: {step.thought}\nAction: {step.action}"

    starts = real_starts(trajs, steps)
    tasks = [t.with_(query=starts[t.id].query) for t in suite.tasks("train")]
    assert all(t.query for t in tasks) and all(t.query == "" for t in suite.tasks("train"))
    wm = WorldModel(servers(world_model, "wm").client, WorldModelConfig(form="delta"))
    cfg = SampleConfig(run_id="r", stage="synthesize", source="synthetic")
    async with launch_browser() as browser:
        env = await browser.new_env(suite)
        try:
            summary = await synthesize(tasks, {i: s.first_page for i, s in starts.items()},
                                       lambda t, k: PolicyAgent(servers(policy, "policy").client), wm, store, cfg,
                                       max_actions=4, replay=one_at_a_time(env))
        finally:
            await env.close()
    await suite.stop()
    synthetic, synthetic_steps = read_episodes(store, "r", 0, "synthesize")
    assert summary.trajectories == len(tasks) == 3
    assert {t.stop_reason for t in synthetic} == {"done"} and all(t.final_observation for t in synthetic)
    assert [s.observation for s in synthetic_steps if s.step == 0] == [
        starts[t.task_id].first_page for t in synthetic]
    conv = convert_trajectories(synthetic, synthetic_steps, use_gold=True)
    assert conv.kept == 3 and {e["source"] for e in conv.examples} == {"synthetic"}


async def test_replay_rewards_what_the_real_page_rewards_and_rejects_the_rest():
    """The replay filter on real MiniWoB episodes of the scripted solver: their own actions are
    rewarded (1.0), the same episode with a wrong text typed is not (0.0), so a replay that
    always accepted would fail here."""
    from dataclasses import replace

    from evolver_core.sampling.rollout import run_episode
    from evolver_core.world_model.replay import replay_reward

    suite = MiniWoBSuite(["enter-text"], seeds_per_task=2)
    await suite.start()
    try:
        async with launch_browser() as browser:
            env = await browser.new_env(suite)
            try:
                for task in suite.tasks("train"):
                    played = await run_episode(env, task, OracleAgent(suite))
                    assert played.gold_reward == 1.0 and played.stop_reason == "done"
                    typed = [i for i, s in enumerate(played.steps) if s.action and s.action.name == "type"]
                    assert typed, "the solver types the text enter-text asks for"
                    wrong = [replace(s, action=replace(s.action, text=s.action.text + "x")) if i in typed else s
                             for i, s in enumerate(played.steps)]
                    assert await replay_reward(env, played) == 1.0
                    assert await replay_reward(env, replace(played, steps=wrong)) == 0.0
            finally:
                await env.close()
    finally:
        await suite.stop()
