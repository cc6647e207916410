"""Leaderboards per phase and split: best-per-team or latest, ties, ranks; plugins' columns and plots.

A leaderboard is built from the phase's view of the competition (``Competition.for_phase``): its
metrics, primary metric and reference data; plugins see that view too. The host's baselines of the
phase follow the ranked entries as unranked rows (``Leaderboard.baselines``).

For the private split in ``best`` mode each team's entry follows the phase's final selection rule:
``best_public`` takes the submission that was best on the *public* split (Kaggle's automatic
selection), so private ranks are not chosen by peeking at private scores; ``pick`` takes the best
private score among the submissions the team picked, and a team that picked none is represented by
its best-public one. ``selection="split"`` picks by the split's own score instead.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from referee.platform.core.leaderboard import Entry, Leaderboard
from referee.platform.core.spec import Competition
from referee.platform.store import LeaderboardScore, Store
from referee.plugins.manager import get_plugin_manager
from referee.plugins.records import LeaderboardPlot

TIE_RTOL = 1e-12

def metric_direction(comp: Competition, key: str) -> str:
    m = next(m for m in comp.metrics if m.key == key)
    if m.direction:
        return m.direction
    # a missing scorer plugin raises NotFound: guessing a direction could silently invert the ranking
    return "maximize" if get_plugin_manager().scorer(m.scorer).higher_is_better else "minimize"


def _better_key(direction: str) -> Callable[[float | None], float]:
    sign = -1.0 if direction == "maximize" else 1.0
    return lambda v: math.inf if v is None or math.isnan(v) else sign * v


def _tied(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=TIE_RTOL, abs_tol=1e-15)


def _scored_against_other_reference(store: Store, comp: Competition, sids: list[int], metric: str,
                                    split: str) -> list[int]:
    """Listed submissions whose score names a reference sha256 other than the current one."""
    if not sids:
        return []
    from referee.scoring.reference import load_reference
    current = load_reference(comp).sha256
    return sorted(sid for sid, (_, ref) in store.score_sources(sids, metric, split).items() if ref != current)


def _by_submission(rows: list[LeaderboardScore]) -> dict[int, dict[str, Any]]:
    """Score rows by submission: its team, when it was made, its scores and intervals by (metric, split)."""
    subs: dict[int, dict[str, Any]] = {}
    for r in rows:
        d = subs.setdefault(r.submission_id, {"team": r.team, "at": r.created_at, "scores": {}, "ci": {}})
        d["scores"][(r.metric, r.split)] = r.value
        if r.ci_low is not None:
            d["ci"][(r.metric, r.split)] = (r.ci_low, r.ci_high)
    return subs


def _baselines(store: Store, comp: Competition, phase: str, split: str, order: list[str]) -> list[Entry]:
    """The phase's baselines with a score on ``split``, as unranked rows."""
    return [Entry(rank=None, team=d["team"], submission_id=sid, submitted_at=d["at"],
                  metrics={m: d["scores"].get((m, split)) for m in order},
                  intervals={m: d["ci"].get((m, split)) for m in order}, baseline=True)
            for sid, d in _by_submission(store.baseline_scores(comp.id, phase)).items()
            if d["scores"].get((order[0], split)) is not None]


