"""SFT conversion: judge filter reasons, train/inference prompt equality, the fixed no-change
filter, the wait filter, and the Parquet round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from evolver_core.contracts.agent import EXPLORER
from evolver_core.contracts.prompt import PastStep, build_messages, user_turn
from evolver_core.contracts.reply import format_reply
from evolver_core.data.records import StepRecord, TrajectoryRecord
from evolver_core.data.storage import Storage
from evolver_core.prompts import load_prompt
from evolver_core.training import sft
from helpers import make_step, make_trajectory

QUERY = "Log in as alice"
TID = "login-user#0"
PAGE_A = "Tab 0 (current): Login\n[1] RootWebArea 'Login'\n\t[2] textbox 'Username'"
PAGE_B = "Tab 0 (current): Login\n[1] RootWebArea 'Login'\n\t[2] textbox 'Username' value: alice"
PAGE_C = "Tab 0 (current): Welcome\n[1] RootWebArea 'Welcome alice'"
OMITTED = load_prompt("policy_omitted")


def trajectory(steps: list[tuple[str, str]], errors: dict[int, str] | None = None,
               **traj_overrides) -> tuple[TrajectoryRecord, list[StepRecord]]:
    """Stored records of a trajectory: `steps` is [(page, canonical action)], `errors` the
    error shown at a step (the previous action's)."""
    errors = errors or {}
    step_records = [make_step(trajectory_id=TID, query=QUERY, step=i, observation=obs, thought=f"thought {i}",
                              action_raw=action, action=action, error_shown=errors.get(i))
                    for i, (obs, action) in enumerate(steps)]
    fields = {"trajectory_id": TID, "query": QUERY, "n_steps": len(steps), "final_answer": "alice"} | traj_overrides
    return make_trajectory(**fields), step_records


def current_user_turn(example: dict) -> str:
    return example["prompt"][-1]["content"]


# -- judge filter --------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "use_gold", "reason"), [
    ({}, False, sft.KEPT),
    ({"judge_verdict": None}, False, sft.NOT_JUDGED),
    ({"judge_verdict": 0}, False, sft.JUDGED_FAILURE),
    ({"judge_verdict": None, "gold_reward": 1.0}, True, sft.KEPT),
    ({"gold_reward": None}, True, sft.NO_GOLD),
    ({"gold_reward": 0.5}, True, sft.GOLD_FAILURE),
    ({"stop_reason": "max_steps"}, False, sft.NO_STOP),
    ({"final_answer": None}, False, sft.NO_ANSWER),
    ({"final_answer": " n/a "}, False, sft.NO_ANSWER),
    ({"n_steps": 3}, False, sft.MISSING_STEPS),
    ({"model": EXPLORER, "gold_reward": 1.0}, True, sft.EXPLORATION),
])
def test_keep_trajectory_reasons(overrides: dict, use_gold: bool, reason: str) -> None:
    traj, steps = trajectory([(PAGE_A, "type [2] [alice] [press_enter_after=1]"), (PAGE_C, "stop [alice]")],
                             **overrides)
    assert sft.keep_trajectory(traj, steps, use_gold=use_gold) == (reason == sft.KEPT, reason)


def test_a_trajectory_with_an_unparsable_action_is_dropped() -> None:
    traj, steps = trajectory([(PAGE_A, "click [2]"), (PAGE_C, "stop [alice]")])
    steps[0] = dataclasses.replace(steps[0], action=None, action_valid=False, action_raw="clik [2]")
    assert sft.keep_trajectory(traj, steps) == (False, sft.INVALID_ACTION)


def test_convert_trajectories_counts_reasons_and_groups_steps() -> None:
    good, good_steps = trajectory([(PAGE_A, "type [2] [alice] [press_enter_after=1]"), (PAGE_C, "stop [alice]")])
    bad, bad_steps = trajectory([(PAGE_A, "click [2]")], judge_verdict=0)
    bad = dataclasses.replace(bad, trajectory_id="login-user#1")
    bad_steps = [dataclasses.replace(s, trajectory_id="login-user#1") for s in bad_steps]
    result = sft.convert_trajectories([good, bad], [*reversed(good_steps), *bad_steps])
    assert dict(result.reasons) == {sft.KEPT: 1, sft.JUDGED_FAILURE: 1}
    assert (result.kept, result.steps_in) == (1, 2)
    assert [(e["trajectory_id"], e["step"]) for e in result.examples] == [(TID, 0), (TID, 1)]


