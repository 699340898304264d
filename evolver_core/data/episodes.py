"""Stored episodes read back as typed records (what SFT conversion, world-model data,
synthesis and fidelity read)."""

from __future__ import annotations

from evolver_core.data.records import StepRecord, TrajectoryRecord, from_table
from evolver_core.data.storage import Storage


def read_episodes(store: Storage, run_id: str, round_: int, stage: str, *,
                  verdicts: str | None = None) -> tuple[list[TrajectoryRecord], list[StepRecord]]:
    """The trajectory and step records of `stage`; the trajectory rows come from `verdicts`
    when another stage holds them with their verdicts (the judge stage's copy)."""
    trajs = from_table(store.read_table(run_id, round_, verdicts or stage, table_name="trajectories"))
    steps = from_table(store.read_table(run_id, round_, stage, table_name="steps"))
    return trajs, steps  # type: ignore[return-value]
