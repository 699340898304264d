"""Rejection sampling and agent SFT conversion: stored trajectories -> chat examples.

Two stages of an evolution round (DESIGN.md "The loop"):

1. **Judge filter** (`keep_trajectory`): keep a trajectory only if it was judged a success
   (``judge_verdict == 1``; with ``use_gold``, ``gold_reward >= 1`` instead, for
   demonstration rounds that have no judge), ends with ``stop`` and a real answer (not empty,
   not "N/A") or with the page saying the task is over (``done``: MiniWoB asks for no
   answer), has every step stored, and every action parsed. Each decision comes with a
   reason, for the per-stage counts table (`convert_trajectories`).
2. **To SFT** (`to_sft_examples`): one example per remaining step. Its prompt is exactly
   what the policy is prompted with at that step (`policy.build_messages`, the clipped
   history c_t^clip), its completion the step's ``Thought: ...\\nAction: <canonical action>``.

Example format: TRL's conversational *prompt-completion* form,
``{"prompt": [system, user, assistant, ..., user], "completion": [assistant]}``. TRL 1.16
puts the loss on the completion only. The "messages" form would not do: there,
``assistant_only_loss`` trains on every assistant turn, and the earlier ones are history
(context), not targets.

Step cleaning, before the conversion (reference notes section 6, fixed):

- No-change filter (`drop_no_change`): a step whose action changed nothing (the next
  observation shows the same page) or failed (the next step shows its error) is
  dropped: no example of it, and it leaves every later history. The reference's index
  arithmetic also erased the *next* step's real observation, training the model to act on
  the ``<|im_omitted|>`` placeholder; here the next step keeps its own observation. It
  keeps it without the error line: the failed action that line reports is gone from the
  history.
- Wait filter (`drop_wait`): ``wait`` steps are dropped the same way. The reference dropped
  only the first one; every ``wait`` teaches nothing about the page.

The reference also dropped trajectories mentioning "log in" (its prompt carried a
hard-coded Google login); there are no credentials in our prompts, so that rule is gone.

Storage: examples go to Parquet (`SFT_SCHEMA`: ids plus the prompt and completion as JSON
text), one shard per source stage, so converting a stage again replaces its shard:
``runs/<run>/round=<i>/<stage>/examples/part-<source stage>.parquet``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from evolver_core.contracts.actions import parse_action
from evolver_core.contracts.agent import EXPLORER
from evolver_core.contracts.prompt import PastStep, build_messages
from evolver_core.contracts.reply import format_reply
from evolver_core.data.records import SFT_SCHEMA, SFT_TABLE, StepRecord, TrajectoryRecord, canonical_json
from evolver_core.data.storage import Storage

Example = dict[str, Any]

KEPT = "kept"
NOT_JUDGED = "not_judged"
JUDGED_FAILURE = "judged_failure"
NO_GOLD = "no_gold"
GOLD_FAILURE = "gold_failure"
NO_STOP = "no_stop"
NO_ANSWER = "no_answer"
MISSING_STEPS = "missing_steps"
INVALID_ACTION = "invalid_action"
EXPLORATION = "exploration"  # the world model's data, never the policy's

NO_ANSWERS = ("", "n/a")  # compared case-insensitively, after stripping




# -- judge filter --------------------------------------------------------------------------

def keep_trajectory(traj: TrajectoryRecord, steps: Sequence[StepRecord], *,
                    use_gold: bool = False) -> tuple[bool, str]:
    """(kept?, reason): reason is `KEPT` or the first rule the trajectory breaks."""
    if traj.model == EXPLORER:
        return False, EXPLORATION
    if use_gold:
        if traj.gold_reward is None:
            return False, NO_GOLD
        if traj.gold_reward < 1:
            return False, GOLD_FAILURE
    elif traj.judge_verdict is None:
        return False, NOT_JUDGED
    elif traj.judge_verdict != 1:
        return False, JUDGED_FAILURE
    if traj.stop_reason not in ("stop", "done"):  # "done": the page ended the task
        return False, NO_STOP
    if traj.stop_reason == "stop" and (traj.final_answer or "").strip().lower() in NO_ANSWERS:
        return False, NO_ANSWER
    if len(steps) != traj.n_steps:
        return False, MISSING_STEPS
    if not all(s.action_valid for s in steps):
        return False, INVALID_ACTION
    return True, KEPT


# -- step cleaning -------------------------------------------------------------------------

@dataclass(frozen=True)
class SftStep:
    """A step as the SFT examples show it."""

    step: int  # index in the original trajectory
    observation: str  # the page, without an error line
    thought: str
    action: str  # canonical action text


def drop_no_change(steps: Sequence[StepRecord]) -> list[SftStep]:
    """The steps (ordered, valid actions) minus those whose action failed or changed
    nothing; every kept step keeps its own page as its observation (without the error)."""
    kept = []
    for step, following in zip(steps, [*steps[1:], None]):
        if following is not None and (following.error_shown or following.observation == step.observation):
            continue
        kept.append(SftStep(step=step.step, observation=step.observation, thought=step.thought or "",
                            action=step.action or ""))
    return kept


def drop_wait(steps: Iterable[SftStep]) -> list[SftStep]:
    """The steps minus ``wait`` steps."""
    return [s for s in steps if parse_action(s.action).name != "wait"]


# -- conversion ----------------------------------------------------------------------------

def to_sft_examples(traj: TrajectoryRecord, steps: Sequence[StepRecord], *, history_k: int = 1) -> list[Example]:
    """One prompt-completion example per cleaned step of a kept trajectory (module docstring)."""
    cleaned = drop_wait(drop_no_change(sorted(steps, key=lambda s: s.step)))
    examples = []
    for i, step in enumerate(cleaned):
        history = [PastStep(observation=s.observation, thought=s.thought, action=s.action) for s in cleaned[:i]]
        examples.append({
            "prompt": build_messages(traj.query, step.observation, history, history_k),
            "completion": [{"role": "assistant", "content": format_reply(step.thought, step.action)}],
            "trajectory_id": traj.trajectory_id,
            "step": step.step,
            "source": traj.source,
        })
    return examples


@dataclass
class SftConversion:
    """What the judge filter and to_sft stages made of a stage's trajectories."""

    examples: list[Example]
    reasons: Counter[str] = field(default_factory=Counter)  # trajectories per keep/drop reason
    steps_in: int = 0  # steps of the kept trajectories

    @property
    def kept(self) -> int:
        return self.reasons[KEPT]


