"""What a round did not do: the stages that produced nothing useful, named in words.

A zero here is easy to miss in a table (a round once kept no synthetic trajectory and
trained both policy arms on the same data, and nothing said so: RESULTS.md R9);
`round_warnings` turns each into a
line that the printed results, the round's report artifact and its JSON carry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _synthesis(s: Mapping[str, Any]) -> list[str]:
    syn = s["synthetic"]
    if s["round"] == 0 or syn is None:
        return []
    if not syn["tried"]:
        return [f"synthesis made no trajectory ({syn['failed_queries']} failed queries)"]
    out = []
    if not syn["terminal"]:
        out.append(f"none of {syn['tried']} synthetic trajectories reached a state the world model said ends "
                   "the episode")
    if not syn["kept"]:
        out.append(f"none of {syn['tried']} synthetic trajectories was kept (filter: {syn['filter']})")
    return out


def _lookahead(s: Mapping[str, Any]) -> list[str]:
    out = []
    for d, stats in s.get("lookahead", {}).items():
        if not stats["steps"]:
            continue
        if stats["scored"] and not stats["parse_rate"]:
            out.append(f"look-ahead d={d}: no score parsed in {stats['scored']} scored candidates")
        if stats.get("ends") and not stats.get("by_probability"):
            out.append(f"look-ahead d={d}: the world model's server gave no probability of success at its "
                       f"{stats['ends']} predicted ends, so they were scored by the outcome it wrote")
        if not stats["not_greedy"]:
            out.append(f"look-ahead d={d} chose the greedy action at all {stats['steps']} steps")
    return out


def _fidelity(s: Mapping[str, Any]) -> list[str]:
    fid = s["fidelity"]
    if not fid["transitions"]:
        return ["fidelity scored no held-out transition"]
    copy = fid["copy"]
    worse = [name for name in ("sim", "exact")
             if fid[name] is not None and copy[name] is not None and fid[name] <= copy[name]]
    if not worse:
        return []
    return [f"the world model does not beat the copy baseline on {' and '.join(worse)} "
            f"({', '.join(f'{fid[n]:.3f} vs {copy[n]:.3f}' for n in worse)}, {fid['transitions']} transitions)"]


def round_warnings(summary: Mapping[str, Any]) -> list[str]:
    """One line per stage of the round that produced nothing useful (module docstring)."""
    same = ["the WebEvolver and self-improve arms trained on the same data"] if summary["arms_identical"] else []
    return [*_synthesis(summary), *same, *_lookahead(summary), *_fidelity(summary)]
