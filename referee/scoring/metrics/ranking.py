"""ROC AUC and average precision, as scikit-learn defines them, for weighted items.

Binary: one numeric column holding the score of the positive class; references are
``positive_label`` or ``negative_label``. Multi-class: one column per class (named by the class
label), one-vs-rest, and the unweighted (macro) mean over the classes, like
``roc_auc_score(..., multi_class="ovr", average="macro")`` and ``average_precision_score`` of the
binarised references with ``average="macro"``.

Both are general (not sums of per-item statistics), but vectorise over bootstrap resamples: the
items are sorted once, and each resample is a few cumulative sums of its weights (O(n) per resample,
a block of resamples per NumPy call).

* ROC AUC is the Mann-Whitney statistic: for each positive, the weight of negatives scored below it
  plus half of those tied with it, over (positive weight x negative weight). sklearn integrates the
  same step curve with the trapezoid rule. Undefined (nan, sklearn's answer) when a class is absent.
* Average precision is ``sum_k (R_k - R_{k-1}) P_k`` over distinct score thresholds, highest first
  (sklearn's step-wise sum, no interpolation); 0.0 when there are no positives (sklearn's answer).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from referee.platform.core.predictions import Predictions, References
from referee.scoring.metrics import _common as c
from referee.scoring.metrics.base import WeightedMetric, unbatch, weighted_rows


@dataclass
class _Targets:
    """Scores and boolean targets of one binary problem (a class against the rest)."""

    scores: np.ndarray
    positive: np.ndarray


class _RankingMetric(WeightedMetric):
    accepts = ("probability", "score")
    params = c.BINARY_LABELS

    def settings(self, resolved: dict[str, Any], predictions: Predictions) -> dict[str, Any]:
        if len(predictions.columns) > 1:
            return {"task": "multiclass", "classes": len(predictions.columns), "multi_class": "ovr",
                    "average": "macro"}
        return {"task": "binary", **resolved}

    def targets(self, predictions: Predictions, references: References, p: dict[str, Any]) -> list[_Targets]:
        """One binary problem (binary predictions) or one per class (multi-class)."""
        self.check_type(predictions)
        values = np.asarray(predictions.values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        refs = c.single_references(self.name, references, len(values))
        if values.shape[1] == 1:
            y = c.binary_targets(self.name, refs, p["positive_label"], p["negative_label"])
            return [_Targets(values[:, 0], y == 1.0)]
        idx = c.class_indices(self.name, refs, predictions.columns)
        return [_Targets(values[:, j], idx == j) for j in range(values.shape[1])]

    def compute(self, state: Any, params: dict[str, Any], weights: np.ndarray | None) -> Any:
        n, tasks = state
        w = weighted_rows(weights, n)
        if len(tasks) == 1:  # binary: no mean to take (a mean of one is the value itself)
            return unbatch(self.binary(tasks[0], w), weights)
        per_class = np.stack([self.binary(task, w) for task in tasks])
        return unbatch(per_class.mean(axis=0), weights)

    def binary(self, task: Any, w: np.ndarray) -> np.ndarray:
        raise NotImplementedError


# ---------------------------------------------------------------- ROC AUC

class _Scratch(threading.local):
    """Working arrays of one thread, kept between calls: a fresh array of a few hundred KiB per
    resample costs page faults each time (the allocator hands large blocks back to the system).
    One per prepared state, shared by its classes; it goes when the state leaves the cache."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, rows: int, cols: int, dtype: Any) -> np.ndarray:
        """A C-contiguous (rows, cols) array of ``dtype`` (contents undefined) in reused memory."""
        a = self.arrays.get(name)
        if a is None or a.size < rows * cols or a.dtype != dtype:
            a = self.arrays[name] = np.empty(rows * cols, dtype=dtype)
        return a[:rows * cols].reshape(rows, cols)


@dataclass
class _AucTask:
    pos: np.ndarray  # item index of each positive, by ascending score
    neg_order: np.ndarray  # negatives by ascending score
    lo: np.ndarray  # per positive: how many negatives score strictly below it
    tied: np.ndarray  # which positives (into pos) tie with a negative (often none)
    tied_lo: np.ndarray  # lo of those positives
    tied_hi: np.ndarray  # and how many negatives score at or below them
    codes: np.ndarray | None  # 2 * (rank of the item's distinct score) + target, when there are few scores
    n_scores: int  # distinct scores
    scratch: _Scratch  # working arrays, per thread


# With at most this many distinct scores, a resample's AUC comes from a weighted histogram of
# (score, class): one sequential pass over the weights into an array that stays in cache.
_HISTOGRAM_SCORES = 4096


