"""Root mean squared error and mean absolute error of one numeric prediction column against numeric
references, as scikit-learn's ``root_mean_squared_error`` / ``mean_absolute_error``.

Both are sums: per-item ``[error, 1]`` with the squared or absolute error; RMSE is the square root of
the mean. Predictions may be ``score`` (any finite number) or ``probability``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from referee.platform.core.predictions import Predictions, References
from referee.scoring.metrics import _common as c
from referee.scoring.metrics.base import SummableMetric


class _ErrorMean(SummableMetric):
    higher_is_better = False
    accepts = ("score", "probability")
    params: c.ParamSpec = {}

    def errors(self, diff: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def statistics(self, predictions: Predictions, references: References,
                   params: Mapping[str, Any]) -> np.ndarray:
        """Per-item ``[error, 1]``, shape (n, 2)."""
        self.resolve(params)
        self.check_type(predictions)
        x = c.one_column(self.name, predictions)
        y = c.numeric_targets(self.name, c.single_references(self.name, references, len(x)))
        return np.stack([self.errors(x - y), np.ones(len(x))], axis=1)


class Rmse(_ErrorMean):
    name = "rmse"
    description = "root mean squared error of a numeric prediction (sklearn's root_mean_squared_error)"

    def errors(self, diff: np.ndarray) -> np.ndarray:
        return diff * diff

    def aggregate(self, sums: Any, params: Mapping[str, Any] | None = None) -> Any:
        return np.sqrt(c.ratio(sums, 2, self.name))


class Mae(_ErrorMean):
    name = "mae"
    description = "mean absolute error of a numeric prediction (sklearn's mean_absolute_error)"

    def errors(self, diff: np.ndarray) -> np.ndarray:
        return np.abs(diff)

    def aggregate(self, sums: Any, params: Mapping[str, Any] | None = None) -> Any:
        return c.ratio(sums, 2, self.name)


rmse = Rmse()
mae = Mae()
