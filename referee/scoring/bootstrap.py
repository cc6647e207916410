"""Resampling over per-item statistics, shared by confidence intervals and paired significance tests.

A scorer's per-item statistics ``X`` (n items x k columns) and its vectorised ``aggregate`` make a
resample cheap: a bootstrap resample is a row of multinomial counts ``w`` (how often each item was
drawn) and its score is ``aggregate(w @ X)``. Many systems on the same items are one matrix
``(n, systems * k)``, so every system sees the same resamples and one matmul resamples them all.

Resample weights always come from NumPy's seeded ``Generator`` exactly as sacrebleu draws them
(``rng.choice(n, size=(B, n))`` for the bootstrap, ``rng.integers(2, size=(B, n), dtype=bool)``
for approximate randomization), in blocks of rows whose concatenation equals one big draw, so the
numbers do not depend on the block size. The backend only does the matmul: ``numpy``, or ``torch``
(float64, on CUDA when present); both give the same sums up to float rounding.

A general scorer (``ScorerInfo.score``; ROC AUC, Spearman, ...) has no statistics to multiply: it
receives the same weight rows and scores the weighted items itself (``general_scores``), a block of
rows per call when it is batched, else one row per call on a few threads.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
)

from referee.platform.core.spec import validation_problems
from referee.plugins.manager import get_runtime

BACKENDS = ("numpy", "torch", "auto")
CI_METHODS = ("percentile", "basic")
KINDS = ("bootstrap", "randomization")
# Bytes of one block of resample weights (b x n float64).
BLOCK_BYTES = 32 * 2**20
# Whole weight matrices up to this size are cached: every submission of a competition has the
# same item count, so the scheduler reuses them for every metric, split and submission.
CACHE_BYTES = 32 * 2**20
# Bytes of bootstrap indices drawn at once (at least a row): they are counted while in cache.
DRAW_BYTES = 2**20
# Bytes of the blocks a batched general scorer gets: small enough that the scorer reads the weights
# back from cache right after they are drawn (same numbers for any block size).
GENERAL_BLOCK_BYTES = 2**20
# Threads that score the resamples of a general scorer that is not batched, one resample per call.
LOOP_WORKERS = min(4, os.cpu_count() or 1)

def _real_number(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError("must be a number")
    return float(v)


Number = Annotated[float, BeforeValidator(_real_number)]
S = TypeVar("S", bound=BaseModel)


def settings_from_mapping(model: type[S], raw: Mapping[str, Any] | None, where: str) -> S:
    """``raw`` validated as ``model``; ValueError ``"<where>: <field>: <problem>; ..."`` when it is not."""
    if raw is not None and not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(dict(raw or {}))
    except ValidationError as exc:
        raise ValueError(f"{where}: " + "; ".join(f"{f}: {m}" if f else m
                                                  for f, m in validation_problems(exc))) from None


class IntervalSettings(BaseModel):
    """How bootstrap confidence intervals are computed (``leaderboard.intervals`` in the YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: StrictBool = True
    resamples: StrictInt = Field(default=1000, ge=1, le=10**7)
    seed: StrictInt = Field(default=12345, ge=0, le=2**63 - 1)
    confidence: Number = Field(default=0.95, gt=0.0, lt=1.0)
    method: Literal["percentile", "basic"] = "percentile"
    backend: Literal["numpy", "torch", "auto"] = "numpy"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None,
                     where: str = "leaderboard.intervals") -> "IntervalSettings":
        """Checked settings with defaults filled in; ValueError names the bad field."""
        return settings_from_mapping(cls, raw, where)

    def signature(self) -> str:
        """What goes after the scorer's signature, e.g. ``bootstrap:1000|seed:12345|ci:95%``."""
        sig = f"bootstrap:{self.resamples}|seed:{self.seed}|ci:{self.confidence * 100:g}%"
        return sig if self.method == "percentile" else f"{sig}|ci-method:{self.method}"

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "resamples": self.resamples, "seed": self.seed,
                "confidence": self.confidence}


# ------------------------------------------------------------------------- resample weights

