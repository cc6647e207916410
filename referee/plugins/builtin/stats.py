"""Built-in plugin: rank tiers and paired p-values on leaderboards (reserved name ``builtin_stats``).

For a built leaderboard it loads each entry's per-item statistics of the primary metric (stored by
the scoring engine), keeps the leaderboard's split, and runs one paired test over all entries on
shared resamples (``referee.scoring.significance``). It adds three columns:

* ``tier`` — entries not significantly different from their tier's first entry share a tier
  (walk down the ranking; an entry starts a new tier when it is significantly worse, after the
  multiple-comparison correction, than the first entry of the current tier);
* ``p_vs_leader`` — uncorrected p-value against the first entry;
* ``p_vs_prev`` — uncorrected p-value against the entry just above.

Settings come from ``leaderboard.significance`` in the competition YAML (method, resamples, seed,
alpha, correction, backend, enabled).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from referee.platform.core.errors import SpecError
from referee.plugins.hookspecs import hookimpl

COLUMNS = ("tier", "p_vs_leader", "p_vs_prev")
_CACHE_SIZE = 8
_cache: OrderedDict[tuple, "LeaderboardSignificance"] = OrderedDict()
_cache_lock = threading.Lock()


@dataclass
class LeaderboardSignificance:
    """Paired tests between a leaderboard's entries (in ranking order) on its primary metric."""

    metric: str
    split: str
    settings: Any  # SignificanceSettings
    entries: list[Any]  # leaderboard Entry objects that were tested, best first
    excluded: list[tuple[Any, str]] = field(default_factory=list)  # (Entry, why)
    test: Any = None  # PairedTest, None with fewer than two entries
    tiers: Any = None  # Tiers
    p_vs_leader: list[float | None] = field(default_factory=list)
    p_vs_prev: list[float | None] = field(default_factory=list)

    def p_matrix(self) -> np.ndarray:
        if self.test is None:
            return np.full((len(self.entries), len(self.entries)), np.nan)
        return self.test.p_matrix()

    def notes(self) -> list[str]:
        out = [f"tier: entries not significantly different from their tier's first entry share a tier "
               f"({self.metric}, {self.settings.describe()}); p_vs_leader and p_vs_prev are uncorrected."]
        from referee.scoring.significance import correction_can_reject, min_resamples
        if len(self.entries) > 1 and not correction_can_reject(len(self.entries), self.settings):
            out.append(f"with {self.settings.resamples} resamples the smallest p-value is "
                       f"1/{self.settings.resamples + 1}, too large to be significant after the "
                       f"{self.settings.correction} correction for {len(self.entries)} entries; set "
                       f"leaderboard.significance.resamples to at least "
                       f"{min_resamples(len(self.entries), self.settings) + 1}.")
        for e, why in self.excluded:
            out.append(f"#{e.submission_id} ({e.team}) has no tier: {why}.")
        return out

    def to_dict(self, matrix: bool = True) -> dict[str, Any]:
        rows = []
        for pos, e in enumerate(self.entries):
            rows.append({"rank": e.rank, "team": e.team, "submission_id": e.submission_id,
                         "score": e.metrics.get(self.metric), "tier": self.tiers.tier[pos] if self.tiers else 1,
                         "p_vs_leader": self.p_vs_leader[pos], "p_vs_prev": self.p_vs_prev[pos]})
        out: dict[str, Any] = {"metric": self.metric, "split": self.split, **self.settings.record(),
                               "entries": rows,
                               "excluded": [{"submission_id": e.submission_id, "team": e.team, "reason": why}
                                            for e, why in self.excluded]}
        if matrix:
            m = self.p_matrix()
            out["p_values"] = [[None if np.isnan(v) else float(v) for v in row] for row in m]
        return out


def significance_settings(comp: Any, **overrides: Any) -> Any:
    """The competition's ``SignificanceSettings`` (``overrides`` that are not None win)."""
    from referee.scoring.significance import SignificanceSettings

    try:
        return SignificanceSettings.from_mapping(comp.leaderboard.get("significance"), **overrides)
    except ValueError as exc:
        raise SpecError(str(comp.source_path or comp.id),
                        [("leaderboard.significance", str(exc).removeprefix("leaderboard.significance: "))]) from None


