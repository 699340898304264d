"""Trajectory records: the rows every stage writes, and their Arrow schemas.

Why explicit schemas: shards are written by many workers over many rounds and read back
with `pyarrow.dataset`, pandas or DuckDB; a fixed schema (types, nullability, UTC
microsecond timestamps) keeps every shard mergeable and makes a bad row fail at write
time instead of at training time. See DESIGN.md "Contracts" -> "Trajectory record".

Two tables:

- ``steps``: one `StepRecord` per agent step (what the agent saw, thought and did).
- ``trajectories``: one `TrajectoryRecord` per trajectory (outcome, judge verdict).

Records are frozen dataclasses; timestamps must be timezone-aware and are normalised to
`datetime.timezone.utc`, so `from_table(to_table(rs)) == rs` holds exactly. Secrets
(API keys, credentials) never belong in a record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, Iterable, Literal, get_args

import pyarrow as pa

TableName = Literal["steps", "trajectories", "examples", "wm_transitions", "wm_fidelity"]
Source = Literal["real", "synthetic"]
# "done": the page ended the task; "invalid": a synthetic step whose action or predicted page did
# not parse; "error": a fault that was not the agent's (crashed page, failing endpoint).
StopReason = Literal["stop", "done", "max_steps", "repeat", "invalid", "error"]

_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _optional(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=True)


_IDENTITY_FIELDS = [
    _required("run_id", pa.string()),
    _required("round", pa.int32()),
    _required("stage", pa.string()),
]

STEP_SCHEMA = pa.schema(
    [
        *_IDENTITY_FIELDS,
        _required("task_id", pa.string()),
        _required("suite", pa.string()),
        _required("site", pa.string()),
        _required("query", pa.string()),
        _required("trajectory_id", pa.string()),
        _required("sample", pa.int32()),
        _required("step", pa.int32()),
        _required("url", pa.string()),
        _required("observation", pa.string()),
        _optional("thought", pa.string()),
        _required("action_raw", pa.string()),
        _optional("action", pa.string()),
        _required("action_valid", pa.bool_()),
        _optional("error", pa.string()),
        _required("model", pa.string()),
        _required("sampling", pa.string()),
        _required("prompt_tokens", pa.int64()),
        _required("completion_tokens", pa.int64()),
        _required("started_at", _TIMESTAMP),
        _required("ended_at", _TIMESTAMP),
        _optional("prompt", pa.string()),
        _optional("response", pa.string()),
        _optional("screenshot", pa.string()),  # URI of the page as the agent saw it; null: none taken
    ]
)

TRAJECTORY_SCHEMA = pa.schema(
    [
        *_IDENTITY_FIELDS,
        _required("trajectory_id", pa.string()),
        _required("task_id", pa.string()),
        _required("suite", pa.string()),
        _required("site", pa.string()),
        _required("split", pa.string()),
        _required("query", pa.string()),
        _required("sample", pa.int32()),
        _required("seed", pa.int64()),
        _required("source", pa.string()),
        _required("model", pa.string()),
        _required("n_steps", pa.int32()),
        _optional("final_answer", pa.string()),
        _required("stop_reason", pa.string()),
        _optional("judge_verdict", pa.int8()),
        _optional("judge_reasoning", pa.string()),
        _optional("gold_reward", pa.float64()),
        _required("started_at", _TIMESTAMP),
        _required("ended_at", _TIMESTAMP),
        _required("prompt_tokens", pa.int64()),
        _required("completion_tokens", pa.int64()),
        _optional("error", pa.string()),  # why an error episode ended (stop_reason "error")
        _optional("final_url", pa.string()),  # the page after the last action (null: ended by `stop`)
        _optional("final_observation", pa.string()),
        _optional("identity", pa.string()),  # digest of the stage identity that produced the row
    ]
)


def trajectory_id(task_id: str, sample: int) -> str:
    """The id shared by a trajectory's row and its step rows: ``"<task_id>#<sample>"``."""
    return f"{task_id}#{sample}"


