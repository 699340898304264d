"""Success rates with confidence intervals (the paper reports means of repeated runs), and the
paired difference of two arms evaluated on the same episodes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a success rate; (0, 1) when there is nothing to count."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denom = 1 + z * z / n
    return max(0.0, (centre - spread) / denom), min(1.0, (centre + spread) / denom)


@dataclass(frozen=True)
class PairedDifference:
    """Success of arm A minus success of arm B on the same episodes (task and seed)."""

    episodes: int  # paired episodes
    difference: float
    ci: tuple[float, float]  # 95%, Newcombe's square-and-add interval for paired data
    a_only: int  # episodes A solved and B did not
    b_only: int  # episodes B solved and A did not
    dropped: int  # episodes both ran, left out: one of them was not scored (an error episode, or no gold)

    def to_json(self) -> dict:
        return {"episodes": self.episodes, "difference": self.difference, "ci": list(self.ci),
                "a_only": self.a_only, "b_only": self.b_only, "dropped": self.dropped}


def paired_difference(a: Mapping[str, Optional[bool]], b: Mapping[str, Optional[bool]],
                      z: float = 1.96) -> PairedDifference:
    """The difference in success rate of two arms on the episodes both ran and scored (keys:
    task ids, which carry the seed; None: an episode that ran unscored, an error episode or one
    without gold: it leaves the pairing, counted in `dropped`), with Newcombe's interval for
    paired proportions (Newcombe 1998, method 10): the Wilson intervals of the two rates,
    combined with the correlation of the paired outcomes (phi, continuity corrected). Chosen
    over a Wald interval on the paired differences, which has zero width when no episode is
    discordant and undercovers at the 40-80 episodes a round evaluates; Newcombe's stays within
    [-1, 1]. Matches the reference values of R's `contingencytables` (tests). No episodes: 0
    with (-1, 1)."""
    ran = a.keys() & b.keys()
    shared = sorted(k for k in ran if a[k] is not None and b[k] is not None)
    dropped = len(ran) - len(shared)
    n = len(shared)
    both = sum(a[k] and b[k] for k in shared)
    a_only = sum(a[k] and not b[k] for k in shared)
    b_only = sum(b[k] and not a[k] for k in shared)
    if n == 0:
        return PairedDifference(0, 0.0, (-1.0, 1.0), 0, 0, dropped)
    neither = n - both - a_only - b_only
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    (l1, u1), (l2, u2) = wilson_interval(both + a_only, n, z), wilson_interval(both + b_only, n, z)
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    cross = both * neither - a_only * b_only
    phi = 0.0  # Newcombe's: a positive association is credited only beyond n/2 (continuity)
    if margins and not 0 <= cross <= n / 2:
        phi = (cross - n / 2 if cross > 0 else cross) / math.sqrt(margins)
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return PairedDifference(n, d, (max(-1.0, low), min(1.0, high)), a_only, b_only, dropped)