def _entry_statistics(store: Any, comp: Any, lb: Any) -> tuple[list[Any], list[Any], list[str],
                                                                  list[tuple[Any, str]], str]:
    """(entries, their split's statistics, blob shas, excluded, reference sha256) for the primary metric."""
    from referee.scoring.engine import load_stats
    from referee.scoring.reference import load_reference

    ref = load_reference(comp)
    mask = ref.mask(lb.split)
    rows = store.score_rows([e.submission_id for e in lb.entries], lb.primary, lb.split)
    kept: list[Any] = []
    stats: list[Any] = []  # statistics arrays (summable scorer) or Predictions (general scorer)
    shas: list[str] = []
    excluded: list[tuple[Any, str]] = []
    width = None
    for e in lb.entries:
        r = rows.get(e.submission_id)
        if e.metrics.get(lb.primary) is None or r is None or not r.stats_sha256:
            excluded.append((e, "no per-item statistics were stored"))
            continue
        if r.provenance.get("reference_sha256") not in (None, ref.sha256):
            excluded.append((e, "it was scored against a different reference file"))
            continue
        try:
            s = load_stats(store, r.stats_sha256)
        except (OSError, ValueError) as exc:
            excluded.append((e, f"its statistics blob could not be read ({type(exc).__name__})"))
            continue
        if not isinstance(s, np.ndarray):  # a general scorer's stored predictions
            if len(s) != len(mask):
                excluded.append((e, f"its stored predictions have {len(s)} items, not {len(mask)}"))
                continue
            kept.append(e)
            stats.append(s.take(mask))
            shas.append(r.stats_sha256)
            continue
        if s.ndim != 2 or s.shape[0] != len(mask) or (width is not None and s.shape[1] != width):
            excluded.append((e, f"its statistics have shape {s.shape}, not ({len(mask)}, {width or 'k'})"))
            continue
        width = s.shape[1]
        kept.append(e)
        stats.append(s[mask])
        shas.append(r.stats_sha256)
    return kept, stats, shas, excluded, ref.sha256


def compare_entries(store: Any, comp: Any, lb: Any, settings: Any) -> LeaderboardSignificance:
    """Paired tests, tiers and p-value columns for ``lb``'s entries (cached per statistics and settings)."""
    from referee.plugins.manager import get_plugin_manager
    from referee.scoring.engine import split_references
    from referee.scoring.significance import assign_tiers, paired_test

    metric = next(m for m in comp.metrics if m.key == lb.primary)
    entries, stats, shas, excluded, ref_sha = _entry_statistics(store, comp, lb)
    key = (comp.id, lb.split, metric.scorer, json.dumps(metric.params, sort_keys=True, default=str),
           tuple(shas), settings, ref_sha, comp.split.model_dump_json())
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return LeaderboardSignificance(**{**hit.__dict__, "entries": entries, "excluded": excluded})
    result = LeaderboardSignificance(metric=lb.primary, split=lb.split, settings=settings, entries=entries,
                                     excluded=excluded)
    n = len(entries)
    result.p_vs_leader = [None] * n
    result.p_vs_prev = [None] * n
    if n >= 2 and len(stats[0]) > 0:
        scorer = get_plugin_manager().scorer(metric.scorer)
        refs = split_references(comp, lb.split) if scorer.general else None
        test = paired_test(scorer, dict(metric.params), stats, refs, method=settings.method,
                           resamples=settings.resamples, seed=settings.seed, backend=settings.backend)
        below = np.arange(1, n)
        vs_leader = test.p_values(np.zeros(n - 1, dtype=np.intp), below)
        vs_prev = test.p_values(below - 1, below)
        result.p_vs_leader[1:] = [float(p) for p in vs_leader]
        result.p_vs_prev[1:] = [float(p) for p in vs_prev]

        def p_against(head: int, others: np.ndarray) -> np.ndarray:
            return vs_leader if head == 0 else test.p_values(np.full(len(others), head), others)

        result.test = test
        result.tiers = assign_tiers(n, p_against, settings.alpha, settings.correction)
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return result


@hookimpl
def referee_leaderboard_enrich(store: Any, competition: Any, leaderboard: Any) -> None:
    """Add ``tier``, ``p_vs_leader`` and ``p_vs_prev`` columns (see the module docstring)."""
    settings = significance_settings(competition)
    if not settings.enabled or not leaderboard.entries:
        return
    try:
        result = compare_entries(store, competition, leaderboard, settings)
    except (OSError, SpecError) as exc:  # reference data gone: the leaderboard still shows scores
        leaderboard.notes.append(f"no tiers: the reference data could not be read ({exc})")
        return
    for col in COLUMNS:
        if col not in leaderboard.columns_extra:
            leaderboard.columns_extra.append(col)
    for pos, e in enumerate(result.entries):
        e.extra["tier"] = result.tiers.tier[pos] if result.tiers else 1
        e.extra["p_vs_leader"] = result.p_vs_leader[pos]
        e.extra["p_vs_prev"] = result.p_vs_prev[pos]
    leaderboard.notes.extend(result.notes())
