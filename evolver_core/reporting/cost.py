"""What each stage of a round cost, against this machine's own limits (`round_cost`): its
seconds, the tokens it processed, and the share of its seconds that work needs at the limits.

The stage's seconds and the tokens its rows do not hold are stored beside its data
(`data.stage_work`); a sampling stage's tokens are the sum over its step rows. The limits are
measured in the process that reports (`benchmarks.machine_limits`): the fp32 matmul FLOP/s of
the threads training uses, and the bandwidth of a large array copy. The work, for a model of
P parameters stored in B bytes:

- prefill: 2 P FLOPs per prompt token (a multiply and an add per weight; attention over the
  context is left out, small beside the weights at these lengths);
- decoding: B bytes of weights read per generated token (one sequence at a time, as a CPU
  server mostly decodes: a server that batches reads them once for several, and can pass 1);
- LoRA training: 4 P FLOPs per trained token, forward and backward: 2 P forward, 2 P for the
  gradients of the activations through the frozen weights in the backward pass. Full
  fine-tuning's 6 P also pays 2 P for the weights' own gradients, which LoRA skips (its
  adapters' are negligible). Trained tokens are TRL's count, padding aside, so padded batches
  show as a lower ratio.

`flops_ratio` is a stage's FLOP/s (prefill, or training) over the matmul limit,
`bandwidth_ratio` its decoding's bytes/s over the copy bandwidth, and `ratio` their sum: the
time its work needs at the limits over the time it took. A stage below `FAR` (10%) is far
from the limit, and `far_from_limit` says so in words. Every model call of a round is
counted at the size of the round's base model (the policy, the world model and, unless the
preset names another, the judge).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import pyarrow.compute as pc

from evolver_core.data.stage_work import TokenUsage, read_usage, timed_stages
from evolver_core.data.storage import Storage
from evolver_core.reporting.formats import pct

FAR = 0.1  # below this share of the limit a stage is far from it
PREFILL_FLOPS_PER_PARAM = 2
TRAIN_FLOPS_PER_PARAM = 4  # LoRA: forward 2, backward through the frozen weights 2 (module docstring)


@dataclass(frozen=True)
class MachineLimits:
    """This machine's limits, measured in the reporting process (`benchmarks.machine_limits`)."""

    flops_per_s: float  # fp32 matmul
    bytes_per_s: float  # a large array copy: bytes read plus bytes written
    threads: int  # torch threads of both measurements: the cores training may use


@dataclass(frozen=True)
class StageCost:
    """One stage: its seconds, tokens, and share of the limits (None where it did no model work
    or was not timed)."""

    seconds: Optional[float]
    prompt_tokens: int
    generated_tokens: int
    trained_tokens: int
    flops_ratio: Optional[float]  # prefill's or training's FLOP/s over the matmul limit
    bandwidth_ratio: Optional[float]  # decoding's weight bytes/s over the copy bandwidth
    ratio: Optional[float]  # flops_ratio + bandwidth_ratio: seconds its work needs at the limits / its seconds
    note: str


@dataclass(frozen=True)
class RoundCost:
    """A round's stages (in the order they ended) against the machine's limits."""

    limits: MachineLimits
    params: int  # of the round's base model
    weight_bytes: int
    stages: dict[str, StageCost]
    far_from_limit: list[str]  # a line per stage below FAR of the limit

    def to_json(self) -> dict:
        return asdict(self)


def stage_tokens(store: Storage, run_id: str, round_: int, stage: str) -> TokenUsage:
    """The tokens a stage processed: its `usage.json`, else the sum over its step rows."""
    usage = read_usage(store, run_id, round_, stage)
    if usage is not None:
        return usage
    if not store.exists(run_id, round_, stage, "steps"):
        return TokenUsage()
    steps = store.dataset(run_id, round_, stage, table_name="steps").to_table(
        columns=["prompt_tokens", "completion_tokens"])
    return TokenUsage(prompt_tokens=pc.sum(steps["prompt_tokens"]).as_py() or 0,
                      generated_tokens=pc.sum(steps["completion_tokens"]).as_py() or 0)


def stage_cost(seconds: Optional[float], tokens: TokenUsage, limits: MachineLimits, params: int,
               weight_bytes: int) -> StageCost:
    """One stage's cost against `limits` for a model of `params` parameters in `weight_bytes`."""
    counts = asdict(tokens)
    if not any(counts.values()):
        return StageCost(seconds, **counts, flops_ratio=None, bandwidth_ratio=None, ratio=None, note="no model work")
    if not seconds:
        return StageCost(seconds, **counts, flops_ratio=None, bandwidth_ratio=None, ratio=None,
                         note="not timed (its seconds were not recorded)")
    flops = (PREFILL_FLOPS_PER_PARAM * tokens.prompt_tokens + TRAIN_FLOPS_PER_PARAM * tokens.trained_tokens) * params
    flops_ratio = flops / seconds / limits.flops_per_s
    bandwidth_ratio = (weight_bytes * tokens.generated_tokens / seconds / limits.bytes_per_s
                       if tokens.generated_tokens else None)
    ratio = flops_ratio + (bandwidth_ratio or 0.0)
    note = f"far from the limit ({pct(ratio)} of it)" if ratio < FAR else f"{pct(ratio)} of the limit"
    return StageCost(seconds, **counts, flops_ratio=flops_ratio, bandwidth_ratio=bandwidth_ratio, ratio=ratio,
                     note=note)


def round_cost(store: Storage, run_id: str, round_: int, limits: MachineLimits, params: int,
               weight_bytes: int) -> RoundCost:
    """The cost of every timed stage of round `round_` of `run_id`, from what its stages stored
    (`data.stage_work`, step rows), for a base model of `params` parameters in `weight_bytes`."""
    stages = {stage: stage_cost(timed.seconds, stage_tokens(store, run_id, round_, stage), limits, params,
                                weight_bytes)
              for stage, timed in timed_stages(store, run_id, round_).items()}
    return RoundCost(limits=limits, params=params, weight_bytes=weight_bytes, stages=stages,
                     far_from_limit=[far_line(stage, cost) for stage, cost in stages.items()
                                     if cost.ratio is not None and cost.ratio < FAR])


def far_line(stage: str, cost: StageCost) -> str:
    """A stage far from the limit, in words: its share and what it spent its seconds on."""
    if cost.trained_tokens:
        work = f"training {cost.trained_tokens:,} tokens at {pct(cost.flops_ratio)} of the matmul FLOP/s"
    else:
        work = f"prefilling {cost.prompt_tokens:,} tokens at {pct(cost.flops_ratio)} of the matmul FLOP/s"
        if cost.bandwidth_ratio is not None:
            work += f" and decoding {cost.generated_tokens:,} at {pct(cost.bandwidth_ratio)} of the memory bandwidth"
    return f"{stage} is far from this machine's limit ({pct(cost.ratio)} of it in {cost.seconds:.0f} s): {work}"
