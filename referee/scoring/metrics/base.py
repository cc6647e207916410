"""One metric abstraction for every built-in (sacrebleu's shape): extract statistics, compute the
score from them, sign it.

* ``SummableMetric`` — per-item statistics whose column sums determine the score
  (``statistics`` + ``aggregate``): the fast path for intervals and paired tests.
* ``WeightedMetric`` — per-item data that does not sum (ranks, sorted scores): ``prepare`` extracts
  it once, ``compute(prepared, weights)`` scores weighted items, vectorised over many resamples.

``Metric.info()`` turns either into the ``ScorerInfo`` record the ``referee_scorers`` hook returns,
so built-ins register exactly like third-party scorers.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from referee.platform.core.predictions import Predictions, References
from referee.plugins.records import ScorerInfo
from referee.scoring.metrics import _common as c

# Rows of resample weights a WeightedMetric computes per call: about 1 MiB of weights.
CHUNK_BYTES = 2**20


class Metric:
    """What every built-in declares: name, direction, accepted prediction types, parameters."""

    name: str = ""
    revision: str = "1.0"
    higher_is_better: bool = True
    accepts: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ("numpy",)
    params: c.ParamSpec = {}
    description: str = ""

    @property
    def version(self) -> str:
        return c.scorer_version(self.revision)

    def resolve(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Checked parameters with defaults filled in; ValueError names an unknown or bad one."""
        return c.resolve_params(self.name, params, self.params)

    def validate_params(self, params: Mapping[str, Any]) -> None:
        """Raise ValueError naming an unknown or bad parameter."""
        self.resolve(params)

    def settings(self, resolved: dict[str, Any], predictions: Predictions) -> dict[str, Any]:
        """The settings that apply to ``predictions`` (override to name binary vs multi-class)."""
        return resolved

    def signature(self, params: Mapping[str, Any]) -> str:
        """``name:<scorer>|param:value|...|version:<version>``."""
        return c.format_signature(self.name, self.resolve(params), self.version)

    def signature_for(self, params: Mapping[str, Any], predictions: Predictions) -> str:
        """The signature with the settings that apply to these predictions."""
        return c.format_signature(self.name, self.settings(self.resolve(params), predictions), self.version)

    def check_type(self, predictions: Predictions) -> None:
        c.require_type(self.name, predictions, self.accepts)

    def info(self) -> ScorerInfo:
        raise NotImplementedError

    def _record(self, **fields: Any) -> ScorerInfo:
        return ScorerInfo(name=self.name, version=self.version, higher_is_better=self.higher_is_better,
                          accepts=self.accepts, libraries=self.libraries, signature=self.signature,
                          signature_for=self.signature_for, validate_params=self.validate_params,
                          description=self.description, **fields)


class SummableMetric(Metric):
    """A metric whose score is a function of the column sums of per-item statistics."""

    def statistics(self, predictions: Predictions, references: References,
                   params: Mapping[str, Any]) -> np.ndarray:
        """Per-item statistics, shape (n_items, k)."""
        raise NotImplementedError

    def aggregate(self, sums: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Scores from summed statistics of shape (..., k), vectorised over leading axes."""
        raise NotImplementedError

    def info(self) -> ScorerInfo:
        return self._record(statistics=self.statistics, aggregate=self.aggregate)


class WeightedMetric(Metric):
    """A metric of weighted items that is not a function of sums (rank-based and the like).

    ``prepare`` runs once per (predictions, references, params) and is cached for the repeated calls
    a bootstrap makes with blocks of resample weights; ``compute`` takes weights None, (n,) or (b, n).
    """

    _CACHE = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._prepared: list[tuple[Any, Any, Any, Any]] = []  # (predictions, references, params, state)

    def prepare(self, predictions: Predictions, references: References, params: dict[str, Any]) -> Any:
        """Per-item data for ``compute`` (checked types, targets, sort orders)."""
        raise NotImplementedError

    def compute(self, state: Any, params: dict[str, Any], weights: np.ndarray | None) -> Any:
        """Score of the weighted items: a float for weights None or (n,), an array (b,) for (b, n)."""
        raise NotImplementedError

    def score(self, predictions: Predictions, references: References, params: Mapping[str, Any],
              weights: np.ndarray | None = None) -> Any:
        """The ``ScorerInfo.score`` of this metric (batched)."""
        p = self.resolve(params)
        state = self._state(predictions, references, p)
        w = check_weights(self.name, weights, len(predictions))
        if w is None or w.ndim == 1:
            return float(self.compute(state, p, w))
        # a few rows at a time: each row's gathers and cumulative sums then stay in cache
        step = max(1, CHUNK_BYTES // (8 * max(1, w.shape[1])))
        return np.concatenate([np.asarray(self.compute(state, p, w[i:i + step]), dtype=np.float64).reshape(-1)
                               for i in range(0, len(w), step)]) if len(w) else np.zeros(0)

    def _state(self, predictions: Predictions, references: References, p: dict[str, Any]) -> Any:
        # The same objects come back for every block of resamples; identity is the cheap, safe key.
        with self._lock:
            for preds, refs, params, state in self._prepared:
                if preds is predictions and refs is references and params == p:
                    return state
        state = self.prepare(predictions, references, p)
        with self._lock:
            self._prepared.insert(0, (predictions, references, p, state))
            del self._prepared[self._CACHE:]
        return state

    def info(self) -> ScorerInfo:
        return self._record(score=self.score, batched=True)


def check_weights(name: str, weights: Any, n: int) -> np.ndarray | None:
    """``weights`` as float64 of shape (n,) or (b, n), or None."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim not in (1, 2) or w.shape[-1] != n:
        raise ValueError(f"{name}: weights must have shape ({n},) or (resamples, {n}), got {w.shape}")
    return w


def weighted_rows(weights: np.ndarray | None, n: int) -> np.ndarray:
    """Weights as a 2-D (b, n) array (None is one row of ones)."""
    if weights is None:
        return np.ones((1, n))
    return weights if weights.ndim == 2 else weights[None, :]


def unbatch(values: np.ndarray, weights: np.ndarray | None) -> Any:
    """The (b,) results of ``weighted_rows`` back in the caller's shape."""
    return values if weights is not None and weights.ndim == 2 else values[0]
