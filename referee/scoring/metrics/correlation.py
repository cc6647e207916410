"""Pearson and Spearman correlation between one numeric prediction column and numeric references,
as ``scipy.stats.pearsonr`` / ``spearmanr``.

Pearson is a sum: per-item ``[1, dx, dy, dx^2, dy^2, dx*dy]`` with ``dx = x - x0`` (``x0`` an item's
value near the mean, which keeps the sums well conditioned and makes a constant column exactly
zero). Spearman is the Pearson correlation of average ranks; ranks depend on which items a resample
drew, so it is a general metric: items are sorted once, and the average rank of a group of tied
values in a resample is ``(weight below) + (group weight + 1) / 2``, a cumulative sum per resample.

A constant column has no correlation: nan (scipy's answer, which also warns).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from referee.platform.core.predictions import Predictions, References
from referee.scoring.metrics import _common as c
from referee.scoring.metrics.base import (
    SummableMetric,
    WeightedMetric,
    unbatch,
    weighted_rows,
)

ACCEPTS = ("score", "probability")
# A variance this small relative to the sum of squares is rounding noise: the column is constant.
_CONSTANT_RTOL = 1e-12


def _pairs(name: str, predictions: Predictions, references: References) -> tuple[np.ndarray, np.ndarray]:
    c.require_type(name, predictions, ACCEPTS)
    x = c.one_column(name, predictions)
    y = c.numeric_targets(name, c.single_references(name, references, len(x)))
    return x, y


def _centre(v: np.ndarray) -> np.ndarray:
    """``v`` minus the item value closest to its mean (exactly 0 everywhere for a constant column)."""
    if not len(v):
        return v.copy()
    return v - v[np.argmin(np.abs(v - v.mean()))]


def correlation_from_moments(n: Any, sx: Any, sy: Any, sxx: Any, syy: Any, sxy: Any) -> np.ndarray:
    """Pearson's r from (weighted) sums; nan for a constant column or fewer than two items."""
    with np.errstate(divide="ignore", invalid="ignore"):
        vx = sxx - sx * sx / n
        vy = syy - sy * sy / n
        r = (sxy - sx * sy / n) / np.sqrt(vx * vy)
        constant = (vx <= _CONSTANT_RTOL * sxx) | (vy <= _CONSTANT_RTOL * syy) | (n < 2)
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


class Pearson(SummableMetric):
    name = "pearson"
    higher_is_better = True
    accepts = ACCEPTS
    params: c.ParamSpec = {}
    description = "Pearson correlation of a numeric prediction with a numeric reference (scipy's pearsonr)"

    def statistics(self, predictions: Predictions, references: References,
                   params: Mapping[str, Any]) -> np.ndarray:
        """Per-item ``[1, dx, dy, dx^2, dy^2, dx*dy]``, shape (n, 6)."""
        self.resolve(params)
        x, y = _pairs(self.name, predictions, references)
        dx, dy = _centre(x), _centre(y)
        return np.stack([np.ones_like(dx), dx, dy, dx * dx, dy * dy, dx * dy], axis=1)

    def aggregate(self, sums: Any, params: Mapping[str, Any] | None = None) -> Any:
        s = c.as_sums(sums, 6, self.name)
        return correlation_from_moments(*(s[..., j] for j in range(6)))[()]


@dataclass
class _Ranking:
    """One variable sorted once: its order, and the group of tied values each sorted position is in."""

    order: np.ndarray
    group_end: np.ndarray  # sorted position of the last item of each group
    group_of: np.ndarray  # group of each item (original order)

    @classmethod
    def of(cls, v: np.ndarray) -> "_Ranking":
        order = np.argsort(v, kind="stable")
        s = v[order]
        new_group = np.concatenate([[True], s[1:] != s[:-1]]) if len(s) else np.zeros(0, bool)
        sorted_group = np.cumsum(new_group) - 1
        group_of = np.empty(len(v), dtype=np.intp)
        group_of[order] = sorted_group
        ends = np.append(np.flatnonzero(new_group[1:]), len(s) - 1) if len(s) else np.zeros(0, np.intp)
        return cls(order, ends, group_of)

    def average_ranks(self, w: np.ndarray) -> np.ndarray:
        """Average rank of every item in each weighted resample (rows of ``w``), shape (b, n)."""
        upto = np.cumsum(w[:, self.order], axis=1)[:, self.group_end]  # weight at or below each group
        below = np.concatenate([np.zeros((len(w), 1)), upto[:, :-1]], axis=1)
        ranks = below + (upto - below + 1.0) * 0.5
        return ranks[:, self.group_of]


class Spearman(WeightedMetric):
    name = "spearman"
    higher_is_better = True
    accepts = ACCEPTS
    params: c.ParamSpec = {}
    description = "Spearman rank correlation of a numeric prediction with a numeric reference (scipy)"

    def prepare(self, predictions: Predictions, references: References, params: dict[str, Any]) -> Any:
        x, y = _pairs(self.name, predictions, references)
        return _Ranking.of(x), _Ranking.of(y)

    def compute(self, state: Any, params: dict[str, Any], weights: np.ndarray | None) -> Any:
        rank_x, rank_y = state
        n = len(rank_x.order)
        w = weighted_rows(weights, n)
        rx, ry = rank_x.average_ranks(w), rank_y.average_ranks(w)
        total = w.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rx -= (np.einsum("ij,ij->i", w, rx) / total)[:, None]
            ry -= (np.einsum("ij,ij->i", w, ry) / total)[:, None]
            wx = w * rx
            sxx = np.einsum("ij,ij->i", wx, rx)
            sxy = np.einsum("ij,ij->i", wx, ry)
            syy = np.einsum("ij,ij->i", w * ry, ry)
        zero = np.zeros(len(w))
        return unbatch(correlation_from_moments(total, zero, zero, sxx, syy, sxy), weights)


pearson = Pearson()
spearman = Spearman()
