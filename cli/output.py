"""Printing helpers: every `--json` command and every bench ends with ONE JSON object line."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from evolver_core.reporting.results import pct

console = Console(highlight=False, soft_wrap=True)  # no hard wraps: output is often piped


def emit_json(obj: dict[str, Any]) -> None:
    """The last line of output: one JSON object (machine-readable)."""
    print(json.dumps(obj, sort_keys=True, default=str), flush=True)



def _with_ci(rate: Any, ci: Any) -> str:
    return pct(rate) + (f" ({pct(ci[0])}-{pct(ci[1])})" if ci else "")


def learning_table(rounds: list[dict]) -> Table:
    """Per round and arm: test success with its 95% interval (the paper's comparison)."""
    depths = sorted({d for r in rounds for d in r["success_rate_lookahead"]})
    table = Table(title="Test success by round (95% CI)")
    for name in ("round", "WebEvolver", "self-improve", *(f"look-ahead d={d} (plain, same tasks)" for d in depths),
                 "generalization", "WM STR / Sim. / exact (copy)"):
        table.add_column(name)
    for r in rounds:
        fid, copy = r["fidelity"], r["fidelity"]["copy"]
        table.add_row(str(r["round"]), _with_ci(r["success_rate"], r["success_ci"]),
                      _with_ci(r["success_rate_self_improve"], r["success_ci_self_improve"]),
                      *(f"{pct(r['success_rate_lookahead'].get(d))} ({pct(r['success_rate_plain_on_lookahead_tasks'].get(d))})"
                        for d in depths),
                      _with_ci(r["generalization_success_rate"], r["generalization_ci"]),
                      f"{pct(fid['str'])} / {pct(fid['sim'])} / {pct(fid['exact'])} "
                      f"({pct(copy['str'])} / {pct(copy['sim'])} / {pct(copy['exact'])})")
    return table


def _difference(pair: dict | None) -> str:
    if not pair:
        return "-"
    low, high = pair["ci"]
    return f"{100 * pair['difference']:+.1f} ({100 * low:+.1f} to {100 * high:+.1f}), n={pair['episodes']}"


def paired_table(rounds: list[dict]) -> Table:
    """Per round: each comparison as a paired difference on the same episodes, in points."""
    depths = sorted({d for r in rounds for d in r["paired"]["wmla_vs_plain"]})
    table = Table(title="Paired differences on the same episodes, points (95% CI)")
    for name in ("round", "WebEvolver - self-improve", *(f"look-ahead d={d} - plain" for d in depths)):
        table.add_column(name)
    for r in rounds:
        pairs = r["paired"]
        table.add_row(str(r["round"]), _difference(pairs["webevolver_vs_self"]),
                      *(_difference(pairs["wmla_vs_plain"].get(d)) for d in depths))
    return table


def timing_table(rounds: list[dict]) -> Table:
    """Wall time per stage and round (cache hits take ~0 s)."""
    stages = list(dict.fromkeys(s for r in rounds for s in r["stage_seconds"]))
    table = Table(title="Seconds per stage")
    table.add_column("stage")
    for r in rounds:
        table.add_column(f"round {r['round']}", justify="right")
    for s in stages:
        table.add_row(s, *(f"{r['stage_seconds'].get(s, 0):.0f}" if s in r["stage_seconds"] else "-" for r in rounds))
    return table
