"""Scoring engine: validated predictions + references -> per-item statistics -> scores with provenance.

Statistics are computed once over all items; each split's score is the scorer's aggregate of that
split's column sums. Per-item statistics are kept as a blob so intervals, significance tests and
re-scoring reuse them.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from referee import __version__
from referee.platform.core.predictions import Predictions
from referee.platform.core.spec import Competition, MetricSpec
from referee.plugins.manager import config_section, get_plugin_manager
from referee.plugins.records import ScorerInfo
from referee.scoring.bootstrap import IntervalSettings
from referee.scoring.reference import ReferenceData, reference_values
from referee.scoring.significance import LeaderboardSettings


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
    """Fill ``ci_low/ci_high`` of every metric's result on ``split`` from one bootstrap of their stacked
    statistics, and record how in each provenance."""
    from referee.scoring.bootstrap import confidence_intervals

    cis = confidence_intervals([(scorer, stats[mask], params) for scorer, params, stats, _ in computed], settings)
    for (_, _, _, per_split), ci in zip(computed, cis):
        if ci is None:
            continue
        result = per_split[split]
        result.ci_low, result.ci_high, extra = ci
        prov = result.provenance
        prov["signature"] = f"{prov['signature']}|{extra}"
        prov["interval"] = settings.record()


def compute_statistics(scorer: ScorerInfo, preds: Predictions, refs: Any, params: dict) -> np.ndarray:
    stats = np.asarray(scorer.statistics(preds, refs, params), dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] != len(preds):
        raise ValueError(f"scorer {scorer.name} returned statistics of shape {stats.shape}, "
                         f"expected ({len(preds)}, k)")
    return stats


def aggregate(scorer: ScorerInfo, stats: np.ndarray, mask: np.ndarray, params: dict) -> float:
    return float(np.asarray(scorer.aggregate(stats[mask].sum(axis=0), params)))


def score_predictions(comp: Competition, preds: Predictions, ref: ReferenceData, *,
                      submission_sha256: str | None = None, predictions_sha256: str | None = None,
                      put_blob: Callable[[bytes], str] | None = None,
                      intervals_enabled: bool = True) -> list[MetricResult]:
    """Score every metric on every split. Pure apart from ``put_blob`` (stores per-item statistics)."""
    pm = get_plugin_manager()
    refs = reference_values(ref, comp)
    results: list[MetricResult] = []
    intervals = interval_settings(comp) if intervals_enabled else None
    computed = []  # (scorer, params, stats, result per split)
    for m in comp.metrics:
        scorer = pm.scorer(m.scorer)
        params = comp.metric_params(m)
        stats = compute_statistics(scorer, preds, refs, params)
        stats_sha = None
        if put_blob is not None:
            buf = io.BytesIO()
            np.save(buf, stats, allow_pickle=False)
            stats_sha = put_blob(buf.getvalue())
        details = scorer.details(preds, refs, params) if scorer.details else {}
        per_split = {}
        for split in ref.splits():
            mask = ref.mask(split)
            value = aggregate(scorer, stats, mask, params)
            prov = provenance(scorer, m, comp, ref, submission_sha256, split, int(mask.sum()))
            prov["predictions_sha256"] = predictions_sha256 or submission_sha256
            per_split[split] = res = MetricResult(metric=m.key, split=split, value=value, n_items=int(mask.sum()),
                                                  stats_sha256=stats_sha, provenance=prov,
                                                  details=_split_details(details, split))
            results.append(res)
        computed.append((scorer, params, stats, per_split))
    if intervals is not None:
        for split in ref.splits():  # one set of resamples per split, shared by every metric
            add_intervals(computed, split, ref.mask(split), intervals)
    return results


def _split_details(details: dict, split: str) -> dict:
    # A scorer may return {"by_split": {"public": {...}}, ...}; keep what applies to this split.
    if not details:
        return {}
    out = {k: v for k, v in details.items() if k != "by_split"}
    out.update(details.get("by_split", {}).get(split, {}))
    return out


def provenance(scorer: ScorerInfo, m: MetricSpec, comp: Competition, ref: ReferenceData,
               submission_sha256: str | None, split: str, n_items: int) -> dict[str, Any]:
    params = comp.metric_params(m)
    sig = scorer.signature(params) if scorer.signature else _default_signature(scorer, params)
    return {
        "scorer": scorer.name,
        "scorer_version": scorer.version,
        "referee_version": __version__,
        "libraries": library_versions(scorer.libraries),
        "params": params,
        "signature": sig,
        "reference_sha256": ref.sha256,
        "submission_sha256": submission_sha256,
        "split": split,
        "split_rule": comp.effective_split.model_dump(),
        "n_items": n_items,
    }


def _default_signature(scorer: ScorerInfo, params: dict) -> str:
    parts = [scorer.name] + [f"{k}:{json.dumps(v, sort_keys=True)}" for k, v in sorted(params.items())]
    parts.append(f"version:{scorer.version}")
    return "|".join(parts)


def load_stats(store: Any, sha: str) -> np.ndarray:
    return np.load(store.blob_path(sha), allow_pickle=False)