@dataclass(frozen=True)
class Resampler:
    """Seeded resample weights over ``n`` items, drawn in blocks of rows.

    ``kind="bootstrap"``: row b holds how often each item was drawn (multinomial counts summing to n).
    ``kind="randomization"``: row b is 1 where item i keeps its system and 0 where the pair swaps.
    """

    n: int
    resamples: int
    seed: int
    kind: str = "bootstrap"
    block_bytes: int = BLOCK_BYTES

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"resampling kind must be one of {KINDS}, not {self.kind!r}")
        if self.n < 1 or self.resamples < 1:
            raise ValueError(f"need at least one item and one resample (n={self.n}, "
                             f"resamples={self.resamples})")

    @property
    def block_rows(self) -> int:
        rows = max(1, self.block_bytes // (8 * self.n))
        if self.kind == "randomization":
            # NumPy draws booleans 32 to a word and drops the rest of the word at the end of a call;
            # blocks of whole words keep the block-wise draw equal to one big draw.
            unit = 32 // math.gcd(self.n, 32)
            rows = max(unit, rows - rows % unit)
        return min(rows, self.resamples)

    def blocks(self, reuse: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, weights)`` with weights of shape (rows, n), float64, in order.

        ``reuse``: every block is drawn into the same array, so a block is valid only until the
        next one is drawn; for callers that use each block at once, it spares the page faults of
        a fresh block (the numbers are the same).
        """
        if self.resamples * self.n * 8 <= CACHE_BYTES:
            yield 0, _cached_weights(self.n, self.resamples, self.seed, self.kind)
            return
        out = np.empty((self.block_rows, self.n), dtype=np.float64) if reuse else None
        yield from _generate(self.n, self.resamples, self.seed, self.kind, self.block_rows, out)

    def weights(self) -> np.ndarray:
        """All weights at once, shape (resamples, n) (small problems and tests)."""
        return np.concatenate([w for _, w in self.blocks()], axis=0)


def _generate(n: int, resamples: int, seed: int, kind: str, block_rows: int,
              out: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Blocks of weights, each a fresh array, or a view of ``out`` (block_rows, n) when given."""
    rng = np.random.default_rng(seed)
    # Bootstrap indices are drawn a few rows (about DRAW_BYTES) at a time and counted straight into
    # their rows of weights while they are still in cache: no (rows, n) index block is written out
    # and read back, and no second temporary is made. The bit generator keeps the spare half of a
    # 64-bit draw in its state between calls, so consecutive draws of a few rows each are exactly
    # one (resamples, n) draw (the tests check it).
    step = max(1, DRAW_BYTES // (8 * n))
    for start in range(0, resamples, block_rows):
        rows = min(block_rows, resamples - start)
        counts = np.empty((rows, n), dtype=np.float64) if out is None else out[:rows]
        if kind == "bootstrap":
            for first in range(0, rows, step):
                k = min(step, rows - first)
                idx = rng.choice(n, size=(k, n), replace=True)
                if k > 1:  # row r's items are r * n + i in the flattened rows
                    idx += (np.arange(k, dtype=np.int64) * n)[:, None]
                part = counts[first:first + k].reshape(-1)
                part.fill(0.0)  # just before counting: the rows are then in cache
                np.add.at(part, idx.reshape(-1), 1.0)
        else:
            counts[...] = rng.integers(2, size=(rows, n), dtype=bool)
        yield start, counts


def _cached_weights(n: int, resamples: int, seed: int, kind: str) -> np.ndarray:
    """Whole weight matrices, kept by the runtime (read-only: every caller shares them)."""
    def generate() -> np.ndarray:
        w = np.concatenate([b for _, b in _generate(n, resamples, seed, kind, resamples)], axis=0)
        w.setflags(write=False)
        return w
    return get_runtime().cache("bootstrap.weights").get_or_compute((n, resamples, seed, kind), generate)


# ------------------------------------------------------------------------- backends

def resolve_backend(name: str) -> str:
    """``auto`` is torch when torch is installed and sees a CUDA device, else numpy."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {name!r}")
    if name != "auto":
        return name
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return "numpy"
    import torch
    return "torch" if torch.cuda.is_available() else "numpy"


class _Matmul:
    """``weights @ X`` for a fixed X on one backend."""

    def __init__(self, x: np.ndarray, backend: str):
        self.backend = resolve_backend(backend)
        self.x = np.ascontiguousarray(x, dtype=np.float64)
        if self.backend == "torch":
            try:
                import torch
            except ImportError as exc:
                raise ValueError("backend 'torch' needs PyTorch; install it or use backend 'numpy'") from exc
            self._torch = torch
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            self.x_t = torch.from_numpy(self.x).to(self.device)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        if self.backend == "numpy":
            return weights @ self.x
        w = self._torch.tensor(weights, dtype=self._torch.float64, device=self.device)
        return (w @ self.x_t).cpu().numpy()


def resampled_sums(x: np.ndarray, resampler: Resampler, backend: str = "numpy") -> np.ndarray:
    """``weights @ x`` for every resample: shape (resamples, m) for ``x`` of shape (n, m)."""
    if x.ndim != 2 or x.shape[0] != resampler.n:
        raise ValueError(f"statistics of shape {x.shape} do not match {resampler.n} items")
    matmul = _Matmul(x, backend)
    out = np.empty((resampler.resamples, x.shape[1]), dtype=np.float64)
    for start, w in resampler.blocks():
        out[start:start + len(w)] = matmul(w)
    return out


# ------------------------------------------------------------------------- intervals

Aggregate = Callable[[np.ndarray, Mapping[str, Any]], Any]


def bootstrap_scores(aggregate: Aggregate, stats: np.ndarray, params: Mapping[str, Any], *,
                     resamples: int = 1000, seed: int = 12345, backend: str = "numpy") -> np.ndarray:
    """The score of each bootstrap resample of ``stats`` (n, k): shape (resamples,)."""
    stats = np.asarray(stats, dtype=np.float64)
    sums = resampled_sums(stats, Resampler(len(stats), resamples, seed), backend)
    return np.asarray(aggregate(sums, params), dtype=np.float64).reshape(resamples)


def interval_from_samples(samples: np.ndarray, observed: float, confidence: float = 0.95,
                          method: str = "percentile") -> tuple[float, float] | None:
    """Two-sided interval from resampled scores; None when no resample has a finite score.

    ``percentile``: the (1-c)/2 and (1+c)/2 quantiles of the resampled scores.
    ``basic``: those quantiles reflected around the observed score (2*observed - q).
    """
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0
    lo, hi = (float(q) for q in np.quantile(samples, [tail, 1.0 - tail]))
    if method == "basic":
        lo, hi = 2.0 * observed - hi, 2.0 * observed - lo
    elif method != "percentile":
        raise ValueError(f"interval method must be one of {CI_METHODS}, not {method!r}")
    return lo, hi


def confidence_interval(scorer: Any, stats: np.ndarray, params: Mapping[str, Any],
                        settings: IntervalSettings) -> tuple[float, float, str] | None:
    """Bootstrap interval of ``scorer`` on ``stats`` (n, k): ``(low, high, signature_extra)``.

    None when there are no items or no resample has a finite score.
    """
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or len(stats) == 0:
        return None
    samples = bootstrap_scores(scorer.aggregate, stats, params, resamples=settings.resamples,
                               seed=settings.seed, backend=settings.backend)
    observed = float(np.asarray(scorer.aggregate(stats.sum(axis=0), params)))
    ci = interval_from_samples(samples, observed, settings.confidence, settings.method)
    if ci is None:
        return None
    return ci[0], ci[1], settings.signature()


def confidence_intervals(items: list[tuple[Any, np.ndarray, Mapping[str, Any]]],
                         settings: IntervalSettings) -> list[tuple[float, float, str] | None]:
    """``confidence_interval`` for several (scorer, stats, params) over the same items, drawing the
    resamples once: the statistics are stacked side by side and resampled in one pass."""
    if not items:
        return []
    blocks = [np.asarray(stats, dtype=np.float64) for _, stats, _ in items]
    n = len(blocks[0])
    if n == 0 or any(b.ndim != 2 or len(b) != n for b in blocks):
        return [confidence_interval(s, st, p, settings) for s, st, p in items]
    sums = resampled_sums(np.hstack(blocks), Resampler(n, settings.resamples, settings.seed), settings.backend)
    out: list[tuple[float, float, str] | None] = []
    col = 0
    for (scorer, _, params), stats in zip(items, blocks):
        k = stats.shape[1]
        samples = np.asarray(scorer.aggregate(sums[:, col:col + k], params), dtype=np.float64)
        col += k
        observed = float(np.asarray(scorer.aggregate(stats.sum(axis=0), params)))
        ci = interval_from_samples(samples.reshape(settings.resamples), observed, settings.confidence,
                                   settings.method)
        out.append(None if ci is None else (ci[0], ci[1], settings.signature()))
    return out


# ------------------------------------------------------------------------- general scorers
# A general scorer (``ScorerInfo.score``) gets the resample weights themselves: the same seeded
# multinomial counts the summable path multiplies with its statistics.

# What a resample on which the metric is undefined may raise; it counts as nan (left out).
UNDEFINED_ERRORS = (ValueError, ZeroDivisionError, FloatingPointError)


def general_scores(scorer: Any, predictions: Any, references: Any, params: Mapping[str, Any],
                   resampler: Resampler, *, workers: int | None = None) -> np.ndarray:
    """The score of every resample of a general scorer: shape (resamples,).

    A batched scorer gets each block of weights (rows, n; about ``GENERAL_BLOCK_BYTES``) in one call;
    any other is called once per resample, on ``workers`` threads. A resample that raises
    ``UNDEFINED_ERRORS`` scores nan; when every resample raises, the first error is raised (a broken
    scorer, not an undefined resample).
    """
    if len(predictions) != resampler.n:
        raise ValueError(f"{len(predictions)} predictions do not match {resampler.n} resampled items")
    out = np.empty(resampler.resamples, dtype=np.float64)
    errors: list[BaseException] = []
    if scorer.batched:
        resampler = dataclasses.replace(resampler, block_bytes=min(resampler.block_bytes, GENERAL_BLOCK_BYTES))
    for start, w in resampler.blocks(reuse=True):  # each block is scored before the next is drawn
        out[start:start + len(w)] = _score_block(scorer, predictions, references, params, w, workers, errors)
    if errors and len(errors) == resampler.resamples:
        raise errors[0]
    return out


def _score_block(scorer: Any, predictions: Any, references: Any, params: Mapping[str, Any], w: np.ndarray,
                 workers: int | None, errors: list[BaseException]) -> np.ndarray:
    if scorer.batched:
        try:
            got = np.asarray(scorer.score(predictions, references, params, w), dtype=np.float64)
        except UNDEFINED_ERRORS:
            pass  # one undefined resample spoils the block: score its resamples one by one
        else:
            if got.shape != (len(w),):
                raise ValueError(f"scorer {scorer.name} is batched but returned shape {got.shape} for "
                                 f"weights of shape {w.shape}; expected ({len(w)},)")
            return got

    def one(row: np.ndarray) -> float:
        try:
            return float(scorer.score(predictions, references, params, row))
        except UNDEFINED_ERRORS as exc:
            errors.append(exc)
            return math.nan

    workers = LOOP_WORKERS if workers is None else workers
    if workers > 1 and len(w) > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="referee-resample") as pool:
            return np.fromiter(pool.map(one, w), dtype=np.float64, count=len(w))
    return np.fromiter((one(row) for row in w), dtype=np.float64, count=len(w))


def general_interval(scorer: Any, predictions: Any, references: Any, params: Mapping[str, Any],
                     settings: IntervalSettings, observed: float | None = None,
                     workers: int | None = None) -> tuple[float, float, str] | None:
    """Bootstrap interval of a general scorer on these items: ``(low, high, signature_extra)``.

    The resamples are those of ``confidence_interval`` for the same number of items and settings.
    None when there are no items or no resample has a finite score.
    """
    n = len(predictions)
    if n == 0:
        return None
    if observed is None:
        observed = float(scorer.score(predictions, references, params, None))
    samples = general_scores(scorer, predictions, references, params,
                             Resampler(n, settings.resamples, settings.seed), workers=workers)
    ci = interval_from_samples(samples, observed, settings.confidence, settings.method)
    return None if ci is None else (ci[0], ci[1], settings.signature())


__all__ = ["BACKENDS", "IntervalSettings", "Resampler", "bootstrap_scores", "confidence_interval",
           "confidence_intervals", "general_interval", "general_scores", "interval_from_samples",
           "resampled_sums", "resolve_backend"]
