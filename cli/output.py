"""Printing helpers: every `--json` command and every bench ends with ONE JSON object line."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from evolver_core.reporting.cost import RoundCost
from evolver_core.reporting.formats import pct, pct_ci, points, points_ci
from evolver_core.reporting.metrics import PairedDifference
from evolver_core.reporting.summary import RoundSummary

console = Console(highlight=False, soft_wrap=True)  # no hard wraps: output is often piped


def emit_json(obj: dict[str, Any]) -> None:
    """The last line of output: one JSON object (machine-readable)."""
    print(json.dumps(obj, sort_keys=True, default=str), flush=True)


def learning_table(rounds: list[RoundSummary]) -> Table:
    """Per round and arm: test success with its 95% interval (the paper's comparison)."""
    depths = sorted({d for r in rounds for d in r.success_rate_lookahead})
    table = Table(title="Test success by round (95% CI)")
    for name in ("round", "WebEvolver", "self-improve", *(f"look-ahead d={d} (plain, same tasks)" for d in depths),
                 "generalization", "WM STR / Sim. / exact (copy)"):
        table.add_column(name)
    for r in rounds:
        fid, copy = r.fidelity, r.fidelity.copy
        table.add_row(str(r.round), pct_ci(r.success_rate, r.success_ci),
                      pct_ci(r.success_rate_self_improve, r.success_ci_self_improve),
                      *(f"{pct(r.success_rate_lookahead.get(d))} "
                        f"({pct(r.success_rate_plain_on_lookahead_tasks.get(d))})" for d in depths),
                      pct_ci(r.generalization_success_rate, r.generalization_ci),
                      f"{pct(fid.str)} / {pct(fid.sim)} / {pct(fid.exact)} "
                      f"({pct(copy['str'])} / {pct(copy['sim'])} / {pct(copy['exact'])})")
    return table


def _difference(pair: PairedDifference | None) -> str:
    if not pair:
        return "-"
    dropped = f", {pair.dropped} unscored left out" if pair.dropped else ""
    return f"{points(pair.difference)} ({points_ci(pair.ci)}), n={pair.episodes}{dropped}"


def paired_table(rounds: list[RoundSummary]) -> Table:
    """Per round: each comparison as a paired difference on the same episodes, in points."""
    depths = sorted({d for r in rounds for d in r.paired.wmla_vs_plain})
    table = Table(title="Paired differences on the same episodes, points (95% CI)")
    for name in ("round", "WebEvolver - self-improve", *(f"look-ahead d={d} - plain" for d in depths)):
        table.add_column(name)
    for r in rounds:
        table.add_row(str(r.round), _difference(r.paired.webevolver_vs_self),
                      *(_difference(r.paired.wmla_vs_plain.get(d)) for d in depths))
    return table


def timing_table(rounds: list[RoundSummary]) -> Table:
    """Wall time per stage and round (cache hits take ~0 s)."""
    stages = list(dict.fromkeys(s for r in rounds for s in r.stage_seconds))
    table = Table(title="Seconds per stage")
    table.add_column("stage")
    for r in rounds:
        table.add_column(f"round {r.round}", justify="right")
    for s in stages:
        table.add_row(s, *(f"{r.stage_seconds[s]:.0f}" if s in r.stage_seconds else "-" for r in rounds))
    return table


def cost_table(costs: dict[int, RoundCost]) -> Table:
    """Per round and timed stage: seconds, tokens, and the share of this machine's limits its work
    needs (`reporting.cost`: prefill and training against the matmul FLOP/s, decoding against
    the memory bandwidth)."""
    limits = next(reversed(costs.values())).limits  # the latest measurement
    table = Table(title=f"Cost per stage against this machine's limits ({limits.flops_per_s / 1e9:.0f} GFLOP/s "
                        f"matmul, {limits.bytes_per_s / 1e9:.1f} GB/s copy, {limits.threads} threads)")
    for name in ("round", "stage", "s", "prompt", "generated", "trained", "FLOP/s", "bandwidth", "note"):
        table.add_column(name, justify="left" if name in ("stage", "note") else "right")
    for round_, cost in costs.items():
        for stage, s in cost.stages.items():
            table.add_row(str(round_), stage, "-" if s.seconds is None else f"{s.seconds:.0f}",
                          f"{s.prompt_tokens:,}", f"{s.generated_tokens:,}", f"{s.trained_tokens:,}",
                          *("-" if r is None else pct(r) for r in (s.flops_ratio, s.bandwidth_ratio)), s.note)
    return table
