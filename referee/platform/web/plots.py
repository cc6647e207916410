"""Server-side SVG plots for leaderboard pages (no JavaScript, nothing fetched from the network).

``interval_plot`` draws each entry's primary score with its confidence interval (tiers coloured when
the leaderboard has them); ``cost_plot`` draws score against cost when a ``cost`` column exists.
Every text node is escaped; styling comes from classes in ``static/style.css``.
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

from referee.platform.core.text import safe_text

WIDTH = 720
MAX_ROWS = 40


def escape(text: str) -> str:
    """Escaped for SVG text, with control characters (team names are the teams') made visible."""
    return html.escape(safe_text(text))


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.2g}"
    return f"{v:.4g}"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


class _Scale:
    def __init__(self, lo: float, hi: float, a: float, b: float):
        ticks = nice_ticks(lo, hi)
        self.ticks = ticks
        self.lo, self.hi = (ticks[0], ticks[-1]) if len(ticks) > 1 else (lo - 0.5, hi + 0.5)
        self.a, self.b = a, b

    def __call__(self, v: float) -> float:
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)


def tier_class(tier: Any) -> str:
    try:
        return f"tier-{(int(tier) - 1) % 6}"
    except (TypeError, ValueError):
        return "tier-none"


def interval_plot(lb: Any) -> str:
    """Primary score per entry (best first) with its interval; '' when nothing is scored."""
    rows: list[tuple[Any, float]] = []
    for e in lb.entries[:MAX_ROWS]:
        v = _num(e.metrics.get(lb.primary))
        if v is not None:
            rows.append((e, v))
    if not rows:
        return ""
    values: list[float] = []
    for e, v in rows:
        values.append(v)
        ci = e.intervals.get(lb.primary)
        if ci and _num(ci[0]) is not None and _num(ci[1]) is not None:
            values += [float(ci[0]), float(ci[1])]
    left, right, top, row_h = 150, WIDTH - 24, 34, 22
    height = top + row_h * len(rows) + 40
    x = _Scale(min(values), max(values), left, right)
    better = "lower is better" if lb.direction == "minimize" else "higher is better"
    out = [_open(height, f"{lb.primary} per team ({better})"),
           f'<text class="plot-title" x="{left}" y="18">{escape(lb.primary)} ({better}); '
           f'bars: confidence interval where available</text>']
    out += _x_axis(x, top - 6, top + row_h * len(rows))
    for i, (e, v) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        cls = tier_class(e.extra.get("tier")) if "tier" in lb.columns_extra else "tier-none"
        label = f"{e.rank}. {e.team}"
        out.append(f'<text class="plot-label" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{escape(label[:22])}</text>')
        ci = e.intervals.get(lb.primary)
        if ci and _num(ci[0]) is not None and _num(ci[1]) is not None:
            out.append(f'<line class="plot-ci {cls}" x1="{x(ci[0]):.1f}" x2="{x(ci[1]):.1f}" '
                       f'y1="{y:.1f}" y2="{y:.1f}"/>')
        tip = f"{e.team}: {v:.6g}" + (f" [{ci[0]:.6g}, {ci[1]:.6g}]" if ci else "")
        out.append(f'<circle class="plot-dot {cls}" cx="{x(v):.1f}" cy="{y:.1f}" r="5">'
                   f'<title>{escape(tip)}</title></circle>')
    out.append("</svg>")
    return "\n".join(out)


def cost_plot(lb: Any, cost_column: str = "cost", front_column: str = "pareto") -> str:
    """Primary score against cost (USD), one point per entry, the Pareto front joined by a line when
    the leaderboard marks it; '' without a numeric cost column."""
    if cost_column not in lb.columns_extra:
        return ""
    pts: list[tuple[Any, float, float]] = []
    for e in lb.entries[:MAX_ROWS]:
        c, v = _num(e.extra.get(cost_column)), _num(e.metrics.get(lb.primary))
        if c is not None and v is not None:
            pts.append((e, c, v))
    if not pts:
        return ""
    left, right, top, bottom = 70, WIDTH - 30, 34, 300
    x = _Scale(min(c for _, c, _ in pts), max(c for _, c, _ in pts), left, right)
    y = _Scale(min(v for _, _, v in pts), max(v for _, _, v in pts), bottom, top)
    out = [_open(bottom + 46, f"{lb.primary} against {cost_column}"),
           f'<text class="plot-title" x="{left}" y="18">{escape(lb.primary)} against {escape(cost_column)}</text>']
    out += _x_axis(x, top, bottom)
    for t in y.ticks:
        yy = y(t)
        out.append(f'<line class="plot-grid" x1="{left}" x2="{right}" y1="{yy:.1f}" y2="{yy:.1f}"/>')
        out.append(f'<text class="plot-tick" x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<text class="plot-axis-label" x="{(left + right) / 2:.0f}" y="{bottom + 40}" '
               f'text-anchor="middle">{escape(cost_column)} (USD)</text>')
    front = sorted((c, v) for e, c, v in pts if front_column in lb.columns_extra and e.extra.get(front_column))
    if len(front) > 1:
        path = " ".join(f"{x(c):.1f},{y(v):.1f}" for c, v in front)
        out.append(f'<polyline class="plot-front" points="{path}"/>')
    for e, c, v in pts:
        cls = tier_class(e.extra.get("tier")) if "tier" in lb.columns_extra else "tier-none"
        on_front = " on-front" if front_column in lb.columns_extra and e.extra.get(front_column) else ""
        out.append(f'<circle class="plot-dot {cls}{on_front}" cx="{x(c):.1f}" cy="{y(v):.1f}" r="5">'
                   f'<title>{escape(f"{e.team}: {v:.6g} at ${c:.6g}")}</title></circle>')
        out.append(f'<text class="plot-point-label" x="{x(c) + 8:.1f}" y="{y(v) - 6:.1f}">'
                   f'{escape(e.team[:18])}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _open(height: float, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {WIDTH} {height:.0f}" '
            f'role="img" aria-label="{escape(label)}">')


def _x_axis(x: _Scale, top: float, bottom: float) -> Sequence[str]:
    out = []
    for t in x.ticks:
        xx = x(t)
        out.append(f'<line class="plot-grid" x1="{xx:.1f}" x2="{xx:.1f}" y1="{top:.1f}" y2="{bottom:.1f}"/>')
        out.append(f'<text class="plot-tick" x="{xx:.1f}" y="{bottom + 16:.1f}" text-anchor="middle">{_fmt(t)}</text>')
    return out
