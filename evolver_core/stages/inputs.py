"""What every stage's inputs begin with: the round whose results it writes."""

from __future__ import annotations

from dataclasses import dataclass

from evolver_core.data.storage import Storage


@dataclass(frozen=True)
class StageInputs:
    """A stage's inputs, one frozen record per stage (`<Stage>Inputs`, beside the stage): the
    stage function, its identity, its Prefect task (as its one parameter, hashed into the
    task's cache key) and the CLI take the same record. This part: where the results go."""

    root: str  # the storage root
    run_id: str
    round: int

    def store(self) -> Storage:
        return Storage(self.root)
