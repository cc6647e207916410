"""Scoring engine: validated predictions + references -> scores with intervals and provenance.

Summable scorers: statistics are computed once over all items; each split's score is the scorer's
aggregate of that split's column sums, and the per-item statistics are kept as a blob (``.npy``).
General scorers: each split's items are scored by ``score``, and the aligned predictions are kept
as a blob (``Predictions.to_bytes``) instead. Either blob lets tiers (paired tests) be computed
later without re-reading prediction files; ``referee verify`` re-scores the stored prediction file.

Anything a scorer raises is a ``ScorerFailed``: the controller reports it as a scorer error (the
host's to fix), never as the submission's fault.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import io
import json
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from referee import __version__
from referee.platform.core.errors import RefereeError
from referee.platform.core.predictions import Predictions, References
from referee.platform.core.spec import Competition, MetricSpec
from referee.plugins.manager import config_section, get_plugin_manager
from referee.plugins.records import ScorerInfo
from referee.scoring.bootstrap import IntervalSettings
from referee.scoring.reference import ReferenceData, reference_values
from referee.scoring.significance import LeaderboardSettings

# The event that keeps a failing scorer's traceback for the host, and what the team is told.
SCORER_ERROR_EVENT = "scorer_error"
SCORER_ERROR_MESSAGE = "scoring failed, the host has been told"


class ScorerFailed(RefereeError):
    """A scorer raised while scoring: a bug or a setting for the host to fix, not the submission's fault.

    ``traceback`` holds the scorer's traceback (for the host's eyes; it may quote reference data)."""

    def __init__(self, scorer: str, metric: str, exc: BaseException):
        self.scorer = scorer
        self.metric = metric
        self.error = f"{type(exc).__name__}: {exc}"
        self.traceback = "".join(traceback.format_exception(exc))
        super().__init__(f"scorer {scorer!r} (metric {metric!r}) failed: {self.error}")


@contextmanager
def scorer_call(scorer: ScorerInfo, metric: str) -> Iterator[None]:
    """Turn anything a scorer raises into ``ScorerFailed``."""
    try:
        yield
    except ScorerFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - a third-party scorer may raise anything
        raise ScorerFailed(scorer.name, metric, exc) from exc


@dataclass
class MetricResult:
    metric: str
    split: str
    value: float
    n_items: int
    stats_sha256: str | None
    provenance: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    ci_low: float | None = None
    ci_high: float | None = None


@functools.lru_cache(maxsize=64)
def _library_versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for n in ("numpy", *names):
        try:
            out.append((n, md.version(n)))
        except md.PackageNotFoundError:
            out.append((n, "not installed"))
    return tuple(out)


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    return dict(_library_versions(tuple(names)))


def check_metric_params(comp: Competition) -> list[tuple[str, str]]:
    """Problems with the metrics' scorers and parameters, as (field, message) pairs."""
    pm = get_plugin_manager()
    problems = []
    scorers = pm.scorers()
    for i, m in enumerate(comp.metrics):
        s = scorers.get(m.scorer)
        if s is None:
            problems.append((f"metrics[{i}].scorer", f"no scorer named {m.scorer!r}; installed: {sorted(scorers)}"))
            continue
        if comp.prediction.type not in s.accepts:
            problems.append((f"metrics[{i}].scorer", f"{m.scorer} scores {list(s.accepts)} predictions, but "
                                                      f"prediction.type is {comp.prediction.type!r}"))
        if s.validate_params is not None:
            try:
                s.validate_params(comp.metric_params(m))
            except (ValueError, TypeError, KeyError) as exc:
                problems.append((f"metrics[{i}].params", str(exc)))
    return problems


# -- confidence intervals (bootstrap over per-item statistics; see referee.scoring.bootstrap) ------

def interval_settings(comp: Competition) -> IntervalSettings | None:
    """The competition's ``leaderboard.intervals`` settings, or None when intervals are switched off."""
    settings = config_section(comp, "leaderboard", LeaderboardSettings).intervals
    return settings if settings.enabled else None