def canonical_json(value: Any) -> str:
    """Deterministic JSON text for the ``sampling`` and ``prompt`` columns."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _utc(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")
    return value.astimezone(timezone.utc)


def _check_choice(name: str, value: object, choices: tuple[object, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class _Timed:
    """Base of both records: normalises the start/end timestamps to UTC."""

    started_at: datetime
    ended_at: datetime

    def __post_init__(self) -> None:
        for name in ("started_at", "ended_at"):
            object.__setattr__(self, name, _utc(name, getattr(self, name)))


@dataclass(frozen=True, kw_only=True, slots=True)
class StepRecord(_Timed):
    """One agent step. ``action`` is the canonical formatted action, None if unparsable."""

    TABLE: ClassVar[TableName] = "steps"
    SCHEMA: ClassVar[pa.Schema] = STEP_SCHEMA

    run_id: str
    round: int
    stage: str
    task_id: str
    suite: str
    site: str
    query: str
    trajectory_id: str
    sample: int
    step: int
    url: str
    observation: str
    thought: str | None
    action_raw: str
    action: str | None
    action_valid: bool
    error: str | None
    model: str
    sampling: str  # canonical_json({"temperature":..., "top_p":..., "seed":..., "max_tokens":...})
    prompt_tokens: int
    completion_tokens: int
    prompt: str | None = None  # canonical_json(chat messages)
    response: str | None = None
    screenshot: str | None = None  # URI of a PNG of the viewport before acting (`Storage.screenshot_path`)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrajectoryRecord(_Timed):
    """One trajectory's outcome; ``judge_verdict`` is 0/1 once judged, else None."""

    TABLE: ClassVar[TableName] = "trajectories"
    SCHEMA: ClassVar[pa.Schema] = TRAJECTORY_SCHEMA

    run_id: str
    round: int
    stage: str
    trajectory_id: str
    task_id: str
    suite: str
    site: str
    split: str
    query: str
    sample: int
    seed: int
    source: Source
    model: str
    n_steps: int
    final_answer: str | None
    stop_reason: StopReason
    judge_verdict: int | None = None
    judge_reasoning: str | None = None
    gold_reward: float | None = None
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None
    final_url: str | None = None
    final_observation: str | None = None
    identity: str | None = None  # `StageIdentity.digest` of the stage that wrote it

    def __post_init__(self) -> None:
        super(TrajectoryRecord, self).__post_init__()
        _check_choice("source", self.source, get_args(Source))
        _check_choice("stop_reason", self.stop_reason, get_args(StopReason))
        _check_choice("judge_verdict", self.judge_verdict, (None, 0, 1))


