"""Paired significance between a leaderboard's entries: p-values, rank tiers and the notes about them.

For a built leaderboard this loads each entry's per-item statistics of the primary metric (stored by
the scoring engine), keeps the leaderboard's split, and runs one paired test over all entries on
shared resamples (``referee.scoring.significance``). Results are cached by the runtime per
statistics, settings and reference data. Used by the ``builtin_stats`` plugin (the ``tier``,
``p_vs_leader`` and ``p_vs_prev`` columns) and by ``referee significance``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from referee.platform.core.errors import SpecError
from referee.platform.core.leaderboard import Entry, Leaderboard
from referee.platform.core.spec import Competition
from referee.platform.store import Store
from referee.plugins.manager import config_section, get_plugin_manager, get_runtime
from referee.scoring.engine import load_stats, split_references
from referee.scoring.reference import load_reference
from referee.scoring.significance import (
    LeaderboardSettings,
    PairedTest,
    SignificanceSettings,
    Tiers,
    assign_tiers,
    correction_can_reject,
    min_resamples,
    paired_test,
)


@dataclass
class LeaderboardSignificance:
    """Paired tests between a leaderboard's entries (in ranking order) on its primary metric."""

    metric: str
    split: str
    settings: SignificanceSettings
    entries: list[Entry]  # the entries that were tested, best first
    excluded: list[tuple[Entry, str]] = field(default_factory=list)  # (entry, why it has no tier)
    test: PairedTest | None = None  # None with fewer than two entries
    tiers: Tiers | None = None
    p_vs_leader: list[float | None] = field(default_factory=list)
    p_vs_prev: list[float | None] = field(default_factory=list)

    def tier(self, pos: int) -> int:
        return self.tiers.tier[pos] if self.tiers else 1

    def p_matrix(self) -> np.ndarray:
        if self.test is None:
            return np.full((len(self.entries), len(self.entries)), np.nan)
        return self.test.p_matrix()

    def notes(self) -> list[str]:
        out = [f"tier: entries not significantly different from their tier's first entry share a tier "
               f"({self.metric}, {self.settings.describe()}); p_vs_leader and p_vs_prev are uncorrected."]
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
                         "score": e.metrics.get(self.metric), "tier": self.tier(pos),
                         "p_vs_leader": self.p_vs_leader[pos], "p_vs_prev": self.p_vs_prev[pos]})
        out: dict[str, Any] = {"metric": self.metric, "split": self.split, **self.settings.record(),
                               "entries": rows,
                               "excluded": [{"submission_id": e.submission_id, "team": e.team, "reason": why}
                                            for e, why in self.excluded]}
        if matrix:
            m = self.p_matrix()
            out["p_values"] = [[None if np.isnan(v) else float(v) for v in row] for row in m]
        return out


def significance_settings(comp: Competition, **overrides: Any) -> SignificanceSettings:
    """The competition's ``leaderboard.significance`` settings (``overrides`` that are not None win)."""
    settings = config_section(comp, "leaderboard", LeaderboardSettings).significance
    if not any(v is not None for v in overrides.values()):
        return settings
    try:
        return settings.with_overrides(**overrides)
    except ValueError as exc:
        raise SpecError(str(comp.source_path or comp.id),
                        [("leaderboard.significance", str(exc).removeprefix("leaderboard.significance: "))]) from None


def _entry_statistics(store: Store, comp: Competition, lb: Leaderboard) -> tuple[
        list[Entry], list[Any], list[str], list[tuple[Entry, str]], str]:
    """(entries, their split's statistics, blob shas, excluded, reference sha256) for the primary metric."""
    ref = load_reference(comp)
    mask = ref.mask(lb.split)
    rows = store.score_rows([e.submission_id for e in lb.entries], lb.primary, lb.split)
    kept: list[Entry] = []
    stats: list[Any] = []  # statistics arrays (summable scorer) or Predictions (general scorer)
    shas: list[str] = []
    excluded: list[tuple[Entry, str]] = []
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


def compare_entries(store: Store, comp: Competition, lb: Leaderboard,
                    settings: SignificanceSettings) -> LeaderboardSignificance:
    """Paired tests, tiers and p-value columns for ``lb``'s entries (cached per statistics and settings)."""
    metric = next(m for m in comp.metrics if m.key == lb.primary)
    params = comp.metric_params(metric)
    # Keyed by what decides the result (each entry's statistics blob, by content hash, in ranking
    # order): a leaderboard built again with the same entries loads no blob at all.
    sources = store.score_sources([e.submission_id for e in lb.entries], lb.primary, lb.split)
    entry_key = tuple((e.submission_id, e.metrics.get(lb.primary) is None, sources.get(e.submission_id))
                      for e in lb.entries)
    key = (comp.id, lb.split, metric.scorer, json.dumps(params, sort_keys=True, default=str), entry_key, settings,
           load_reference(comp).sha256, comp.effective_split.model_dump_json())

    def compute() -> LeaderboardSignificance:
        entries, stats, _, excluded, _ = _entry_statistics(store, comp, lb)
        result = LeaderboardSignificance(metric=lb.primary, split=lb.split, settings=settings, entries=entries,
                                         excluded=excluded)
        n = len(entries)
        result.p_vs_leader = [None] * n
        result.p_vs_prev = [None] * n
        if n >= 2 and len(stats[0]) > 0:
            scorer = get_plugin_manager().scorer(metric.scorer)
            refs = split_references(comp, lb.split) if scorer.general else None
            test = paired_test(scorer, params, stats, refs, method=settings.method,
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
        return result

    hit = get_runtime().cache("significance").get_or_compute(key, compute)
    # the same statistics sit behind other entry objects in another build of the board
    current = {e.submission_id: e for e in lb.entries}
    return replace(hit, entries=[current[e.submission_id] for e in hit.entries],
                   excluded=[(current[e.submission_id], why) for e, why in hit.excluded])
