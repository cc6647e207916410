"""Macro-averaged F1, as scikit-learn's ``f1_score(average="macro")``.

Predictions are labels (stripped), or one probability column per class (the largest wins, the first
on ties). The classes are those that occur among the references or the predictions of the items
scored (sklearn's ``unique_labels``): F1 of each is ``2 TP / (2 TP + FP + FN)``, and the score is
their unweighted mean. On a bootstrap resample, a class none of whose items was drawn drops out,
exactly as sklearn would see the resampled data.

Not a sum of per-item statistics (the class set depends on the items), but every resample is three
weighted class counts, so blocks of resamples are one matrix product each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from referee.platform.core.predictions import Predictions, References
from referee.scoring.metrics import _common as c
from referee.scoring.metrics.base import WeightedMetric, unbatch, weighted_rows

# Above this many (items x classes), class counts come from one bincount per resample instead of a
# matrix product with one-hot indicators.
_ONE_HOT_MAX = 2**22


@dataclass
class _Labels:
    n_classes: int
    truth: np.ndarray  # class index of each reference
    guess: np.ndarray  # class index of each prediction


class MacroF1(WeightedMetric):
    name = "macro_f1"
    higher_is_better = True
    accepts = ("label", "probability")
    params: c.ParamSpec = {}
    description = "macro-averaged F1 over the classes present (sklearn's f1_score, average='macro')"

    def settings(self, resolved: dict[str, Any], predictions: Predictions) -> dict[str, Any]:
        decision = "argmax" if predictions.type == "probability" else "label"
        return {"average": "macro", "decision": decision, **resolved}

    def prepare(self, predictions: Predictions, references: References, params: dict[str, Any]) -> Any:
        self.check_type(predictions)
        refs = [r.strip() for r in c.single_references(self.name, references, len(predictions))]
        if predictions.type == "label":
            guesses = [str(v).strip() for v in predictions.values]
        else:
            probs = np.asarray(predictions.values, dtype=np.float64)
            if probs.ndim != 2 or probs.shape[1] < 2:
                raise ValueError(f"{self.name}: probability predictions need one column per class "
                                 f"(got {list(predictions.columns)}); or use label predictions")
            columns = [str(col).strip() for col in predictions.columns]
            guesses = [columns[j] for j in np.argmax(probs, axis=1)]
        classes = sorted(set(refs) | set(guesses))
        index = {label: j for j, label in enumerate(classes)}
        truth = np.fromiter((index[r] for r in refs), dtype=np.intp, count=len(refs))
        guess = np.fromiter((index[g] for g in guesses), dtype=np.intp, count=len(guesses))
        return _Labels(len(classes), truth, guess)

    def compute(self, state: Any, params: dict[str, Any], weights: np.ndarray | None) -> Any:
        n, k = len(state.truth), state.n_classes
        w = weighted_rows(weights, n)
        hit = state.truth == state.guess
        if n * k <= _ONE_HOT_MAX:
            eye = np.eye(k)
            true_count = w @ eye[state.truth]
            guess_count = w @ eye[state.guess]
            hits = w @ (eye[state.truth] * hit[:, None])
        else:
            true_count = np.stack([np.bincount(state.truth, weights=row, minlength=k) for row in w])
            guess_count = np.stack([np.bincount(state.guess, weights=row, minlength=k) for row in w])
            hits = np.stack([np.bincount(state.truth[hit], weights=row[hit], minlength=k) for row in w])
        present = (true_count + guess_count) > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.where(present, 2.0 * hits / (true_count + guess_count), 0.0)
            macro = f1.sum(axis=1) / present.sum(axis=1)
        return unbatch(macro, weights)


macro_f1 = MacroF1()
