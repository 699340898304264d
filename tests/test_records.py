"""Record schemas: field presence, validation, and exact round trips through Parquet."""

from __future__ import annotations

import dataclasses
import io
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evolver_core.data.records import (
    STEP_SCHEMA,
    TRAJECTORY_SCHEMA,
    StepRecord,
    TrajectoryRecord,
    from_table,
    to_table,
)
from helpers import T0, make_step, make_trajectory

STEPS = [
    make_step(),
    make_step(step=1, thought=None, action_raw="clik [9]", action=None, action_valid=False,
              error="unparsable action: clik [9]", prompt=None, response=None),
]
TRAJECTORIES = [
    make_trajectory(),
    make_trajectory(
        trajectory_id="login-user#1", sample=1, source="synthetic", final_answer="done",
        stop_reason="max_steps", judge_verdict=None, judge_reasoning=None, gold_reward=None,
    ),  # fmt: skip
]


def test_schemas_have_the_contract_fields() -> None:
    step_fields = {
        "run_id", "round", "stage", "task_id", "suite", "site", "query", "trajectory_id", "sample",
        "step", "url", "observation", "thought", "action_raw", "action", "action_valid", "error",
        "model", "sampling", "prompt_tokens", "completion_tokens", "started_at", "ended_at",
        "prompt", "response", "screenshot", "error_shown",
    }  # fmt: skip
    trajectory_fields = {
        "run_id", "round", "stage", "trajectory_id", "task_id", "suite", "site", "split", "query",
        "sample", "seed", "source", "model", "n_steps", "final_answer", "stop_reason",
        "judge_verdict", "judge_reasoning", "gold_reward", "started_at", "ended_at",
        "prompt_tokens", "completion_tokens", "error", "final_url", "final_observation", "identity",
    }  # fmt: skip
    assert set(STEP_SCHEMA.names) == step_fields
    assert set(TRAJECTORY_SCHEMA.names) == trajectory_fields
    for cls in (StepRecord, TrajectoryRecord):
        assert {f.name for f in dataclasses.fields(cls)} == set(cls.SCHEMA.names)
    nullable_steps = {"thought", "action", "error", "prompt", "response", "screenshot", "error_shown"}
    assert {f.name for f in STEP_SCHEMA if f.nullable} == nullable_steps
    assert {f.name for f in TRAJECTORY_SCHEMA if f.nullable} == {
        "final_answer", "judge_verdict", "judge_reasoning", "gold_reward", "error", "final_url",
        "final_observation", "identity",
    }  # fmt: skip
    for schema in (STEP_SCHEMA, TRAJECTORY_SCHEMA):
        assert schema.field("started_at").type == pa.timestamp("us", tz="UTC")
        assert not any("key" in name or "secret" in name for name in schema.names)


@pytest.mark.parametrize("records", [STEPS, TRAJECTORIES], ids=["steps", "trajectories"])
def test_round_trip_through_parquet(records: list) -> None:
    table = to_table(records)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    read = pq.read_table(io.BytesIO(buffer.getvalue()))
    assert read.schema.equals(table.schema, check_metadata=False)  # nullability survives
    assert from_table(read) == records


def test_from_table_ignores_column_order_and_rejects_unknown_columns() -> None:
    table = to_table(TRAJECTORIES)
    assert from_table(table.select(list(reversed(table.column_names)))) == TRAJECTORIES
    with pytest.raises(ValueError, match="match no record schema"):
        from_table(table.append_column("api_key", pa.array(["x", "y"])))


def test_steps_from_before_the_screenshot_column_read_as_null() -> None:
    """Shards written before a column of ADDED_COLUMNS existed still read; only those may be missing."""
    old = to_table(STEPS).drop_columns(["screenshot"])
    assert [r.screenshot for r in from_table(old)] == [None, None]
    assert from_table(old) == [dataclasses.replace(r, screenshot=None) for r in STEPS]
    with pytest.raises(ValueError, match="match no record schema"):
        from_table(to_table(STEPS).drop_columns(["response"]))  # not an added column: a broken table


def test_timestamps_are_normalised_to_utc_and_must_be_aware() -> None:
    step = make_step()
    assert step.ended_at.tzinfo is timezone.utc
    assert step.ended_at == T0 + timedelta(seconds=3)
    with pytest.raises(ValueError, match="timezone-aware"):
        make_step(started_at=datetime(2026, 1, 1))


def test_null_in_required_field_is_rejected() -> None:
    with pytest.raises(ValueError, match="observation"):
        to_table([make_step(observation=None)])


@pytest.mark.parametrize(
    "overrides", [{"source": "fake"}, {"stop_reason": "bored"}, {"judge_verdict": 2}]
)
def test_trajectory_choices_are_checked(overrides: dict) -> None:
    with pytest.raises(ValueError):
        make_trajectory(**overrides)


def test_empty_and_mixed_inputs() -> None:
    empty = to_table([], StepRecord)
    assert empty.num_rows == 0 and empty.schema == STEP_SCHEMA
    assert from_table(empty) == []
    with pytest.raises(ValueError, match="record_type"):
        to_table([])
    with pytest.raises(TypeError):
        to_table([STEPS[0], TRAJECTORIES[0]])
