"""Accuracy for label predictions and for probability predictions.

Labels: exact match after stripping whitespace (``case_sensitive`` may turn off case).
Probabilities, binary (one column = P(positive)): predict ``positive_label`` when
``p > threshold`` (``threshold_rule: ">"``, the default, which keeps the scores referee has always
given) or when ``p >= threshold`` (``threshold_rule: ">="``, the rule of most tools). Multi-class
(one column per class): the column with the largest probability, the first one on ties; the
binary settings do not apply and the signature says ``task:multiclass``.
Per-item statistics are ``[correct, 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from referee.platform.core.predictions import Predictions, References
from referee.scoring.metrics import _common as c
from referee.scoring.metrics.base import SummableMetric

THRESHOLD_RULES = (">", ">=")


class Accuracy(SummableMetric):
    name = "accuracy"
    higher_is_better = True
    accepts = ("label", "probability")
    params: c.ParamSpec = {
        "case_sensitive": (True, c.boolean),
        "threshold": (0.5, c.number(0.0, 1.0)),
        "threshold_rule": (">", c.choice(THRESHOLD_RULES)),
        **c.BINARY_LABELS,
    }
    description = "fraction of exactly matching labels (or thresholded / argmax probabilities)"

    def settings(self, resolved: dict[str, Any], predictions: Predictions) -> dict[str, Any]:
        if predictions.type == "label":
            return {"task": "labels", "case_sensitive": resolved["case_sensitive"]}
        if len(predictions.columns) > 1:
            return {"task": "multiclass", "classes": len(predictions.columns), "decision": "argmax"}
        return {"task": "binary", **{k: resolved[k] for k in ("threshold", "threshold_rule", "positive_label",
                                                              "negative_label")}}

    def statistics(self, predictions: Predictions, references: References,
                   params: Mapping[str, Any]) -> np.ndarray:
        """Per-item ``[correct, 1]``, shape (n, 2)."""
        p = self.resolve(params)
        self.check_type(predictions)
        n = len(predictions.values)
        refs = c.single_references(self.name, references, n)
        if predictions.type == "label":
            correct = _label_matches(predictions.values, refs, p["case_sensitive"])
        else:
            probs = np.asarray(predictions.values, dtype=np.float64)
            if probs.ndim == 1:
                probs = probs[:, None]
            if probs.shape[1] == 1:
                y = c.binary_targets(self.name, refs, p["positive_label"], p["negative_label"])
                positive = probs[:, 0] > p["threshold"] if p["threshold_rule"] == ">" else \
                    probs[:, 0] >= p["threshold"]
                correct = positive == (y == 1.0)
            else:
                idx = c.class_indices(self.name, refs, predictions.columns)
                correct = np.argmax(probs, axis=1) == idx
        out = np.empty((n, 2), dtype=np.float64)
        out[:, 0] = correct
        out[:, 1] = 1.0
        return out

    def aggregate(self, sums: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Fraction correct: ``sums[..., 0] / sums[..., 1]``."""
        return c.ratio(sums, 2, self.name)


def _label_matches(values: Sequence[str], refs: Sequence[str], case_sensitive: bool) -> np.ndarray:
    if case_sensitive:
        pairs = ((v.strip(), r.strip()) for v, r in zip(values, refs))
    else:
        pairs = ((v.strip().casefold(), r.strip().casefold()) for v, r in zip(values, refs))
    return np.fromiter((a == b for a, b in pairs), dtype=bool, count=len(refs))


accuracy = Accuracy()
