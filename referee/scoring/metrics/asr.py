"""Word and character error rate (WER, CER) through jiwer 4.

All items go through ONE ``jiwer.process_words`` / ``process_characters`` call; per-item statistics
``[S + D + I, H + S + D]`` (edits, reference length) come from its alignments. The score is their
ratio, which is exactly what jiwer computes for the whole corpus.

Empty references are allowed, as in jiwer 4: such an item adds its insertions to the edits and
nothing to the reference length. When the summed reference length is 0 the score is the number of
edits (jiwer's convention for an all-silent reference).

``transform`` is ``"default"`` (jiwer's ``wer_default`` / ``cer_default``), ``"normalize"``
(lowercase, remove punctuation, strip, remove multiple spaces), or a list of names from
``TRANSFORMS``; the reduction to words or characters is always added last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from referee.platform.core.predictions import Predictions, References
from referee.scoring.metrics import _common as c
from referee.scoring.metrics.base import SummableMetric

REVISION = "1.0"
ACCEPTS = ("text",)
LIBRARIES = ("jiwer", "rapidfuzz")

# name -> jiwer transform class. ``remove_empty_strings`` is a no-op here: jiwer would drop whole
# utterances from the list (misaligning references and hypotheses), and the final reduction to
# words already drops empty words.
TRANSFORMS = {
    "lowercase": "ToLowerCase",
    "remove_punctuation": "RemovePunctuation",
    "remove_multiple_spaces": "RemoveMultipleSpaces",
    "strip": "Strip",
    "expand_common_english_contractions": "ExpandCommonEnglishContractions",
    "remove_empty_strings": None,
}
NORMALIZE = ("lowercase", "remove_punctuation", "strip", "remove_multiple_spaces")


def _check_transform(value: Any) -> str | None:
    if isinstance(value, str):
        return None if value in ("default", "normalize") else (
            "must be 'default', 'normalize' or a list of transform names")
    if isinstance(value, (list, tuple)):
        bad = [v for v in value if not isinstance(v, str) or v not in TRANSFORMS]
        if bad:
            return (f"has unknown transform name(s) {bad}; allowed names: {', '.join(TRANSFORMS)}")
        return None
    return "must be 'default', 'normalize' or a list of transform names"


PARAMS: c.ParamSpec = {"transform": ("default", _check_transform)}


def build_transform(transform: str | Sequence[str], unit: str) -> Any:
    """The jiwer transform for ``transform`` ending in a reduction to ``unit`` ("word" or "char")."""
    import jiwer
    from jiwer import transformations

    if transform == "default":
        return transformations.wer_default if unit == "word" else transformations.cer_default
    names = NORMALIZE if transform == "normalize" else transform
    steps = [getattr(jiwer, t)() for t in (TRANSFORMS[n] for n in names) if t is not None]
    steps.append(jiwer.ReduceToListOfListOfWords() if unit == "word" else jiwer.ReduceToListOfListOfChars())
    return jiwer.Compose(steps)


def edit_statistics(hypotheses: Sequence[str], references: Sequence[str], transform: Any,
                    unit: str) -> np.ndarray:
    """Per-item ``[S + D + I, H + S + D]`` from one jiwer call over all items."""
    import jiwer

    n = len(hypotheses)
    out = np.zeros((n, 2), dtype=np.float64)
    if n == 0:
        return out
    process = jiwer.process_words if unit == "word" else jiwer.process_characters
    result = process(list(references), list(hypotheses), reference_transform=transform,
                     hypothesis_transform=transform)
    if len(result.alignments) != n:
        raise ValueError(f"the transform changed the number of items from {n} to {len(result.alignments)}")
    edits = out[:, 0]
    ref_len = out[:, 1]
    for i, (chunks, ref, hyp) in enumerate(zip(result.alignments, result.references, result.hypotheses)):
        hits = subs = 0
        for chunk in chunks:
            kind = chunk.type
            if kind == "equal":
                hits += chunk.ref_end_idx - chunk.ref_start_idx
            elif kind == "substitute":
                subs += chunk.ref_end_idx - chunk.ref_start_idx
        # S + D + I with D = |ref| - H - S and I = |hyp| - H - S
        edits[i] = len(ref) + len(hyp) - 2 * hits - subs
        ref_len[i] = len(ref)
    return out


def aggregate(sums: Any, params: Mapping[str, Any] | None = None) -> Any:
    """``edits / reference length``; the edit count itself where the reference length is 0 (jiwer)."""
    s = c.as_sums(sums, 2, "wer/cer")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s[..., 1] > 0, s[..., 0] / s[..., 1], s[..., 0])[()]


class ErrorRate(SummableMetric):
    """WER or CER, bound to a unit."""

    higher_is_better = False
    accepts = ACCEPTS
    libraries = LIBRARIES
    revision = REVISION
    params = PARAMS

    def __init__(self, name: str, unit: str, description: str):
        self.name = name
        self.unit = unit
        self.description = description

    def statistics(self, predictions: Predictions, references: References,
                   params: Mapping[str, Any]) -> np.ndarray:
        p = self.resolve(params)
        self.check_type(predictions)
        hyps = list(predictions.values)
        refs = c.single_references(self.name, references, len(hyps))
        return edit_statistics(hyps, refs, build_transform(p["transform"], self.unit), self.unit)

    def aggregate(self, sums: Any, params: Mapping[str, Any] | None = None) -> Any:
        return aggregate(sums, params)


wer = ErrorRate("wer", "word", "word error rate (jiwer)")
cer = ErrorRate("cer", "char", "character error rate (jiwer)")