class RocAuc(_RankingMetric):
    name = "roc_auc"
    higher_is_better = True
    description = "area under the ROC curve (binary, or one-vs-rest macro for multi-class), as sklearn"

    def prepare(self, predictions: Predictions, references: References, params: dict[str, Any]) -> Any:
        tasks = []
        scratch = _Scratch()
        for t in self.targets(predictions, references, params):
            pos = np.flatnonzero(t.positive)
            pos = pos[np.argsort(t.scores[pos], kind="stable")]  # lo rises: its gather reads in order
            neg = np.flatnonzero(~t.positive)
            neg_order = neg[np.argsort(t.scores[neg], kind="stable")]
            sorted_neg = t.scores[neg_order]
            lo = np.searchsorted(sorted_neg, t.scores[pos], side="left")
            hi = np.searchsorted(sorted_neg, t.scores[pos], side="right")
            tied = np.flatnonzero(lo != hi)
            distinct, rank = np.unique(t.scores, return_inverse=True)
            codes = 2 * rank.astype(np.intp) + t.positive if len(distinct) <= _HISTOGRAM_SCORES else None
            tasks.append(_AucTask(pos, neg_order, lo, tied, lo[tied], hi[tied], codes, len(distinct), scratch))
        return len(predictions), tasks

    def binary(self, task: Any, w: np.ndarray) -> np.ndarray:
        """Mann-Whitney: positive weight x (negative weight below + half the tied), over all pairs.
        Weights are whole counts, so every sum is exact and both paths give the same bits."""
        if task.codes is not None:
            return np.array([self._from_histogram(task, row) for row in w])
        return self._from_sorted(task, w)

    @staticmethod
    def _from_histogram(task: _AucTask, row: np.ndarray) -> float:
        assert task.codes is not None
        h = np.bincount(task.codes, weights=row, minlength=2 * task.n_scores).astype(np.float64, copy=False)
        neg, pos = h[0::2], h[1::2]
        beaten = np.cumsum(neg) - 0.5 * neg  # strictly below, plus half the ties
        pairs = pos.sum() * neg.sum()
        # einsum, not BLAS: a threaded dot product costs more than it saves on a busy machine
        return float(np.einsum("i,i->", pos, beaten) / pairs) if pairs > 0 else math.nan

    @staticmethod
    def _from_sorted(task: _AucTask, w: np.ndarray) -> np.ndarray:
        """Twice the Mann-Whitney sum, ``sum_pos w * (below(lo) + below(hi))``, over twice the pairs.

        ``below`` is the cumulative negative weight in score order. Bootstrap weights are whole
        non-negative counts: their prefix sum is taken in int64, several times faster than
        float64's (whose running sum waits on each addition) and exact, like every float sum here
        below 2**53, so the result is the same bits either way; other weights take the float64
        prefix sum. ``mode="clip"`` on the (valid) indices spares ``take`` the copy it makes to
        raise cleanly; the working arrays (``task.scratch``) serve every block of resamples.
        """
        rows, m, s = len(w), len(task.neg_order), task.scratch
        neg = np.take(w, task.neg_order, axis=1, mode="clip", out=s.get("neg", rows, m, np.float64))
        counts = s.get("counts", rows, m, np.int64)
        with np.errstate(invalid="ignore"):  # nan or inf: not whole, found below
            np.copyto(counts, neg, casting="unsafe")
        # whole, non-negative, and small enough that no prefix sum reaches 2**53 (nor overflows)
        whole = m == 0 or (bool(np.equal(counts, neg, out=s.get("same", rows, m, np.bool_)).all())
                           and counts.min() >= 0 and counts.max() <= 2**53 // m)
        below = s.get("below" if whole else "below_float", rows, m + 1, np.int64 if whole else np.float64)
        below[:, 0] = 0
        np.cumsum(counts if whole else neg, axis=1, out=below[:, 1:])
        w_pos = np.take(w, task.pos, axis=1, mode="clip", out=s.get("pos", rows, len(task.pos), np.float64))
        beaten = np.take(below, task.lo, axis=1, mode="clip",
                         out=s.get(f"beaten_{below.dtype}", rows, len(task.pos), below.dtype))
        # einsum, not BLAS: a threaded dot product costs more than it saves on a busy machine
        twice = 2.0 * np.einsum("ij,ij->i", w_pos, beaten)
        if len(task.tied):  # a tie counts one half: add below(hi) - below(lo) for those
            ties = np.take(below, task.tied_hi, axis=1) - np.take(below, task.tied_lo, axis=1)
            twice += np.einsum("ij,ij->i", w_pos[:, task.tied], ties)
        pairs = 2.0 * w_pos.sum(axis=1) * below[:, -1]
        with np.errstate(divide="ignore", invalid="ignore"):  # no pairs: a class has no weight (nan)
            return np.where(pairs > 0, twice / pairs, np.nan)


# ---------------------------------------------------------------- average precision

@dataclass
class _ApTask:
    order: np.ndarray  # all items by descending score
    positive: np.ndarray  # targets in that order, as 0.0 / 1.0
    ends: np.ndarray  # last sorted position of each group of tied scores


class AveragePrecision(_RankingMetric):
    name = "average_precision"
    higher_is_better = True
    description = "average precision (binary, or one-vs-rest macro for multi-class), as sklearn"

    def prepare(self, predictions: Predictions, references: References, params: dict[str, Any]) -> Any:
        tasks = []
        for t in self.targets(predictions, references, params):
            order = np.argsort(-t.scores, kind="stable")
            s = t.scores[order]
            ends = np.append(np.flatnonzero(s[1:] != s[:-1]), len(s) - 1) if len(s) else np.zeros(0, np.intp)
            tasks.append(_ApTask(order, t.positive[order].astype(np.float64), ends))
        return len(predictions), tasks

    def binary(self, task: Any, w: np.ndarray) -> np.ndarray:
        ws = w[:, task.order]
        seen = np.cumsum(ws, axis=1)[:, task.ends]  # weight scored at or above each threshold
        ws *= task.positive
        hits = np.cumsum(ws, axis=1)[:, task.ends]  # positive weight at or above each threshold
        gained = np.diff(hits, axis=1, prepend=0.0)  # recall gained at each threshold (x positives)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(seen > 0, hits / seen, 0.0)
            positives = hits[:, -1] if hits.shape[1] else np.zeros(len(w))
            return np.where(positives > 0, (gained * precision).sum(axis=1) / positives, 0.0)


roc_auc = RocAuc()
average_precision = AveragePrecision()
