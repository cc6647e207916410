"""The scorer plugin of the README's plugin guide, runnable (the tests run it and compare it with the
README, so the two never disagree). Register the module as a plugin to try it::

    PluginManager(extra=[referee.plugins.example_scorers])

It shows both shapes of ``ScorerInfo``: ``brier`` is summable (per-item statistics and an aggregate
of their sums), ``median_ae`` is general (``score`` of weighted items).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from referee.plugins import Predictions, References, ScorerInfo, hookimpl


def brier_statistics(predictions: Predictions, references: References,
                     params: Mapping[str, Any]) -> np.ndarray:
    """Per item ``[(p - y)^2, 1]``: p the predicted probability, y = 1 where the reference is "1"."""
    p = predictions.values[:, 0]
    y = np.array([ref == "1" for ref in references], dtype=float)
    return np.stack([(p - y) ** 2, np.ones(len(p))], axis=1)


def brier_aggregate(sums: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Mean squared error from column sums of shape (..., 2), vectorised over leading axes."""
    return sums[..., 0] / sums[..., 1]


def median_ae(predictions: Predictions, references: References, params: Mapping[str, Any],
              weights: np.ndarray | None) -> float:
    """Median absolute error; ``weights`` (None, or how often a resample drew each item) repeat items."""
    errors = np.abs(predictions.values[:, 0] - np.array(references, dtype=float))
    if weights is not None:
        errors = np.repeat(errors, weights.astype(int))
    return float(np.median(errors))


@hookimpl
def referee_scorers() -> list[ScorerInfo]:
    return [
        ScorerInfo(name="brier", version="1.0", higher_is_better=False, accepts=("probability",),
                   statistics=brier_statistics, aggregate=brier_aggregate),
        ScorerInfo(name="median_ae", version="1.0", higher_is_better=False, accepts=("score",),
                   score=median_ae),
    ]
