"""How the reports write numbers (the printed tables, the round's report artifact, the
viewer): rates as percentages, intervals, paired differences in points, values by arm."""

from __future__ import annotations

from typing import Mapping, Optional

from evolver_core.data.run_layout import ARMS


def pct(x: Optional[float]) -> str:
    """A rate as the reports print it (`n/a` when there is none)."""
    return "n/a" if x is None else f"{100 * x:.1f}%"


def pct_ci(rate: Optional[float], ci: Optional[tuple[float, float]]) -> str:
    """A rate and its 95% interval, `40.0% (25.0%-56.0%)`; the rate alone without one."""
    return pct(rate) + (f" ({pct(ci[0])}-{pct(ci[1])})" if ci else "")


def points(x: float) -> str:
    """A difference of two rates in percentage points, signed: `+5.0`."""
    return f"{100 * x:+.1f}"


def points_ci(ci: tuple[float, float]) -> str:
    """A difference's 95% interval in points: `-2.5 to +12.5`."""
    return f"{points(ci[0])} to {points(ci[1])}"


def measure(x: Optional[float]) -> str:
    """A fidelity measure (a mean in 0..1) to three decimals (`n/a` when there is none)."""
    return "n/a" if x is None else f"{x:.3f}"


def by_arm(values: Mapping[str, object]) -> str:
    """Values keyed by policy arm (`PolicyArm.name`), as a person reads them: `WebEvolver 44, self-improve 40`."""
    return ", ".join(f"{ARMS[arm].title} {v}" for arm, v in values.items())