def steps_by_trajectory(steps: Iterable[StepRecord]) -> dict[str, list[StepRecord]]:
    """Step records grouped by their trajectory (in the order given)."""
    out: dict[str, list[StepRecord]] = {}
    for s in steps:
        out.setdefault(s.trajectory_id, []).append(s)
    return out


def convert_trajectories(trajectories: Iterable[TrajectoryRecord], steps: Iterable[StepRecord], *,
                         use_gold: bool = False, history_k: int = 1) -> SftConversion:
    """Filter and convert a stage's records (trajectory order is kept; steps may come in any order)."""
    steps_by_traj = steps_by_trajectory(steps)
    result = SftConversion(examples=[])
    for traj in trajectories:
        traj_steps = steps_by_traj.get(traj.trajectory_id, [])
        kept, reason = keep_trajectory(traj, traj_steps, use_gold=use_gold)
        result.reasons[reason] += 1
        if kept:
            result.steps_in += len(traj_steps)
            result.examples += to_sft_examples(traj, traj_steps, history_k=history_k)
    return result


# -- Parquet -------------------------------------------------------------------------------

def examples_to_table(examples: Iterable[Example], run_id: str, round: int, stage: str,
                      source_stage: str) -> pa.Table:
    rows = [{"run_id": run_id, "round": round, "stage": stage, "source_stage": source_stage,
             "trajectory_id": e["trajectory_id"], "step": e["step"], "source": e["source"],
             "prompt": canonical_json(e["prompt"]), "completion": canonical_json(e["completion"])}
            for e in examples]
    return pa.Table.from_pylist(rows, schema=SFT_SCHEMA)


def examples_from_table(table: pa.Table) -> list[Example]:
    """Examples back from a table with the `SFT_SCHEMA` columns (extra columns are ignored)."""
    columns = ("trajectory_id", "step", "source", "prompt", "completion")
    return [{"prompt": json.loads(r["prompt"]), "completion": json.loads(r["completion"]),
             "trajectory_id": r["trajectory_id"], "step": r["step"], "source": r["source"]}
            for r in table.select(columns).to_pylist()]


def write_sft_parquet(examples: Iterable[Example], storage: Storage, run_id: str, round: int,
                      source_stage: str, stage: str = "sft") -> str:
    """Atomically write (or replace) the examples made from `source_stage`; returns the URI."""
    table = examples_to_table(examples, run_id, round, stage, source_stage)
    return storage.write_shard(run_id, round, stage, SFT_TABLE, table, shard_key=source_stage)


def examples_digest(examples: Sequence[Example]) -> str:
    """sha256 of what a training sees of `examples`, in order: each prompt and completion (two
    equal digests, the same training data)."""
    return hashlib.sha256(canonical_json([[e["prompt"], e["completion"]] for e in examples]).encode()).hexdigest()


def read_sft_parquet(storage: Storage, run_id: str, round: int | None = None, stage: str = "sft") -> list[Example]:
    """Every stored example of a stage (all source stages; shards in name order)."""
    return examples_from_table(storage.read_table(run_id, round, stage, table_name=SFT_TABLE))
