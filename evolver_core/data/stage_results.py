"""What each stage returns: counts, URIs and the digest of its identity (the data itself is
in the storage root). The tasks return these records, Prefect persists them as task results
(pickled: keep them small) and the flows and the round summary read them by attribute.
They live here, below every folder that makes or reads them (`sampling`, `judge`, `stages`,
`reporting`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class SampleSummary:
    """A sampling stage (or shard): filled in as its episodes are stored."""

    run_id: str
    uri: str
    trajectories: int  # stored for this stage, including those from earlier (resumed) runs
    new: int
    skipped: int
    failed: int
    steps: int
    valid_actions: int
    solved: int  # gold reward 1.0
    with_gold: int  # scored episodes (error episodes are not scored)
    errors: list[str] = field(default_factory=list)
    error_episodes: int = 0  # stored with stop_reason "error" (replayed on resume)
    repaired: list[str] = field(default_factory=list)  # broken shards found and rewritten
    identity: str | None = None  # digest of the stage identity the trajectories belong to

    @property
    def success_rate(self) -> float | None:
        return self.solved / self.with_gold if self.with_gold else None

    @property
    def action_validity(self) -> float | None:
        return self.valid_actions / self.steps if self.steps else None

    def to_json(self) -> dict:
        """Counts and rates (the errors are in the raised `SamplingError` and the stored rows)."""
        out = asdict(self)
        out.pop("errors")
        return out | {"success_rate": self.success_rate, "action_validity": self.action_validity}


@dataclass
class JudgeSummary:
    """The judge stage: r̂'s verdicts on a stage's trajectories."""

    judged: int
    new: int
    successes: int
    unparsable: int
    agreement: dict  # accuracy / precision / recall / n against gold rewards (None where no gold)
    without_gold: int = 0  # trajectories only r̂ can rate (e.g. WebVoyager, synthetic ones)
    successes_without_gold: int = 0
    stage: str | None = None  # where the verdicts are stored
    identity: str | None = None


@dataclass(frozen=True)
class SftSummary:
    """`to_sft`: rejection sampling of a stage's trajectories into chat examples."""

    uri: str
    stage: str
    source_stage: str
    trajectories: int
    kept: int
    examples: int
    reasons: dict[str, int]  # trajectories by why they were kept or dropped
    identity: str


@dataclass(frozen=True)
class AdapterSummary:
    """`finetune` / `finetune_wm`: a trained (or reused) LoRA adapter."""

    adapter_uri: str
    adapter_digest: str  # content digest: what the next stages' identities name
    base_model: str
    examples: int
    data_digest: str  # of the examples trained on (`training.sft.examples_digest`): equal digests, equal data
    stage: str
    identity: str
    metrics: dict  # the trainer's (`training.finetune.FinetuneMetrics`, without the loss history)

    @property
    def train_loss(self) -> float:
        return self.metrics["train_loss"]


@dataclass(frozen=True)
class WmDataSummary:
    """`wm_data`: the world model's transitions and examples of a round."""

    uri: str
    sft_uri: str
    transitions: int  # all predictable transitions of the source stage
    kept: int  # after the caps
    first_steps: int
    examples: int
    identity: str


@dataclass(frozen=True)
class SynthesisSummary:
    """`synthesize`: synthetic trajectories for the failed queries."""

    failed_queries: int
    trajectories: int
    judged_successes: int
    replay_successes: Optional[int]  # None unless the replay filter ran
    stop_reasons: dict[str, int]
    terminal: int  # ended where the world model said the episode ends
    filter: str
    judge_agreement: Optional[dict]  # r̂ against the replayed reward (replay filter only)
    uri: str
    identity: str
    new: int = 0
    steps: int = 0
    valid_actions: int = 0


@dataclass(frozen=True)
class FidelitySummary:
    """`fidelity`: the world model's measures on held-out real transitions
    (`world_model.fidelity.measure_fidelity`'s report; rates None when there are none)."""

    n: int
    str: Optional[float]  # the prediction parses as a page tree
    sim: Optional[float]
    oa: Optional[float]
    oa_unparsable: Optional[int]
    exact: Optional[float]
    change_f1: Optional[float]
    terminal: Optional[float]
    copy: dict  # the same measures of the copy baseline on the same transitions
    uri: Optional[str] = None  # the scored rows (none when nothing was scored)
    identity: Optional[str] = None
