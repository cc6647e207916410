"""BLEU, chrF(++) and TER through sacrebleu 2.x.

Per-segment statistics come from sacrebleu's own ``_extract_corpus_statistics``; the aggregates
re-implement its ``_compute_score_from_stats`` in numpy, vectorised over leading axes, so a batch of
bootstrap resamples is one call. References are one string per item or a list of strings per item
(several references; the count may vary per item).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from referee.platform.core.predictions import Predictions, References
from referee.plugins.records import ScorerInfo
from referee.scoring.metrics import _common as c
from referee.scoring.metrics.base import SummableMetric

REVISION = "1.0"
ACCEPTS = ("text",)
LIBRARIES = ("sacrebleu",)

# sacrebleu's my_log(0): a floor instead of -inf
_LOG_ZERO = -9999999999.0
_SMOOTH_DEFAULTS: dict[str, float | None] = {"none": None, "floor": 0.1, "add-k": 1, "exp": None}
_TOKENIZERS = ("none", "zh", "13a", "intl", "char", "ja-mecab", "ko-mecab", "spm", "flores101",
               "flores200", "spBLEU-1K")

BLEU_PARAMS: c.ParamSpec = {
    "tokenize": ("13a", c.choice(_TOKENIZERS)),
    "lowercase": (False, c.boolean),
    "smooth_method": ("exp", c.choice(tuple(_SMOOTH_DEFAULTS))),
    "smooth_value": (None, c.number(0.0, float("inf"), optional=True)),
    "max_ngram_order": (4, c.integer(1, 10)),
    "effective_order": (False, c.boolean),
}
CHRF_PARAMS: c.ParamSpec = {
    "char_order": (6, c.integer(0, 20)),
    "word_order": (0, c.integer(0, 10)),
    "beta": (2, c.number(0.0, float("inf"), open_lo=True)),
    "lowercase": (False, c.boolean),
    "whitespace": (False, c.boolean),
    "eps_smoothing": (False, c.boolean),
}
TER_PARAMS: c.ParamSpec = {
    "normalized": (False, c.boolean),
    "no_punct": (False, c.boolean),
    "asian_support": (False, c.boolean),
    "case_sensitive": (False, c.boolean),
}


# ---------------------------------------------------------------- aggregates (pure numpy)

def bleu_from_sums(s: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    """sacrebleu's ``BLEU.compute_bleu`` over summed ``[sys_len, ref_len, correct_1..N, total_1..N]``."""
    order = p["max_ngram_order"]
    method = p["smooth_method"]
    value: float = p["smooth_value"] if p["smooth_value"] is not None else (_SMOOTH_DEFAULTS[method] or 0.0)
    shape = s.shape[:-1]
    sys_len, ref_len = s[..., 0], s[..., 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bp = np.where(sys_len < ref_len,
                      np.where(sys_len > 0, np.exp(1 - ref_len / sys_len), 0.0), 1.0)
        active = np.ones(shape, dtype=bool)  # sacrebleu stops at the first order with no n-grams
        mteval = np.ones(shape)
        eff_order = np.full(shape, float(order))
        logs = []
        for n in range(order):
            correct, total = s[..., 2 + n], s[..., 2 + order + n]
            if method == "add-k" and n > 0:
                correct, total = correct + value, total + value
            active = active & (total != 0)
            if p["effective_order"]:
                eff_order = np.where(active, n + 1.0, eff_order)
            zero = active & (correct == 0)
            prec = np.where(active & (correct != 0), 100.0 * correct / total, 0.0)
            if method == "exp":
                mteval = np.where(zero, mteval * 2, mteval)
                prec = np.where(zero, 100.0 / (mteval * total), prec)
            elif method == "floor":
                prec = np.where(zero, 100.0 * value / total, prec)
            logs.append(np.where(prec == 0.0, _LOG_ZERO, np.log(np.where(prec == 0.0, 1.0, prec))))
        log_sum = np.zeros(shape)
        for n, log_p in enumerate(logs):  # left to right, like sacrebleu's sum()
            log_sum = log_sum + np.where(n < eff_order, log_p, 0.0)
        score = bp * np.exp(log_sum / eff_order)
    any_match = (s[..., 2:2 + order] != 0).any(axis=-1)
    return np.where(any_match, score, 0.0)


def chrf_from_sums(s: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    """sacrebleu's ``CHRF._compute_f_score`` over summed ``[hyp, ref, match]`` triples per order."""
    eps = 1e-16
    factor = p["beta"] ** 2
    order = p["char_order"] + p["word_order"]
    shape = s.shape[:-1]
    score = np.zeros(shape)
    avg_prec = np.zeros(shape)
    avg_rec = np.zeros(shape)
    effective = np.zeros(shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(order):
            n_hyp, n_ref, n_match = s[..., 3 * i], s[..., 3 * i + 1], s[..., 3 * i + 2]
            prec = np.where(n_hyp > 0, n_match / n_hyp, eps)
            rec = np.where(n_ref > 0, n_match / n_ref, eps)
            denom = factor * prec + rec
            score = score + np.where(denom > 0, (1 + factor) * prec * rec / denom, eps)
            both = (n_hyp > 0) & (n_ref > 0)
            avg_prec = avg_prec + np.where(both, prec, 0.0)
            avg_rec = avg_rec + np.where(both, rec, 0.0)
            effective = effective + both
        if p["eps_smoothing"]:
            return 100 * score / order
        avg_prec = np.where(effective > 0, avg_prec / effective, 0.0)
        avg_rec = np.where(effective > 0, avg_rec / effective, 0.0)
        f = (1 + factor) * avg_prec * avg_rec
        f = f / ((factor * avg_prec) + avg_rec)
        return np.where(avg_prec + avg_rec != 0, 100 * f, 0.0)


def ter_from_sums(s: np.ndarray, p: Mapping[str, Any] | None = None) -> np.ndarray:
    """sacrebleu's ``TER._compute_score_from_stats`` over summed ``[edits, avg_ref_len]``."""
    edits, ref_len = s[..., 0], s[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(ref_len > 0, edits / ref_len, np.where(edits > 0, 1.0, 0.0))
    return 100 * rate


# ---------------------------------------------------------------- scorers

class SacreMetric(SummableMetric):
    """One sacrebleu metric: sacrebleu's segment statistics, a numpy aggregate, sacrebleu's signature."""

    accepts = ACCEPTS
    libraries = LIBRARIES
    revision = REVISION

    def __init__(self, name: str, spec: c.ParamSpec, from_sums: Any, higher_is_better: bool, description: str):
        self.name = name
        self.params = spec
        self.from_sums = from_sums
        self.higher_is_better = higher_is_better
        self.description = description

    def resolve(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        p = c.resolve_params(self.name, params, self.params)
        if self.name == "chrf" and p["char_order"] + p["word_order"] == 0:
            raise ValueError("chrf: char_order + word_order must be at least 1")
        return p

    def validate_params(self, params: Mapping[str, Any]) -> None:
        self.metric(self.resolve(params))

    def width(self, p: Mapping[str, Any]) -> int:
        if self.name == "bleu":
            return 2 + 2 * p["max_ngram_order"]
        if self.name == "chrf":
            return 3 * (p["char_order"] + p["word_order"])
        return 2

    def metric(self, p: Mapping[str, Any]) -> Any:
        """A configured sacrebleu metric object."""
        from sacrebleu.metrics import BLEU, CHRF, TER

        if self.name == "bleu":
            try:
                return BLEU(**p)
            except (ImportError, OSError, RuntimeError) as exc:  # mecab / spm extras
                reason = " ".join(str(exc).split())
                raise ValueError(f"bleu: tokenize {p['tokenize']!r} is not usable here: {reason}") from exc
        if self.name == "chrf":
            return CHRF(**p)
        return TER(**p)

    def statistics(self, predictions: Predictions, references: References,
                   params: Mapping[str, Any]) -> np.ndarray:
        """Per-segment sacrebleu statistics, shape (n, k)."""
        p = self.resolve(params)
        self.check_type(predictions)
        hyps = list(predictions.values)
        streams = reference_streams(c.reference_lists(self.name, references, len(hyps)))
        if not hyps:
            return np.zeros((0, self.width(p)))
        stats = self.metric(p)._extract_corpus_statistics(hyps, streams)
        return np.asarray(stats, dtype=np.float64).reshape(len(hyps), self.width(p))

    def aggregate(self, sums: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Score(s) from summed statistics of shape (..., k); vectorised over leading axes."""
        p = self.resolve(params)
        return self.from_sums(c.as_sums(sums, self.width(p), self.name), p)[()]

    def signature(self, params: Mapping[str, Any], num_refs: int | None = None) -> str:
        """sacrebleu's own signature (``nrefs`` only when the references are known)."""
        metric = self.metric(self.resolve(params))
        metric.num_refs = num_refs
        return metric.get_signature().format()

    def signature_for(self, params: Mapping[str, Any], predictions: Predictions) -> str:
        return self.signature(params)

    def details(self, predictions: Predictions, references: References, params: Mapping[str, Any]) -> dict:
        """The full sacrebleu signature, with the number of references per segment."""
        counts = {len(r) for r in c.reference_lists(self.name, references, len(references))}
        num_refs = counts.pop() if len(counts) == 1 else -1
        return {"nrefs": "var" if num_refs == -1 else num_refs,
                "sacrebleu_signature": self.signature(params, num_refs)}

    def info(self) -> ScorerInfo:
        return self._record(statistics=self.statistics, aggregate=self.aggregate, details=self.details)


def reference_streams(refs: list[list[str]]) -> list[list[str | None]]:
    """Per-item reference lists to sacrebleu's reference streams, padded with None."""
    width = max((len(r) for r in refs), default=1)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(width)]


bleu = SacreMetric("bleu", BLEU_PARAMS, bleu_from_sums, True, "corpus BLEU (sacrebleu)")
chrf = SacreMetric("chrf", CHRF_PARAMS, chrf_from_sums, True, "chrF / chrF++ (sacrebleu)")
ter = SacreMetric("ter", TER_PARAMS, ter_from_sums, False, "translation edit rate (sacrebleu)")
