"""Trajectory records: the rows every stage writes, and their Arrow schemas.

Why explicit schemas: shards are written by many workers over many rounds and read back
with `pyarrow.dataset`, pandas or DuckDB; a fixed schema (types, nullability, UTC
microsecond timestamps) keeps every shard mergeable and makes a bad row fail at write
time instead of at training time. See DESIGN.md "Contracts" -> "Trajectory record".

Every table is declared once, as a dataclass; its Arrow schema is derived from the fields
(`arrow_schema`: order, types, `X | None` nullable, int widths from field metadata):

- ``steps``: one `StepRecord` per agent step (what the agent saw, thought and did).
- ``trajectories``: one `TrajectoryRecord` per trajectory (outcome, judge verdict).
- ``examples``, ``wm_transitions``, ``wm_fidelity``: `SftExampleRow`, `TransitionRow`,
  `FidelityRow` (rows written as dicts by `sft`, `world_model` and `fidelity`).

Records are frozen dataclasses; timestamps must be timezone-aware and are normalised to
`datetime.timezone.utc`, so `from_table(to_table(rs)) == rs` holds exactly. Secrets
(API keys, credentials) never belong in a record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, ClassVar, Iterable, Literal, get_args, get_origin, get_type_hints

import pyarrow as pa

TableName = Literal["steps", "trajectories", "examples", "wm_transitions", "wm_fidelity"]
Source = Literal["real", "synthetic"]
# "done": the page ended the task; "invalid": a synthetic step whose action or predicted page did
# not parse; "error": a fault that was not the agent's (crashed page, failing endpoint).
StopReason = Literal["stop", "done", "max_steps", "repeat", "invalid", "error"]

_TIMESTAMP = pa.timestamp("us", tz="UTC")
# Arrow types of the Python annotations; `field(metadata=...)` picks another width.
_ARROW: dict[object, pa.DataType] = {str: pa.string(), bool: pa.bool_(), float: pa.float64(), int: pa.int64(),
                                     datetime: _TIMESTAMP}
I32 = {"arrow": pa.int32()}
I8 = {"arrow": pa.int8()}


def arrow_schema(cls: type) -> pa.Schema:
    """The Arrow schema a record dataclass declares: its fields in order, `X | None` nullable,
    Literal types as their values' type, `list[X]` as a list, widths from field metadata."""
    hints = get_type_hints(cls)
    out = []
    for f in fields(cls):
        hint, nullable = hints[f.name], False
        if type(None) in get_args(hint) and get_origin(hint) is not Literal:
            nullable, hint = True, next(a for a in get_args(hint) if a is not type(None))
        if get_origin(hint) is Literal:
            hint = type(get_args(hint)[0])
        arrow = f.metadata.get("arrow") or (pa.list_(_ARROW[get_args(hint)[0]]) if get_origin(hint) is list
                                            else _ARROW[hint])
        out.append(pa.field(f.name, arrow, nullable=nullable))
    return pa.schema(out)


def scored(t: TrajectoryRecord) -> bool:
    """Whether a trajectory counts in a success rate: it has a gold reward and did not end in
    an error (a fault that was not the agent's is never a failure)."""
    return t.stop_reason != "error" and t.gold_reward is not None


def rewarded(gold_reward: float) -> bool:
    """Whether a gold reward says the task was solved (reward 1, as the paper counts success)."""
    return gold_reward >= 1.0


def solved(t: TrajectoryRecord) -> bool:
    return scored(t) and rewarded(t.gold_reward)  # type: ignore[arg-type]


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


def _normalise_times(record: object) -> None:
    """Timestamps must be timezone-aware and are stored in UTC."""
    for name in ("started_at", "ended_at"):
        object.__setattr__(record, name, _utc(name, getattr(record, name)))


