"""Log loss (cross-entropy), binary and multi-class, clipped like Kaggle's.

Binary: one probability column holding P(positive); references are ``positive_label`` or
``negative_label``. Multi-class: the columns are the class labels and each reference names one
(the signature says ``task:multiclass``; the binary labels do not apply). Probabilities are
clipped to ``[eps, 1 - eps]``; multi-class rows are then divided by their sum. Per-item statistics
are ``[loss_i, 1]``; the score is their ratio (the mean loss).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from referee.platform.core.predictions import Predictions, References
from referee.scoring.metrics import _common as c
from referee.scoring.metrics.base import SummableMetric


class LogLoss(SummableMetric):
    name = "log_loss"
    higher_is_better = False
    accepts = ("probability",)
    params: c.ParamSpec = {
        "eps": (1e-15, c.number(0.0, 0.5, open_lo=True, open_hi=True)),
        **c.BINARY_LABELS,
    }
    description = "log loss (cross-entropy), binary or multiclass, clipped at eps"

    def settings(self, resolved: dict[str, Any], predictions: Predictions) -> dict[str, Any]:
        if len(predictions.columns) > 1:
            return {"task": "multiclass", "classes": len(predictions.columns), "eps": resolved["eps"],
                    "normalise": True}
        return {"task": "binary", **resolved}

    def statistics(self, predictions: Predictions, references: References,
                   params: Mapping[str, Any]) -> np.ndarray:
        """Per-item ``[loss, 1]``, shape (n, 2)."""
        p = self.resolve(params)
        self.check_type(predictions)
        probs = np.asarray(predictions.values, dtype=np.float64)
        n = probs.shape[0]
        refs = c.single_references(self.name, references, n)
        eps = float(p["eps"])
        if probs.ndim == 1:
            probs = probs[:, None]
        if probs.shape[1] == 1:
            y = c.binary_targets(self.name, refs, p["positive_label"], p["negative_label"])
            q = np.clip(probs[:, 0], eps, 1.0 - eps)
            loss = -(y * np.log(q) + (1.0 - y) * np.log1p(-q))
        else:
            idx = c.class_indices(self.name, refs, predictions.columns)
            q = np.clip(probs, eps, 1.0 - eps)
            q /= q.sum(axis=1, keepdims=True)
            loss = -np.log(q[np.arange(n), idx])
        out = np.empty((n, 2), dtype=np.float64)
        out[:, 0] = loss
        out[:, 1] = 1.0
        return out

    def aggregate(self, sums: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Mean loss: ``sums[..., 0] / sums[..., 1]``."""
        return c.ratio(sums, 2, self.name)


log_loss = LogLoss()
