"""Paired significance tests between systems scored on the same items, and rank tiers.

Both tests follow sacrebleu 2.x (``sacrebleu/significance.py``) and share one set of resamples
across all systems, so every pair is tested on the same draws:

* paired bootstrap (``_paired_bs_test``): resample items with replacement; with ``d_b`` the absolute
  score difference of a pair on resample ``b`` and ``d`` the observed one,
  ``p = (#{b : d_b - mean(d) > d} + 1) / (B + 1)``.
* approximate randomization (``_paired_ar_test``): swap each item's statistics between the two
  systems with probability 1/2; ``p = (#{b : |a_b - c_b| >= d} + 1) / (B + 1)``.

Two deliberate differences, both where sacrebleu's strict ``>`` meets an exact tie:
a pair whose observed scores are equal gets ``p = 1`` (sacrebleu gives ``1 / (B + 1)``, calling two
identical systems significantly different); and randomization counts shuffles whose difference
equals the observed one (``>=``, as in Noreen's test), because with a discrete metric the shuffles
often reach exactly the observed difference and never exceed it — strict ``>`` then gives
``1 / (B + 1)`` to systems that differ on three items. For corpus metrics such ties are rare and
the p-values agree with sacrebleu's (tests/test_significance.py).

Tiers (``assign_tiers``): walk down the ranking. The first entry heads tier 1. A head is compared
with every entry ranked below it (one family of tests, corrected with Holm or Bonferroni); the tier
ends just before the first entry that is significantly different from (so, worse than) the head,
and that entry heads the next tier.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from referee.platform.core.predictions import Predictions, References
from referee.scoring.bootstrap import (
    UNDEFINED_ERRORS,
    IntervalSettings,
    Number,
    Resampler,
    general_scores,
    interval_from_samples,
    resampled_sums,
    settings_from_mapping,
)

METHODS = ("paired_bootstrap", "approximate_randomization")
CORRECTIONS = ("holm", "bonferroni", "none")
TIE_RTOL = 1e-12
# A shuffled difference this close (relative to the scores) to the observed one counts as equal.
AR_TIE_RTOL = 1e-9
# Elements of one (resamples x pairs x k) block when approximate randomization scores pairs.
PAIR_BLOCK_ELEMENTS = 2**22

Aggregate = Callable[[np.ndarray, Mapping[str, Any]], Any]


class SignificanceSettings(BaseModel):
    """How leaderboard entries are compared (``leaderboard.significance`` in the YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: StrictBool = True
    method: Literal["paired_bootstrap", "approximate_randomization"] = "paired_bootstrap"
    resamples: StrictInt = Field(default=1000, ge=1, le=10**7)
    seed: StrictInt = Field(default=12345, ge=0, le=2**63 - 1)
    alpha: Number = Field(default=0.05, gt=0.0, lt=1.0)
    correction: Literal["holm", "bonferroni", "none"] = "holm"
    backend: Literal["numpy", "torch", "auto"] = "numpy"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, where: str = "leaderboard.significance",
                     **overrides: Any) -> "SignificanceSettings":
        """Checked settings with defaults filled in (``overrides`` that are not None win)."""
        if raw is not None and not isinstance(raw, Mapping):
            raise ValueError(f"{where}: must be a mapping, got {type(raw).__name__}")
        merged = {**(raw or {}), **{k: v for k, v in overrides.items() if v is not None}}
        return settings_from_mapping(cls, merged, where)

    def with_overrides(self, **overrides: Any) -> "SignificanceSettings":
        """These settings with ``overrides`` that are not None (checked; ValueError names the field)."""
        return self.from_mapping(self.model_dump(), **overrides)

    def describe(self) -> str:
        return (f"{self.method.replace('_', ' ')}, {self.resamples} resamples, seed {self.seed}, "
                f"alpha {self.alpha:g}, {self.correction} correction")

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "resamples": self.resamples, "seed": self.seed,
                "alpha": self.alpha, "correction": self.correction}


