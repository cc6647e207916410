"""Log loss (cross-entropy), binary and multiclass, clipped like Kaggle's.

Binary: one probability column holding P(positive); references are ``positive_label`` or
``negative_label``. Multiclass: the columns are the class labels and each reference names one.
Probabilities are clipped to ``[eps, 1 - eps]``; multiclass rows are then divided by their sum.
Per-item statistics are ``[loss_i, 1]``; the score is their ratio (the mean loss).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from referee.scoring.metrics import _common as c

NAME = "log_loss"
REVISION = "1.0"
ACCEPTS = ("probability",)
LIBRARIES = ("numpy",)

PARAMS: c.ParamSpec = {
    "eps": (1e-15, c.number(0.0, 0.5, open_lo=True, open_hi=True)),
    "positive_label": ("1", c.text),
    "negative_label": ("0", c.text),
}


def resolve(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checked parameters with defaults filled in; ValueError names an unknown or bad one."""
    return c.resolve_binary_params(NAME, params, PARAMS)


def validate_params(params: Mapping[str, Any]) -> None:
    """Raise ValueError naming an unknown or bad parameter."""
    resolve(params)


def statistics(predictions: Any, references: Sequence[Any], params: Mapping[str, Any]) -> np.ndarray:
    """Per-item ``[loss, 1]``, shape (n, 2)."""
    p = resolve(params)
    c.require_type(NAME, predictions, ACCEPTS)
    probs = np.asarray(predictions.values, dtype=np.float64)
    n = probs.shape[0]
    refs = c.single_references(NAME, references, n)
    eps = float(p["eps"])
    if probs.ndim == 1:
        probs = probs[:, None]
    if probs.shape[1] == 1:
        y = c.binary_targets(NAME, refs, p["positive_label"], p["negative_label"])
        q = np.clip(probs[:, 0], eps, 1.0 - eps)
        loss = -(y * np.log(q) + (1.0 - y) * np.log1p(-q))
    else:
        idx = c.class_indices(NAME, refs, predictions.columns)
        q = np.clip(probs, eps, 1.0 - eps)
        q /= q.sum(axis=1, keepdims=True)
        loss = -np.log(q[np.arange(n), idx])
    out = np.empty((n, 2), dtype=np.float64)
    out[:, 0] = loss
    out[:, 1] = 1.0
    return out


def aggregate(sums: Any, params: Mapping[str, Any] | None = None) -> Any:
    """Mean loss: ``sums[..., 0] / sums[..., 1]``."""
    return c.ratio(sums, 2, NAME)


def signature(params: Mapping[str, Any]) -> str:
    return c.format_signature(NAME, resolve(params), c.scorer_version(REVISION))