Record = StepRecord | TrajectoryRecord
RECORD_TYPES: dict[TableName, type[StepRecord] | type[TrajectoryRecord]] = {
    "steps": StepRecord,
    "trajectories": TrajectoryRecord,
}
# One SFT example per row (the `to_sft` stage; `evolver_core.sft` makes and reads them).
SFT_TABLE = "examples"
SFT_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("source_stage", pa.string(), nullable=False),  # the stage the trajectories came from
        pa.field("trajectory_id", pa.string(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # "real" | "synthetic"
        pa.field("prompt", pa.string(), nullable=False),  # canonical JSON of the chat messages
        pa.field("completion", pa.string(), nullable=False),  # canonical JSON: [assistant turn]
    ]
)
# World-model transitions with their distilled rationales (`evolver_core.world_model`).
WM_TRANSITION_TABLE = "wm_transitions"
WM_TRANSITION_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("trajectory_id", pa.string(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("objective", pa.string(), nullable=False),
        pa.field("start_url", pa.string(), nullable=False),
        pa.field("past_actions", pa.list_(pa.string()), nullable=False),
        pa.field("last_observation", pa.string(), nullable=True),  # null for first steps
        pa.field("action", pa.string(), nullable=True),  # null for first steps
        pa.field("next_observation", pa.string(), nullable=False),
        pa.field("action_key", pa.string(), nullable=False),
        pa.field("site", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("rationale", pa.string(), nullable=False),
    ]
)
# World-model fidelity: one held-out real transition per row, the prediction and its scores
# (`evolver_core.fidelity.measure_fidelity`).
FIDELITY_TABLE = "wm_fidelity"
FIDELITY_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("trajectory_id", pa.string(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("action", pa.string(), nullable=True),  # null: the first page
        pa.field("predicted", pa.string(), nullable=False),  # the world model's whole reply
        pa.field("real", pa.string(), nullable=False),
        pa.field("str", pa.bool_(), nullable=False),
        pa.field("sim", pa.float64(), nullable=False),
        pa.field("oa", pa.int8(), nullable=True),  # null: not judged, or the verdict did not parse
    ]
)
# `Storage` reads and writes the tables named here.
SCHEMAS: dict[TableName, pa.Schema] = {
    **{name: cls.SCHEMA for name, cls in RECORD_TYPES.items()},
    SFT_TABLE: SFT_SCHEMA,
    WM_TRANSITION_TABLE: WM_TRANSITION_SCHEMA,
    FIDELITY_TABLE: FIDELITY_SCHEMA,
}


def validate_table(table: pa.Table, schema: pa.Schema) -> None:
    """Raise ValueError unless `table` has exactly `schema` and no null in a required field.

    Arrow does not enforce nullability on its own, hence the explicit null check.
    """
    if not table.schema.equals(schema, check_metadata=False):
        raise ValueError(f"table schema differs from the expected:\n{table.schema}\n!=\n{schema}")
    nulls = [f.name for f in schema if not f.nullable and table.column(f.name).null_count]
    if nulls:
        raise ValueError(f"null values in required fields: {nulls}")


def to_table(
    records: Iterable[Record],
    record_type: type[StepRecord] | type[TrajectoryRecord] | None = None,
) -> pa.Table:
    """Records of one type -> a validated Arrow table; `record_type` is needed when empty."""
    rows = list(records)
    cls = record_type or (type(rows[0]) if rows else None)
    if cls is None:
        raise ValueError("record_type is required to build a table from no records")
    wrong = {type(r).__name__ for r in rows if type(r) is not cls}
    if wrong:
        raise TypeError(f"all records must be {cls.__name__}, got {sorted(wrong)}")
    names = cls.SCHEMA.names
    rows_as_dicts = [{n: getattr(r, n) for n in names} for r in rows]
    table = pa.Table.from_pylist(rows_as_dicts, schema=cls.SCHEMA)
    validate_table(table, cls.SCHEMA)
    return table


# Nullable columns added after data was written: Parquet from before lacks them and reads as
# null (`Storage` reads through the full schema, which fills them; `from_table` does the same).
ADDED_COLUMNS: dict[TableName, tuple[str, ...]] = {
    "steps": ("screenshot",), "trajectories": ("error", "final_url", "final_observation", "identity")}


def record_type_of(schema: pa.Schema) -> type[StepRecord] | type[TrajectoryRecord]:
    """The record class whose schema has these column names (in any order), less at most
    its `ADDED_COLUMNS`."""
    for name, cls in RECORD_TYPES.items():
        missing = set(cls.SCHEMA.names) - set(schema.names)
        if set(schema.names) <= set(cls.SCHEMA.names) and missing <= set(ADDED_COLUMNS.get(name, ())):
            return cls
    raise ValueError(f"columns match no record schema: {schema.names}")


def from_table(table: pa.Table) -> list[StepRecord] | list[TrajectoryRecord]:
    """Arrow table (e.g. read from Parquet) -> records; the type follows the columns."""
    cls = record_type_of(table.schema)
    for f in cls.SCHEMA:
        if f.name not in table.column_names:  # an older shard: see ADDED_COLUMNS
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    table = table.select(cls.SCHEMA.names).cast(cls.SCHEMA)
    validate_table(table, cls.SCHEMA)
    return [cls(**row) for row in table.to_pylist()]
