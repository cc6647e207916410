"""Score versus cost: the Pareto front (no other entry is both cheaper-or-equal and better-or-equal,
with one of the two strictly), and the leaderboard columns and plot the cost plugin builds from it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from referee.platform.core.leaderboard import Entry, Leaderboard, LeaderboardColumn
from referee.platform.core.markup import (
    escape_html as escape,  # SVG text: escaped, controls made visible
)
from referee.platform.core.spec import Competition
from referee.platform.cost.ledger import has_costs, submission_totals
from referee.platform.leaderboard.plots import (
    MAX_ROWS,
    WIDTH,
    Scale,
    finite,
    svg_open,
    tier_classes,
    x_axis,
    y_axis,
)
from referee.platform.store import Store

COST_COLUMN = "cost"
PARETO_COLUMN = "pareto"
ON_FRONT = "yes"


def pareto_front(points: Sequence[tuple[float | None, float | None]], *, higher_is_better: bool) -> list[bool]:
    """For each (score, cost) point: is it on the front? Points missing either value never are."""
    sign = 1.0 if higher_is_better else -1.0
    valid = [(i, sign * s, c) for i, (s, c) in enumerate(points)
             if s is not None and c is not None and not math.isnan(s) and not math.isnan(c)]
    valid.sort(key=lambda t: (t[2], -t[1]))
    front = [False] * len(points)
    best = -math.inf
    k = 0
    while k < len(valid):
        j = k
        while j < len(valid) and valid[j][2] == valid[k][2]:
            j += 1
        top = valid[k][1]  # best score at this cost (sorted best first)
        if top > best:
            for i, s, _ in valid[k:j]:
                front[i] = s == top
            best = top
        k = j
    return front


@dataclass(frozen=True)
class ScoreCost:
    team: str
    submission_id: int
    score: float | None
    cost: float | None
    on_front: bool


def score_cost_view(entries: Sequence[Any], costs: dict[int, float], primary: str,
                    higher_is_better: bool) -> list[ScoreCost]:
    """Leaderboard entries as (score, cost) points, cheapest first, with the front marked."""
    pts = [(e.metrics.get(primary), costs.get(e.submission_id)) for e in entries]
    front = pareto_front(pts, higher_is_better=higher_is_better)
    rows = [ScoreCost(e.team, e.submission_id, s, c, f) for e, (s, c), f in zip(entries, pts, front)]
    return sorted(rows, key=lambda r: (math.inf if r.cost is None else r.cost, r.submission_id))


def cost_columns(store: Store, competition: Competition, leaderboard: Leaderboard) -> list[LeaderboardColumn]:
    """A ``cost`` column (USD per entry's submission: the attempts charged to its team, so not those lost
    to the platform) and a ``pareto`` mark; none while the competition has no cost rows."""
    if not has_costs(store, competition.id):
        return []
    costs = submission_totals(store, competition.id)
    per_entry = {e.submission_id: (None if costs.get(e.submission_id) is None else round(costs[e.submission_id], 4))
                 for e in leaderboard.entries}
    view = score_cost_view(leaderboard.entries, costs, leaderboard.primary, leaderboard.direction == "maximize")
    marks = {r.submission_id: ON_FRONT if r.on_front else "" for r in view}
    return [
        LeaderboardColumn(key=COST_COLUMN, label="cost", kind="currency", values=per_entry,
                          help="USD charged to the team for this submission (attempts lost to the platform "
                               "are the host's)"),
        LeaderboardColumn(key=PARETO_COLUMN, label="pareto", kind="flag", values=marks,
                          help="on the score/cost Pareto front: no other entry is both cheaper and better"),
    ]


def cost_plot(lb: Leaderboard, cost_column: str = COST_COLUMN, front_column: str = PARETO_COLUMN) -> str:
    """Primary score against cost (USD), one point per entry, the Pareto front joined by a line; ''
    without a numeric cost column. The cost axis starts at $0 (every entry may have cost nothing)."""
    if cost_column not in lb.columns_extra:
        return ""
    pts: list[tuple[Entry, float, float]] = []
    for e in lb.entries[:MAX_ROWS]:
        c, v = finite(e.extra.get(cost_column)), finite(e.metrics.get(lb.primary))
        if c is not None and v is not None:
            pts.append((e, c, v))
    if not pts:
        return ""
    tiers = tier_classes(lb)
    on_front = {e.submission_id for e in lb.entries if front_column in lb.columns_extra and e.extra.get(front_column)}
    left, right, top, bottom = 70, WIDTH - 30, 34, 300
    x = Scale(min(c for _, c, _ in pts), max(c for _, c, _ in pts), left, right, floor=0.0)
    y = Scale(min(v for _, _, v in pts), max(v for _, _, v in pts), bottom, top)
    out = [svg_open(bottom + 46, f"{lb.primary} against {cost_column}"),
           f'<text class="plot-title" x="{left}" y="18">{escape(lb.primary)} against {escape(cost_column)}</text>']
    out += x_axis(x, top, bottom)
    out += y_axis(y, left, right)
    out.append(f'<text class="plot-axis-label" x="{(left + right) / 2:.0f}" y="{bottom + 40}" '
               f'text-anchor="middle">{escape(cost_column)} (USD)</text>')
    front = sorted((c, v) for e, c, v in pts if e.submission_id in on_front)
    if len(front) > 1:
        path = " ".join(f"{x(c):.1f},{y(v):.1f}" for c, v in front)
        out.append(f'<polyline class="plot-front" points="{path}"/>')
    for e, c, v in pts:
        mark = " on-front" if e.submission_id in on_front else ""
        out.append(f'<circle class="plot-dot {tiers[e.submission_id]}{mark}" cx="{x(c):.1f}" cy="{y(v):.1f}" r="5">'
                   f'<title>{escape(f"{e.team}: {v:.6g} at ${c:.6g}")}</title></circle>')
        out.append(f'<text class="plot-point-label" x="{x(c) + 8:.1f}" y="{y(v) - 6:.1f}">'
                   f'{escape(e.team[:18])}</text>')
    out.append("</svg>")
    return "\n".join(out)