class PairedTest:
    """S systems' per-item statistics on the same n items, resampled once for every pair.

    ``x`` has shape (n, S * k): system s owns columns ``s*k .. s*k+k-1``. ``aggregate`` is the
    scorer's vectorised aggregate.
    """

    def __init__(self, aggregate: Aggregate, params: Mapping[str, Any], x: np.ndarray, k: int, *,
                 method: str = "paired_bootstrap", resamples: int = 1000, seed: int = 12345,
                 backend: str = "numpy"):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        if x.ndim != 2 or k < 1 or x.shape[1] % k:
            raise ValueError(f"statistics of shape {x.shape} are not systems x {k} columns")
        self.aggregate = aggregate
        self.params = params
        self.k = k
        self.n_items = x.shape[0]
        self.n_systems = x.shape[1] // k
        self.method = method
        self.resamples = resamples
        self.totals = x.sum(axis=0).reshape(self.n_systems, k)
        self.observed = self._scores(self.totals)
        kind = "bootstrap" if method == "paired_bootstrap" else "randomization"
        self._sums = _resampled_system_sums(x, k, Resampler(self.n_items, resamples, seed, kind), backend)
        # The bootstrap needs only each system's resampled score; randomization needs the sums.
        self.resampled = self._scores(self._sums) if kind == "bootstrap" else None

    @classmethod
    def from_systems(cls, aggregate: Aggregate, params: Mapping[str, Any], stats: Sequence[np.ndarray],
                     **kw: Any) -> "PairedTest":
        """From one (n, k) statistics array per system."""
        arrays = [np.asarray(s, dtype=np.float64) for s in stats]
        if not arrays:
            raise ValueError("no systems to compare")
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1 or arrays[0].ndim != 2:
            raise ValueError(f"every system needs statistics of the same shape (n, k); got {sorted(shapes)}")
        return cls(aggregate, params, np.concatenate(arrays, axis=1), arrays[0].shape[1], **kw)

    def _scores(self, sums: np.ndarray) -> np.ndarray:
        return np.asarray(self.aggregate(sums, self.params), dtype=np.float64).reshape(sums.shape[:-1])

    def p_values(self, a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> np.ndarray:
        """Two-sided p-values of the pairs ``(a[i], b[i])``."""
        a = np.asarray(a, dtype=np.intp).reshape(-1)
        b = np.asarray(b, dtype=np.intp).reshape(-1)
        if a.shape != b.shape:
            raise ValueError("a and b must list the same number of systems")
        out = np.empty(a.shape, dtype=np.float64)
        step = max(1, PAIR_BLOCK_ELEMENTS // (self.resamples * self.k))
        for lo in range(0, len(a), step):
            out[lo:lo + step] = self._p_block(a[lo:lo + step], b[lo:lo + step])
        return out

    def _p_block(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        diff = np.abs(self.observed[a] - self.observed[b])
        if self.resampled is not None:  # paired bootstrap
            sample_diffs = np.abs(self.resampled[:, a] - self.resampled[:, b])
            exceed = (sample_diffs - sample_diffs.mean(axis=0)) > diff
        else:  # approximate randomization
            tolerance = AR_TIE_RTOL * np.maximum(1.0, np.abs(self.observed[a]) + np.abs(self.observed[b]))
            exceed = np.abs(self._shuffled_differences(a, b)) >= diff - tolerance
        p = (exceed.sum(axis=0) + 1.0) / (self.resamples + 1.0)
        tied = diff <= TIE_RTOL * np.maximum(1.0, np.abs(self.observed[a]))
        return np.where(tied, 1.0, p)

    def _shuffled_differences(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Score differences of each pair after each shuffle, shape (resamples, pairs):
        A' = sel@A + (1-sel)@B, B' = (1-sel)@A + sel@B."""
        ma, mb = self._sums[:, a], self._sums[:, b]
        return self._scores(ma - mb + self.totals[b]) - self._scores(mb - ma + self.totals[a])

    def p_matrix(self) -> np.ndarray:
        """Symmetric (S, S) matrix of pairwise p-values, nan on the diagonal."""
        s = self.n_systems
        i, j = np.triu_indices(s, k=1)
        m = np.full((s, s), np.nan)
        p = self.p_values(i, j)
        m[i, j] = p
        m[j, i] = p
        return m

    def intervals(self, confidence: float = 0.95) -> list[tuple[float, float] | None]:
        """Percentile interval of each system from the shared bootstrap resamples."""
        if self.resampled is None:
            raise ValueError("intervals come from the paired bootstrap, not approximate randomization")
        return [interval_from_samples(self.resampled[:, s], float(self.observed[s]), confidence)
                for s in range(self.n_systems)]


class GeneralPairedTest(PairedTest):
    """Paired tests for a general scorer (``ScorerInfo.score``): S systems' predictions on the same items.

    The paired bootstrap scores every system on the same weight rows as ``PairedTest`` draws (one
    batched call per block and system when the scorer is batched). Approximate randomization swaps
    predictions between the two systems of a pair and scores both, once per shuffle: a loop.
    """

    def __init__(self, scorer: Any, params: Mapping[str, Any], systems: Sequence[Predictions],
                 references: References, *, method: str = "paired_bootstrap", resamples: int = 1000,
                 seed: int = 12345, backend: str = "numpy", workers: int | None = None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        if not systems:
            raise ValueError("no systems to compare")
        sizes = {len(s) for s in systems}
        if len(sizes) != 1:
            raise ValueError(f"every system needs predictions for the same items; got sizes {sorted(sizes)}")
        self.scorer = scorer
        self.params = params
        self.systems = list(systems)
        self.references = references
        self.k = 1
        self.n_items = sizes.pop()
        self.n_systems = len(self.systems)
        self.method = method
        self.resamples = resamples
        self.workers = workers
        kind = "bootstrap" if method == "paired_bootstrap" else "randomization"
        self._resampler = Resampler(self.n_items, resamples, seed, kind)
        self.observed = np.array([float(scorer.score(s, references, params, None)) for s in self.systems])
        self.resampled = None
        if kind == "bootstrap":
            self.resampled = np.stack([general_scores(scorer, s, references, params, self._resampler,
                                                      workers=workers) for s in self.systems], axis=1)

    def _shuffled_differences(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty((self.resamples, len(a)))
        for start, keep in self._resampler.blocks():
            for row, sel in enumerate(keep.astype(bool), start):
                for j, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
                    out[row, j] = self._swap_difference(self.systems[x], self.systems[y], ~sel)
        return out

    def _swap_difference(self, x: Predictions, y: Predictions, swap: np.ndarray) -> float:
        try:
            return (float(self.scorer.score(x.mix(y, swap), self.references, self.params, None))
                    - float(self.scorer.score(y.mix(x, swap), self.references, self.params, None)))
        except UNDEFINED_ERRORS:
            return math.nan


def paired_test(scorer: Any, params: Mapping[str, Any], systems: Sequence[Any], references: Any = None,
                **kw: Any) -> PairedTest:
    """The paired test for any scorer: ``systems`` are per-item statistics (n, k) for a summable
    scorer, ``Predictions`` (with the ``references``) for a general one."""
    if getattr(scorer, "general", False):
        return GeneralPairedTest(scorer, params, systems, references, **kw)
    kw.pop("workers", None)
    return PairedTest.from_systems(scorer.aggregate, params, systems, **kw)


def shared_columns(x: np.ndarray, k: int) -> list[int]:
    """Statistic columns that are identical for every system (a reference length, the 1 of a mean)."""
    n_systems = x.shape[1] // k
    shared = []
    for j in range(k):
        first = x[:, j:j + 1]
        step = max(1, 2**24 // max(1, x.shape[0]))  # compare a few systems at a time
        if all(np.array_equal(x[:, lo * k + j:min(n_systems, lo + step) * k:k],
                              np.broadcast_to(first, (x.shape[0], min(n_systems, lo + step) - lo)))
               for lo in range(1, n_systems, step)):
            shared.append(j)
    return shared


def _resampled_system_sums(x: np.ndarray, k: int, resampler: Resampler, backend: str) -> np.ndarray:
    """Resampled column sums, shape (resamples, systems, k); shared columns are resampled once."""
    n_systems = x.shape[1] // k
    shared = shared_columns(x, k) if n_systems > 1 else []
    if not shared:
        return resampled_sums(x, resampler, backend).reshape(resampler.resamples, n_systems, k)
    varying = [j for j in range(k) if j not in shared]
    keep = [s * k + j for s in range(n_systems) for j in varying] + shared
    reduced = resampled_sums(np.take(x, keep, axis=1), resampler, backend)
    out = np.empty((resampler.resamples, n_systems, k))
    out[:, :, varying] = reduced[:, :n_systems * len(varying)].reshape(resampler.resamples, n_systems,
                                                                           len(varying))
    out[:, :, shared] = reduced[:, None, n_systems * len(varying):]
    return out


def adjust_p_values(p: Sequence[float] | np.ndarray, correction: str) -> np.ndarray:
    """Family-wise adjusted p-values: ``holm`` (step-down), ``bonferroni`` or ``none``."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if correction == "none" or m == 0:
        return p.copy()
    if correction == "bonferroni":
        return np.minimum(1.0, p * m)
    if correction != "holm":
        raise ValueError(f"correction must be one of {CORRECTIONS}, not {correction!r}")
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = stepped
    return out


@dataclass
class Tiers:
    """Tier of each system (1 = top), in ranking order, and the head each was tested against."""

    tier: list[int]
    head: list[int]
    # Raw p-value against the head it was tested with: its tier's head, or for a head the previous
    # tier's head (None for the first entry).
    p_vs_head: list[float | None]
    p_vs_head_adjusted: list[float | None]

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "head": self.head, "p_vs_head": self.p_vs_head,
                "p_vs_head_adjusted": self.p_vs_head_adjusted}


def assign_tiers(n_systems: int, p_against: Callable[[int, np.ndarray], np.ndarray], alpha: float = 0.05,
                 correction: str = "holm") -> Tiers:
    """Tiers for systems given in ranking order (best first); see the module docstring for the rule.

    ``p_against(head, others)`` returns the raw p-values of ``head`` against each of ``others``.
    """
    tiers = Tiers(tier=[0] * n_systems, head=[0] * n_systems, p_vs_head=[None] * n_systems,
                  p_vs_head_adjusted=[None] * n_systems)
    head, tier = 0, 1
    while head < n_systems:
        tiers.tier[head], tiers.head[head] = tier, head
        below = np.arange(head + 1, n_systems)
        if below.size == 0:
            break
        raw = np.asarray(p_against(head, below), dtype=np.float64)
        adjusted = adjust_p_values(raw, correction)
        significant = np.flatnonzero(adjusted < alpha)
        end = head + 1 + int(significant[0]) if significant.size else n_systems
        for pos in range(head + 1, end):
            tiers.tier[pos], tiers.head[pos] = tier, head
        for pos in range(head + 1, min(end + 1, n_systems)):
            tiers.p_vs_head[pos] = float(raw[pos - head - 1])
            tiers.p_vs_head_adjusted[pos] = float(adjusted[pos - head - 1])
        head, tier = end, tier + 1
    return tiers


def smallest_p_value(resamples: int) -> float:
    """The smallest p-value a test with ``resamples`` draws can give: 1 / (resamples + 1)."""
    return 1.0 / (resamples + 1.0)


def correction_can_reject(n_systems: int, settings: SignificanceSettings) -> bool:
    """Whether the first test of a family of ``n_systems - 1`` can reject at all after correction."""
    family = max(1, n_systems - 1)
    factor = 1 if settings.correction == "none" else family
    return smallest_p_value(settings.resamples) * factor < settings.alpha


def min_resamples(n_systems: int, settings: SignificanceSettings) -> int:
    """Resamples needed so the corrected smallest p-value can fall below alpha."""
    family = 1 if settings.correction == "none" else max(1, n_systems - 1)
    return int(math.floor(family / settings.alpha))


class LeaderboardSettings(BaseModel):
    """The ``leaderboard:`` section of a competition: confidence intervals and paired significance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intervals: IntervalSettings = Field(default_factory=IntervalSettings)
    significance: SignificanceSettings = Field(default_factory=SignificanceSettings)


__all__ = ["CORRECTIONS", "METHODS", "GeneralPairedTest", "LeaderboardSettings", "PairedTest", "paired_test",
           "SignificanceSettings", "Tiers", "adjust_p_values", "assign_tiers", "correction_can_reject",
           "min_resamples", "smallest_p_value"]