def build(store: Store, comp: Competition, *, phase: str | None = None, split: str = "public",
          mode: str = "best", selection: str = "public", enrich: bool = True) -> Leaderboard:
    """Build the leaderboard for one phase and split (``mode``: best | latest | all)."""
    if mode not in ("best", "latest", "all"):
        raise ValueError(f"mode must be best, latest or all, not {mode!r}")
    if split not in ("public", "private"):
        raise ValueError(f"split must be public or private, not {split!r}")
    comp = comp.for_phase(phase or None)  # the phase's metrics and data
    ph = comp.phase_name
    assert ph is not None
    primary = comp.primary_metric.key
    direction = metric_direction(comp, primary)
    order = [primary] + [m.key for m in comp.metrics if m.key != primary]
    subs = _by_submission(store.leaderboard_scores(comp.id, ph))
    key = _better_key(direction)
    sel_split = split if (selection == "split" or split == "public") else "public"
    by_team: dict[str, list[int]] = {}
    for sid, d in subs.items():
        if (primary, split) in d["scores"]:
            by_team.setdefault(d["team"], []).append(sid)
    rule = comp.phase(ph).final_selection
    picked: set[int] = set()
    if split == "private" and mode == "best" and selection != "split" and rule.rule == "pick":
        picked = {p.submission_id for p in store.picks(comp.id, ph)}
    chosen: list[tuple[int, int]] = []  # (submission id, n submissions of team)
    for team, sids in by_team.items():
        if mode == "latest":
            chosen.append((max(sids), len(sids)))
        elif mode == "all":
            chosen += [(s, len(sids)) for s in sids]
        else:
            mine = [s for s in sids if s in picked]
            by_split = split if mine else sel_split  # the best of the picks, on the private split

            def sel(s: int) -> tuple[float, int]:
                v = subs[s]["scores"].get((primary, by_split), subs[s]["scores"].get((primary, split)))
                return (key(v), s)
            chosen.append((min(mine or sids, key=sel), len(sids)))
    chosen.sort(key=lambda t: (key(subs[t[0]]["scores"].get((primary, split))), subs[t[0]]["at"], t[0]))
    entries: list[Entry] = []
    prev: float | None = None
    for pos, (sid, n) in enumerate(chosen, start=1):
        d = subs[sid]
        v = d["scores"].get((primary, split))
        rank = entries[-1].rank if entries and _tied(v, prev) else pos
        prev = v
        entries.append(Entry(rank=rank, team=d["team"], submission_id=sid, submitted_at=d["at"],
                             metrics={m: d["scores"].get((m, split)) for m in order},
                             intervals={m: d["ci"].get((m, split)) for m in order}, n_submissions=n))
    lb = Leaderboard(competition_id=comp.id, title=comp.title, phase=ph, split=split, mode=mode, primary=primary,
                     direction=direction, metric_order=order, entries=entries,
                     baselines=_baselines(store, comp, ph, split, order))
    if split == "private" and mode == "best" and selection != "split":
        if rule.rule == "pick":
            lb.notes.append(f"Each team's private entry is the best of the submissions it picked (at most "
                            f"{rule.max}); a team that picked none is represented by its best submission on "
                            "the public split.")
        else:
            lb.notes.append("Each team's private entry is its best submission on the public split.")
    if any(e.rank == entries[i - 1].rank for i, e in enumerate(entries) if i):
        lb.notes.append("Tied entries share a rank and are listed by submission time.")
    stale = _scored_against_other_reference(store, comp, [e.submission_id for e in entries], primary, split)
    if stale:
        lb.notes.append(f"Entries {', '.join(f'#{s}' for s in stale)} were scored against different reference "
                        "data than the competition has now; `referee verify` shows the change and "
                        "`referee rerun` re-scores them.")
    if enrich:  # every extra column comes from a plugin (referee_leaderboard_columns)
        for columns in get_plugin_manager().hook.referee_leaderboard_columns(store=store, competition=comp,
                                                                             leaderboard=lb):
            for column in columns or []:
                lb.add_column(column)
        for notes in get_plugin_manager().hook.referee_leaderboard_notes(store=store, competition=comp,
                                                                         leaderboard=lb):
            for note in notes or []:
                if note not in lb.notes:
                    lb.notes.append(note)
    return lb


def plots(store: Store, comp: Competition, lb: Leaderboard) -> list[LeaderboardPlot]:
    """The figures plugins draw for a built leaderboard (``referee_leaderboard_plots``)."""
    view = comp.for_phase(lb.phase, strict=False)
    return [p for found in get_plugin_manager().hook.referee_leaderboard_plots(store=store, competition=view,
                                                                              leaderboard=lb)
            for p in found or []]
