"""Server-side SVG plots for leaderboard pages (no JavaScript, nothing fetched from the network).

``interval_plot`` draws each entry's primary score with its confidence interval, coloured by the
leaderboard's ``tier`` column kind when it has one. The primitives (``Scale``, ``svg_open``, ``x_axis``,
``y_axis``) are what plugins draw their own plots with (``referee_leaderboard_plots``; the cost
plugin's score-against-cost plot). Every text node is escaped; styling comes from classes in the web
app's ``static/style.css``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from referee.platform.core.leaderboard import Leaderboard
from referee.platform.core.markup import (
    escape_html as escape,  # SVG text: escaped, controls made visible
)
from referee.platform.leaderboard.render import tier_class

WIDTH = 720
MAX_ROWS = 40


def nice_ticks(lo: float, hi: float, n: int = 5, *, floor: float | None = None) -> list[float]:
    """About ``n`` round tick values covering [lo, hi], none below ``floor`` (e.g. 0 for costs)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    if floor is not None and lo < floor:
        lo, hi = floor, max(hi, floor + (hi - lo) / 2)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.2g}"
    return f"{v:.4g}"


def finite(v: Any) -> float | None:
    """``v`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


class Scale:
    """Maps data values in [lo, hi] (widened to round ticks) onto pixels from ``a`` to ``b``."""

    def __init__(self, lo: float, hi: float, a: float, b: float, *, floor: float | None = None):
        ticks = nice_ticks(lo, hi, floor=floor)
        self.ticks = ticks
        self.lo, self.hi = (ticks[0], ticks[-1]) if len(ticks) > 1 else (lo - 0.5, hi + 0.5)
        self.a, self.b = a, b

    def __call__(self, v: float) -> float:
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)


def tier_classes(lb: Leaderboard) -> dict[int, str]:
    """CSS class per submission id from the leaderboard's tier column ('tier-none' without one)."""
    col = lb.column_of_kind("tier")
    return {e.submission_id: tier_class(e.extra.get(col.key)) if col else "tier-none" for e in lb.entries}


def interval_plot(lb: Leaderboard) -> str:
    """Primary score per entry (best first) with its interval; '' when nothing is scored."""
    rows: list[tuple[Any, float]] = []
    for e in lb.entries[:MAX_ROWS]:
        v = finite(e.metrics.get(lb.primary))
        if v is not None:
            rows.append((e, v))
    if not rows:
        return ""
    values: list[float] = []
    for e, v in rows:
        values.append(v)
        ci = e.intervals.get(lb.primary)
        if ci and finite(ci[0]) is not None and finite(ci[1]) is not None:
            values += [float(ci[0]), float(ci[1])]
    left, right, top, row_h = 150, WIDTH - 24, 34, 22
    height = top + row_h * len(rows) + 40
    x = Scale(min(values), max(values), left, right)
    tiers = tier_classes(lb)
    better = "lower is better" if lb.direction == "minimize" else "higher is better"
    out = [svg_open(height, f"{lb.primary} per team ({better})"),
           f'<text class="plot-title" x="{left}" y="18">{escape(lb.primary)} ({better}); '
           f'bars: confidence interval where available</text>']
    out += x_axis(x, top - 6, top + row_h * len(rows))
    for i, (e, v) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        cls = tiers[e.submission_id]
        label = f"{e.rank}. {e.team}"
        out.append(f'<text class="plot-label" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{escape(label[:22])}</text>')
        ci = e.intervals.get(lb.primary)
        if ci and finite(ci[0]) is not None and finite(ci[1]) is not None:
            out.append(f'<line class="plot-ci {cls}" x1="{x(ci[0]):.1f}" x2="{x(ci[1]):.1f}" '
                       f'y1="{y:.1f}" y2="{y:.1f}"/>')
        tip = f"{e.team}: {v:.6g}" + (f" [{ci[0]:.6g}, {ci[1]:.6g}]" if ci else "")
        out.append(f'<circle class="plot-dot {cls}" cx="{x(v):.1f}" cy="{y:.1f}" r="5">'
                   f'<title>{escape(tip)}</title></circle>')
    out.append("</svg>")
    return "\n".join(out)


def svg_open(height: float, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {WIDTH} {height:.0f}" '
            f'role="img" aria-label="{escape(label)}">')


def x_axis(x: Scale, top: float, bottom: float) -> Sequence[str]:
    """Vertical grid lines at ``x``'s ticks, labelled under ``bottom``."""
    out = []
    for t in x.ticks:
        xx = x(t)
        out.append(f'<line class="plot-grid" x1="{xx:.1f}" x2="{xx:.1f}" y1="{top:.1f}" y2="{bottom:.1f}"/>')
        out.append(f'<text class="plot-tick" x="{xx:.1f}" y="{bottom + 16:.1f}" text-anchor="middle">'
                   f'{tick_label(t)}</text>')
    return out


def y_axis(y: Scale, left: float, right: float) -> Sequence[str]:
    """Horizontal grid lines at ``y``'s ticks, labelled left of ``left``."""
    out = []
    for t in y.ticks:
        yy = y(t)
        out.append(f'<line class="plot-grid" x1="{left}" x2="{right}" y1="{yy:.1f}" y2="{yy:.1f}"/>')
        out.append(f'<text class="plot-tick" x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{tick_label(t)}</text>')
    return out