# -- examples ------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2])
def test_each_example_is_the_inference_prompt_plus_the_target_reply(k: int) -> None:
    actions = ["type [2] [alice] [press_enter_after=0]", "click [3]", "stop [alice]"]
    traj, steps = trajectory(list(zip([PAGE_A, PAGE_B, PAGE_C], actions)))
    examples = sft.to_sft_examples(traj, steps, history_k=k)
    assert len(examples) == 3
    for t, example in enumerate(examples):
        # The policy at step t is prompted with exactly the same messages.
        history = [PastStep(observation=s.observation, thought=s.thought, action=s.action) for s in steps[:t]]
        assert example["prompt"] == build_messages(QUERY, steps[t].observation, history, k)
        assert example["completion"] == [{"role": "assistant", "content": format_reply(f"thought {t}", actions[t])}]
        assert (example["trajectory_id"], example["step"], example["source"]) == (TID, t, "real")
    assert examples[2]["prompt"][1]["content"] == OMITTED  # step 0's page is clipped at step 2


def test_no_change_filter_keeps_the_next_steps_real_observation() -> None:
    """The reference's bug scenario: step 1 shows the same page as step 0 (click [9] did
    nothing). The reference dropped step 0's example and, with it, step 1's own observation,
    so step 1 was trained on the `<|im_omitted|>` placeholder. Here step 1's example shows
    its real page, and step 0 is gone from every history."""
    traj, steps = trajectory([(PAGE_A, "click [9]"), (PAGE_A, "type [2] [alice] [press_enter_after=1]"),
                              (PAGE_C, "stop [alice]")])
    examples = sft.to_sft_examples(traj, steps)
    assert [e["step"] for e in examples] == [1, 2]
    assert examples[0]["prompt"] == build_messages(QUERY, PAGE_A, [])
    assert current_user_turn(examples[0]) == user_turn(PAGE_A, QUERY)
    assert all("click [9]" not in m["content"] for e in examples for m in e["prompt"])
    assert current_user_turn(examples[1]) == user_turn(PAGE_C, QUERY)


def test_a_failed_action_is_dropped_and_the_next_page_shown_without_its_error() -> None:
    traj, steps = trajectory([(PAGE_A, "click [9]"), (PAGE_A, "type [2] [alice] [press_enter_after=1]"),
                              (PAGE_B, "click [3]"), (PAGE_C, "stop [alice]")], errors={1: "element [9] not found"})
    examples = sft.to_sft_examples(traj, steps)
    assert [e["step"] for e in examples] == [1, 2, 3]
    assert current_user_turn(examples[0]) == user_turn(PAGE_A, QUERY)
    assert all("ERROR" not in m["content"] and "click [9]" not in m["content"]
               for e in examples for m in e["prompt"])


def test_drop_no_change_alone() -> None:
    _, steps = trajectory([(PAGE_A, "scroll [down]"), (PAGE_A, "scroll [down]"), (PAGE_A, "click [2]"),
                           (PAGE_B, "stop [alice]")])
    assert [(s.step, s.observation) for s in sft.drop_no_change(steps)] == [(2, PAGE_A), (3, PAGE_B)]


def test_wait_steps_are_dropped() -> None:
    traj, steps = trajectory([(PAGE_A, "wait"), (PAGE_B, "click [3]"), (PAGE_C, "wait"),
                              (PAGE_A, "stop [alice]")])
    examples = sft.to_sft_examples(traj, steps)
    assert [e["step"] for e in examples] == [1, 3]
    assert current_user_turn(examples[0]) == user_turn(PAGE_B, QUERY)
    assert [m["content"] for m in examples[1]["prompt"][1:]] == [
        OMITTED, format_reply("thought 1", "click [3]"), user_turn(PAGE_A, QUERY)]


# -- Parquet -------------------------------------------------------------------------------

def test_parquet_round_trip(tmp_path: Path) -> None:
    storage = Storage(f"file://{tmp_path}")
    traj, steps = trajectory([(PAGE_A, "type [2] [«ünï» ]] x] [press_enter_after=0]"), (PAGE_C, "stop [alice]")])
    examples = sft.to_sft_examples(traj, steps)
    uri = sft.write_sft_parquet(examples, storage, "run-1", 0, source_stage="sample")
    assert uri.endswith("runs/run-1/round=0/sft/examples/part-sample.parquet")
    assert sft.read_sft_parquet(storage, "run-1", 0) == examples
    assert sft.examples_from_table(pq.read_table(uri.removeprefix("file://"))) == examples
    # Rewriting the same source stage replaces its shard; another stage adds one.
    sft.write_sft_parquet(examples[:1], storage, "run-1", 0, source_stage="sample")
    sft.write_sft_parquet(examples[1:], storage, "run-1", 0, source_stage="synthesize")
    assert sft.read_sft_parquet(storage, "run-1", 0) == examples
