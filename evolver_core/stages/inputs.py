"""What every stage's inputs begin with: the round whose results it writes."""

from __future__ import annotations

from dataclasses import dataclass

from evolver_core.data.stage_work import TokenUsage, record_usage
from evolver_core.data.storage import Storage
from evolver_core.llm import LLMClient


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

    def record_calls(self, stage: str, *clients: LLMClient) -> None:
        """Store the tokens of every model call `clients` made for `stage` (its `usage.json`,
        `data.stage_work`): for stages whose stored rows do not hold them."""
        record_usage(self.store(), self.run_id, self.round, stage,
                     TokenUsage(prompt_tokens=sum(c.usage.prompt_tokens for c in clients),
                                generated_tokens=sum(c.usage.completion_tokens for c in clients)))
