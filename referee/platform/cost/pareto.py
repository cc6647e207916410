"""Score versus cost: the Pareto front (no other entry is both cheaper-or-equal and better-or-equal,
with one of the two strictly), and the leaderboard columns built from it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from referee.platform.cost.ledger import has_costs, submission_totals

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


def enrich_leaderboard(store: Any, competition: Any, leaderboard: Any) -> None:
    """Add a ``cost`` column (USD per entry's submission: the attempts charged to its team, so not those
    lost to the platform) and a ``pareto`` mark."""
    if not has_costs(store, competition.id):
        return
    costs = submission_totals(store, competition.id)
    for e in leaderboard.entries:
        c = costs.get(e.submission_id)
        e.extra[COST_COLUMN] = None if c is None else round(c, 4)
    view = score_cost_view(leaderboard.entries, costs, leaderboard.primary, leaderboard.direction == "maximize")
    marks = {r.submission_id: r.on_front for r in view}
    for e in leaderboard.entries:
        e.extra[PARETO_COLUMN] = ON_FRONT if marks.get(e.submission_id) else ""
    for col in (COST_COLUMN, PARETO_COLUMN):
        if col not in leaderboard.columns_extra:
            leaderboard.columns_extra.append(col)