def add_intervals(computed: list[tuple[ScorerInfo, dict, np.ndarray, dict[str, MetricResult]]], split: str,
                  mask: np.ndarray, settings: IntervalSettings) -> None:
    """Fill ``ci_low/ci_high`` of every summable metric's result on ``split`` from one bootstrap of their
    stacked statistics, and record how in each provenance."""
    from referee.scoring.bootstrap import confidence_intervals

    cis = confidence_intervals([(scorer, stats[mask], params) for scorer, params, stats, _ in computed], settings)
    for (_, _, _, per_split), ci in zip(computed, cis):
        _record_interval(per_split[split], ci, settings)


def _record_interval(result: MetricResult, ci: tuple[float, float, str] | None, settings: Any) -> None:
    if ci is None:
        return
    result.ci_low, result.ci_high, extra = ci
    prov = result.provenance
    prov["signature"] = f"{prov['signature']}|{extra}"
    prov["interval"] = settings.record()


def compute_statistics(scorer: ScorerInfo, preds: Predictions, refs: Any, params: dict) -> np.ndarray:
    assert scorer.statistics is not None
    stats = np.asarray(scorer.statistics(preds, refs, params), dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] != len(preds):
        raise ValueError(f"scorer {scorer.name} returned statistics of shape {stats.shape}, "
                         f"expected ({len(preds)}, k)")
    return stats


def aggregate(scorer: ScorerInfo, stats: np.ndarray, mask: np.ndarray, params: dict) -> float:
    assert scorer.aggregate is not None
    return float(np.asarray(scorer.aggregate(stats[mask].sum(axis=0), params)))


def split_items(preds: Predictions, refs: References, mask: np.ndarray) -> tuple[Predictions, list[Any]]:
    """The predictions and references of the items in ``mask``, in reference order."""
    idx = np.flatnonzero(mask)
    return preds.take(idx), [refs[i] for i in idx.tolist()]


def split_references(comp: Competition, split: str) -> list[Any]:
    """The competition's references of the items in ``split``, in reference order."""
    from referee.scoring.reference import load_reference

    ref = load_reference(comp)
    values = reference_values(ref, comp)
    return [values[i] for i in np.flatnonzero(ref.mask(split)).tolist()]


def score_predictions(comp: Competition, preds: Predictions, ref: ReferenceData, *,
                      submission_sha256: str | None = None, predictions_sha256: str | None = None,
                      put_blob: Callable[[bytes], str] | None = None,
                      intervals_enabled: bool = True) -> list[MetricResult]:
    """Score every metric on every split. Pure apart from ``put_blob`` (stores per-item data).

    Raises ``ScorerFailed`` when a scorer raises."""
    pm = get_plugin_manager()
    refs = reference_values(ref, comp)
    results: list[MetricResult] = []
    intervals = interval_settings(comp) if intervals_enabled else None
    computed = []  # summable metrics: (scorer, params, stats, result per split)
    general = []  # general metrics: (scorer, params, key, result per split)
    blobs: dict[str, str | None] = {}  # the predictions blob, stored once for every general metric
    items: dict[str, tuple[Predictions, list[Any]]] = {}  # each split's items, shared by general metrics
    for m in comp.metrics:
        scorer = pm.scorer(m.scorer)
        params = comp.metric_params(m)
        with scorer_call(scorer, m.key):
            if scorer.general:
                stats = None
                if "predictions" not in blobs:
                    blobs["predictions"] = put_blob(preds.to_bytes()) if put_blob is not None else None
                stats_sha = blobs["predictions"]
            else:
                stats = compute_statistics(scorer, preds, refs, params)
                stats_sha = _put_array(put_blob, stats) if put_blob is not None else None
            details = scorer.details(preds, refs, params) if scorer.details else {}
            signature = _signature(scorer, params, preds)
        per_split = {}
        for split in ref.splits():
            mask = ref.mask(split)
            with scorer_call(scorer, m.key):
                if stats is not None:
                    value = aggregate(scorer, stats, mask, params)
                else:
                    assert scorer.score is not None
                    if split not in items:
                        items[split] = split_items(preds, refs, mask)
                    value = float(scorer.score(*items[split], params, None))
            prov = provenance(scorer, m, comp, ref, submission_sha256, split, int(mask.sum()), signature)
            prov["predictions_sha256"] = predictions_sha256 or submission_sha256
            per_split[split] = res = MetricResult(metric=m.key, split=split, value=value, n_items=int(mask.sum()),
                                                  stats_sha256=stats_sha, provenance=prov,
                                                  details=_split_details(details, split))
            results.append(res)
        if stats is not None:
            computed.append((scorer, params, stats, per_split))
        else:
            general.append((scorer, params, m.key, per_split))
    if intervals is not None:
        for split in ref.splits():  # one set of resamples per split, shared by every metric
            add_intervals(computed, split, ref.mask(split), intervals)
            if general:
                add_general_intervals(general, *items[split], split, intervals)
    return results


