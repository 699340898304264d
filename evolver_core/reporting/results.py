"""Success of stored evaluation stages, as the paper reports it: the share of scored episodes
solved (gold reward 1), with a 95% Wilson interval. Error episodes (a crashed page, a failing
endpoint) are not scored; episodes without gold are counted apart."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Iterable, Optional

import pyarrow.compute as pc

from evolver_core.data.records import TrajectoryRecord, from_table, scored, solved
from evolver_core.data.run_layout import SYNTHESIZE, PolicyArm, training_rounds
from evolver_core.data.storage import Storage
from evolver_core.reporting.metrics import PairedDifference, paired_difference, wilson_interval


@dataclass(frozen=True)
class Success:
    episodes: int  # stored
    scored: int  # with a gold reward, not error episodes
    solved: int
    errors: int

    @property
    def rate(self) -> Optional[float]:
        return self.solved / self.scored if self.scored else None

    @property
    def ci(self) -> Optional[tuple[float, float]]:
        return wilson_interval(self.solved, self.scored) if self.scored else None

    def to_json(self) -> dict:
        return asdict(self) | {"success_rate": self.rate, "ci": self.ci}


def success_of(trajectories: Iterable[TrajectoryRecord]) -> Success:
    trajs = list(trajectories)
    return Success(episodes=len(trajs), scored=sum(map(scored, trajs)), solved=sum(map(solved, trajs)),
                   errors=sum(t.stop_reason == "error" for t in trajs))


def stage_trajectories(store: Storage, run_id: str, round_: int, stage: str) -> list[TrajectoryRecord]:
    return from_table(store.read_table(run_id, round_, stage, table_name="trajectories"))  # type: ignore[return-value]


def stage_success(store: Storage, run_id: str, round_: int, stage: str,
                  task_ids: Optional[Iterable[str]] = None) -> Success:
    """Success of a stage's trajectories, optionally only those of `task_ids` (e.g. plain
    decoding on the tasks a look-ahead evaluation could afford)."""
    trajs = stage_trajectories(store, run_id, round_, stage)
    if task_ids is not None:
        wanted = set(task_ids)
        trajs = [t for t in trajs if t.task_id in wanted]
    return success_of(trajs)


def stage_outcomes(store: Storage, run_id: str, round_: int, stage: str) -> dict[str, Optional[bool]]:
    """Each episode's outcome by task id (a task id carries its seed; None: not scored, an
    error episode or one without gold): what a paired comparison of two stages on the same episodes reads."""
    return {t.task_id: solved(t) if scored(t) else None for t in stage_trajectories(store, run_id, round_, stage)}


def paired_stages(store: Storage, run_id: str, round_: int, stage: str, baseline: str) -> PairedDifference:
    """`stage` minus `baseline` on the episodes both scored; `dropped` counts those both ran
    that either did not score."""
    return paired_difference(stage_outcomes(store, run_id, round_, stage),
                             stage_outcomes(store, run_id, round_, baseline))


def real_episodes(store: Storage, run_id: str, round_: int, arm: PolicyArm) -> int:
    """Every episode in the real environment whose outcome fed the arm's data up to round
    `round_`: its sampled trajectories of rounds 0..i (`PolicyArm.sample_stage`), and, for the
    arm that trains on synthetic data, each synthetic trajectory replayed on the real page (a
    replayed one has the page's reward as its gold reward)."""
    count = sum(store.dataset(run_id, r, arm.sample_stage(r), table_name="trajectories").count_rows()
                for r in training_rounds(round_))
    if arm.synthetic:
        count += sum(store.dataset(run_id, r, SYNTHESIZE, table_name="trajectories").count_rows(
            filter=pc.field("gold_reward").is_valid()) for r in training_rounds(round_))
    return count


def played_seeds(store: Storage, run_id: str, round_: int) -> dict[str, tuple[int, int]]:
    """The lowest and highest seed of the round's real episodes, by split."""
    rows = store.dataset(run_id, round_, table_name="trajectories").to_table(
        columns=["split", "seed"], filter=pc.field("source") == "real").to_pylist()
    out: dict[str, tuple[int, int]] = {}
    for row in rows:
        low, high = out.get(row["split"], (row["seed"], row["seed"]))
        out[row["split"]] = (min(low, row["seed"]), max(high, row["seed"]))
    return out


@dataclass(frozen=True)
class LookaheadStats:
    """What look-ahead did in an evaluation stage (`lookahead_stats`)."""

    steps: int
    distinct_candidates: Optional[float]  # per step
    scored: int  # candidates scored
    parse_rate: Optional[float]  # of those scores, the share that parsed
    ends: int  # candidates the world-model scorer scored at a predicted end
    by_probability: int  # of those, scored by its probability of success (0: the server gave no log-probabilities)
    not_greedy: int  # steps where a candidate other than the greedy one was chosen


def lookahead_stats(store: Storage, run_id: str, round_: int, stage: str) -> LookaheadStats:
    """What look-ahead did in an evaluation stage, from the records of its steps
    (`Turn.sampling["lookahead"]`)."""
    column = store.read_table(run_id, round_, stage, table_name="steps").column("sampling").to_pylist()
    records = [r["lookahead"] for r in map(json.loads, column) if "lookahead" in r]
    scored_candidates = [c for r in records if len(r["candidates"]) > 1 for c in r["candidates"]]
    parsed = sum(c["score_parsed"] is not None for c in scored_candidates)
    ends = [c["simulation"][-1] for c in scored_candidates
            if c["scorer_reply"] is None and c["simulation"] and c["simulation"][-1]["ends"]]
    return LookaheadStats(
        steps=len(records),
        distinct_candidates=sum(len(r["candidates"]) for r in records) / len(records) if records else None,
        scored=len(scored_candidates), parse_rate=parsed / len(scored_candidates) if scored_candidates else None,
        ends=len(ends), by_probability=sum(e.get("p_success") is not None for e in ends),
        not_greedy=sum(r["chosen"] != 0 for r in records))


def stage_task_ids(store: Storage, run_id: str, round_: int, stage: str) -> list[str]:
    return sorted(set(store.read_table(run_id, round_, stage, table_name="trajectories").column("task_id")
                      .to_pylist()))


def arm(stage: str) -> str:
    """The arm an evaluation stage measures: `eval` (repeats `eval-<r>` included), `eval-self`, ..."""
    head, _, tail = stage.partition("-")
    return head if not tail or tail.isdigit() else stage