@dataclass(frozen=True, kw_only=True, slots=True)
class StepRecord:
    """One agent step. ``action`` is the canonical formatted action, None if unparsable."""

    TABLE: ClassVar[TableName] = "steps"
    SCHEMA: ClassVar[pa.Schema]  # derived from the fields below (`arrow_schema`)

    run_id: str
    round: int = field(metadata=I32)
    stage: str
    task_id: str
    suite: str
    site: str
    query: str
    trajectory_id: str
    sample: int = field(metadata=I32)
    step: int = field(metadata=I32)
    url: str
    observation: str  # the page the agent saw (older shards: with the error line folded in)
    thought: str | None
    action_raw: str
    action: str | None
    action_valid: bool
    error: str | None
    model: str
    sampling: str  # canonical_json({"temperature":..., "top_p":..., "seed":..., "max_tokens":...})
    prompt_tokens: int
    completion_tokens: int
    started_at: datetime
    ended_at: datetime
    prompt: str | None = None  # canonical_json(chat messages)
    response: str | None = None
    screenshot: str | None = None  # URI of a PNG of the viewport before acting (`Storage.screenshot_path`)
    error_shown: str | None = None  # the previous action's error, shown to the agent beside the page

    def __post_init__(self) -> None:
        _normalise_times(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrajectoryRecord:
    """One trajectory's outcome; ``judge_verdict`` is 0/1 once judged, else None."""

    TABLE: ClassVar[TableName] = "trajectories"
    SCHEMA: ClassVar[pa.Schema]  # derived from the fields below (`arrow_schema`)

    run_id: str
    round: int = field(metadata=I32)
    stage: str
    trajectory_id: str
    task_id: str
    suite: str
    site: str
    split: str
    query: str
    sample: int = field(metadata=I32)
    seed: int
    source: Source
    model: str
    n_steps: int = field(metadata=I32)
    final_answer: str | None
    stop_reason: StopReason
    judge_verdict: int | None = field(default=None, metadata=I8)
    judge_reasoning: str | None = None
    gold_reward: float | None = None
    started_at: datetime
    ended_at: datetime
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None  # why an error episode ended (stop_reason "error")
    final_url: str | None = None  # the page after the last action (None: ended by `stop`)
    final_observation: str | None = None
    identity: str | None = None  # `StageIdentity.digest` of the stage that wrote it

    def __post_init__(self) -> None:
        _normalise_times(self)
        _check_choice("source", self.source, get_args(Source))
        _check_choice("stop_reason", self.stop_reason, get_args(StopReason))
        _check_choice("judge_verdict", self.judge_verdict, (None, 0, 1))


@dataclass(frozen=True, kw_only=True)
class SftExampleRow:
    """One SFT example (the `to_sft` stage; `evolver_core.training.sft` makes and reads them)."""

    run_id: str
    round: int = field(metadata=I32)
    stage: str
    source_stage: str  # the stage the trajectories came from
    trajectory_id: str
    step: int = field(metadata=I32)
    source: str  # "real" | "synthetic"
    prompt: str  # canonical JSON of the chat messages
    completion: str  # canonical JSON: [assistant turn]


@dataclass(frozen=True, kw_only=True)
class TransitionRow:
    """A world-model transition with its distilled rationale (`evolver_core.world_model.model`)."""

    run_id: str
    round: int = field(metadata=I32)
    stage: str
    trajectory_id: str
    step: int = field(metadata=I32)
    objective: str
    start_url: str
    past_actions: list[str]
    last_observation: str | None  # None for first steps
    action: str | None  # None for first steps
    next_observation: str
    action_key: str
    site: str
    source: str
    rationale: str | None  # None: the preset distills none (`WorldModelConfig.rationale_max_tokens` 0)
    ends: bool | None = None  # the action ended the episode (None: stored before this was recorded)
    success: bool | None = None  # how it ended, when it did and a gold reward says


@dataclass(frozen=True, kw_only=True)
class FidelityRow:
    """One held-out real transition, the world model's prediction and its scores
    (`evolver_core.world_model.fidelity.measure_fidelity`)."""

    run_id: str
    round: int = field(metadata=I32)
    stage: str
    trajectory_id: str
    step: int = field(metadata=I32)
    action: str | None  # None: the first page
    predicted: str  # the world model's whole reply
    real: str
    str: bool
    sim: float
    oa: int | None = field(default=None, metadata=I8)  # None: not judged, or the verdict did not parse
    cut: bool | None = None  # the token limit stopped the prediction (None: scored before this was recorded)
    exact: bool | None = None  # the predicted page is the real one (None: scored before this was recorded)
    ends: bool | None = None  # the world model said the action ends the episode


STEP_SCHEMA = StepRecord.SCHEMA = arrow_schema(StepRecord)
TRAJECTORY_SCHEMA = TrajectoryRecord.SCHEMA = arrow_schema(TrajectoryRecord)
Record = StepRecord | TrajectoryRecord
RECORD_TYPES: dict[TableName, type[StepRecord] | type[TrajectoryRecord]] = {
    "steps": StepRecord,
    "trajectories": TrajectoryRecord,
}
SFT_TABLE = "examples"
SFT_SCHEMA = arrow_schema(SftExampleRow)
WM_TRANSITION_TABLE = "wm_transitions"
WM_TRANSITION_SCHEMA = arrow_schema(TransitionRow)
FIDELITY_TABLE = "wm_fidelity"
FIDELITY_SCHEMA = arrow_schema(FidelityRow)
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
    "steps": ("screenshot", "error_shown"), "trajectories": ("error", "final_url", "final_observation", "identity")}


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