def add_general_intervals(general: list[tuple[ScorerInfo, dict, str, dict[str, MetricResult]]],
                          preds: Predictions, refs: References, split: str, settings: Any) -> None:
    """Intervals of the general metrics on the items of ``split`` (``preds``, ``refs``), on the same
    resamples as ``add_intervals``."""
    from referee.scoring.bootstrap import general_interval

    for scorer, params, key, per_split in general:
        result = per_split[split]
        with scorer_call(scorer, key):
            ci = general_interval(scorer, preds, refs, params, settings, observed=result.value)
        _record_interval(result, ci, settings)


def _put_array(put_blob: Callable[[bytes], str], stats: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, stats, allow_pickle=False)
    return put_blob(buf.getvalue())


def _signature(scorer: ScorerInfo, params: dict, preds: Predictions) -> str:
    if scorer.signature_for is not None:
        return scorer.signature_for(params, preds)
    return metric_signature(scorer, params)


def _split_details(details: dict, split: str) -> dict:
    # A scorer may return {"by_split": {"public": {...}}, ...}; keep what applies to this split.
    if not details:
        return {}
    out = {k: v for k, v in details.items() if k != "by_split"}
    out.update(details.get("by_split", {}).get(split, {}))
    return out


def provenance(scorer: ScorerInfo, m: MetricSpec, comp: Competition, ref: ReferenceData,
               submission_sha256: str | None, split: str, n_items: int, sig: str) -> dict[str, Any]:
    return {
        "scorer": scorer.name,
        "scorer_version": scorer.version,
        "referee_version": __version__,
        "libraries": library_versions(scorer.libraries),
        "params": comp.metric_params(m),
        "signature": sig,
        "reference_sha256": ref.sha256,
        "submission_sha256": submission_sha256,
        "split": split,
        "split_rule": comp.effective_split.model_dump(),
        "n_items": n_items,
    }


def metric_signature(scorer: ScorerInfo, params: dict) -> str:
    """A metric's signature before any predictions are seen (a scorer whose signature depends on the
    predictions, e.g. on their tokenisation, may add to it when it scores)."""
    return scorer.signature(params) if scorer.signature else _default_signature(scorer, params)


def _default_signature(scorer: ScorerInfo, params: dict) -> str:
    parts = [scorer.name] + [f"{k}:{json.dumps(v, sort_keys=True)}" for k, v in sorted(params.items())]
    parts.append(f"version:{scorer.version}")
    return "|".join(parts)


def load_stats(store: Any, sha: str) -> Any:
    """A stored per-item blob: statistics (an (n, k) array) of a summable scorer, or the
    ``Predictions`` a general scorer was given."""
    path = store.blob_path(sha)
    with open(path, "rb") as fh:
        head = fh.read(2)
    if Predictions.is_serialised(head):
        return Predictions.from_bytes(path.read_bytes())
    return np.load(path, allow_pickle=False)
