"""A dependency-free SVG bar chart of success by round (the paper's Figure 3 in miniature)."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 480, 260, 40


def _label(row: dict) -> str:
    return str(row.get("label") or f"round {row.get('round')}")


def success_by_round_svg(rows: list[dict], title: str = "Test success by round") -> str:
    """`rows`: dicts with `success_rate` (0..1 or None), a `label` (default "round <round>") and
    optionally `ci` (low, high), drawn as a whisker."""
    n = max(len(rows), 1)
    slot = (WIDTH - 2 * PAD) / n
    bars = []
    for i, r in enumerate(rows):
        rate = r.get("success_rate") or 0.0
        h = (HEIGHT - 2 * PAD) * rate
        x = PAD + i * slot + slot * 0.2
        y = HEIGHT - PAD - h
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.6:.1f}" height="{h:.1f}" fill="#3b82f6"/>'
            f'<text x="{x + slot * 0.3:.1f}" y="{y - 4:.1f}" font-size="12" text-anchor="middle">{100 * rate:.0f}%</text>'
            f'<text x="{x + slot * 0.3:.1f}" y="{HEIGHT - PAD + 16}" font-size="12" text-anchor="middle">'
            f'{escape(_label(r))}</text>')
        ci = r.get("ci")
        if ci:
            top, bottom = (HEIGHT - PAD - (HEIGHT - 2 * PAD) * v for v in (ci[1], ci[0]))
            cx = x + slot * 0.3
            bars.append(f'<line x1="{cx:.1f}" y1="{top:.1f}" x2="{cx:.1f}" y2="{bottom:.1f}" stroke="#111"/>'
                        f'<line x1="{cx - 4:.1f}" y1="{top:.1f}" x2="{cx + 4:.1f}" y2="{top:.1f}" stroke="#111"/>'
                        f'<line x1="{cx - 4:.1f}" y1="{bottom:.1f}" x2="{cx + 4:.1f}" y2="{bottom:.1f}" stroke="#111"/>')
    axis = (f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#333"/>'
            f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#333"/>'
            f'<text x="{PAD - 6}" y="{PAD + 4}" font-size="11" text-anchor="end">100%</text>'
            f'<text x="{PAD - 6}" y="{HEIGHT - PAD}" font-size="11" text-anchor="end">0%</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif">'
            f'<rect width="100%" height="100%" fill="white"/>'
            f'<text x="{WIDTH / 2}" y="20" font-size="14" text-anchor="middle">{escape(title)}</text>'
            f'{axis}{"".join(bars)}</svg>\n')
