"""Accuracy for label predictions and for probability predictions.

Labels: exact match after stripping whitespace (``case_sensitive`` may turn off case).
Probabilities, binary (one column = P(positive)): predict ``positive_label`` when p > ``threshold``
(strictly, like scikit-learn's classifiers). Multiclass: the column with the largest probability
(the first one on ties). Per-item statistics are ``[correct, 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from referee.scoring.metrics import _common as c

NAME = "accuracy"
REVISION = "1.0"
ACCEPTS = ("label", "probability")
LIBRARIES = ("numpy",)

PARAMS: c.ParamSpec = {
    "case_sensitive": (True, c.boolean),
    "threshold": (0.5, c.number(0.0, 1.0)),
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
    """Per-item ``[correct, 1]``, shape (n, 2)."""
    p = resolve(params)
    c.require_type(NAME, predictions, ACCEPTS)
    n = len(predictions.values)
    refs = c.single_references(NAME, references, n)
    if predictions.type == "label":
        correct = _label_matches(predictions.values, refs, p["case_sensitive"])
    else:
        probs = np.asarray(predictions.values, dtype=np.float64)
        if probs.ndim == 1:
            probs = probs[:, None]
        if probs.shape[1] == 1:
            y = c.binary_targets(NAME, refs, p["positive_label"], p["negative_label"])
            correct = (probs[:, 0] > p["threshold"]) == (y == 1.0)
        else:
            idx = c.class_indices(NAME, refs, predictions.columns)
            correct = np.argmax(probs, axis=1) == idx
    out = np.empty((n, 2), dtype=np.float64)
    out[:, 0] = correct
    out[:, 1] = 1.0
    return out


def _label_matches(values: Sequence[str], refs: Sequence[str], case_sensitive: bool) -> np.ndarray:
    if case_sensitive:
        pairs = ((v.strip(), r.strip()) for v, r in zip(values, refs))
    else:
        pairs = ((v.strip().casefold(), r.strip().casefold()) for v, r in zip(values, refs))
    return np.fromiter((a == b for a, b in pairs), dtype=bool, count=len(refs))


def aggregate(sums: Any, params: Mapping[str, Any] | None = None) -> Any:
    """Fraction correct: ``sums[..., 0] / sums[..., 1]``."""
    return c.ratio(sums, 2, NAME)


def signature(params: Mapping[str, Any]) -> str:
    return c.format_signature(NAME, resolve(params), c.scorer_version(REVISION))
