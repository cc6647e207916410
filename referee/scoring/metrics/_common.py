"""Shared helpers for the built-in metrics: parameter checking, references, signatures."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import referee

# A parameter spec maps a name to (default, check); check returns a problem text or None.
ParamSpec = dict[str, tuple[Any, Callable[[Any], str | None]]]


def scorer_version(revision: str) -> str:
    """Scorer version: referee's version plus the metric's own revision."""
    return f"{referee.__version__}+{revision}"


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


# The labels of a binary task's references (``resolve_params`` checks that they differ).
BINARY_LABELS: ParamSpec = {
    "positive_label": ("1", text),
    "negative_label": ("0", text),
}


def integer(lo: int, hi: int | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            return "must be an integer"
        if value < lo or (hi is not None and value > hi):
            return f"must be between {lo} and {hi}" if hi is not None else f"must be at least {lo}"
        return None
    return check


def number(lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False,
           optional: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return "must be a number" + (" or null" if optional else "")
        bad_lo = value <= lo if open_lo else value < lo
        bad_hi = value >= hi if open_hi else value > hi
        if bad_lo or bad_hi or value != value:
            return f"must be in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"
        return None
    return check


def choice(options: Sequence[Any]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in options else "must be one of " + ", ".join(repr(o) for o in options)
    return check


def resolve_params(scorer: str, params: Mapping[str, Any] | None, spec: ParamSpec) -> dict[str, Any]:
    """Check ``params`` against ``spec`` and fill in defaults; ValueError names the bad parameter.

    A spec with ``positive_label`` and ``negative_label`` (``BINARY_LABELS``) also needs them to differ."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec))
    if unknown:
        known = ", ".join(spec) or "none"
        raise ValueError(f"{scorer}: unknown parameter(s) {', '.join(repr(u) for u in unknown)}; "
                         f"known parameters: {known}")
    out = {}
    for name, (default, check) in spec.items():
        value = params.get(name, default)
        problem = check(value)
        if problem:
            raise ValueError(f"{scorer}: parameter {name!r} {problem}, got {value!r}")
        out[name] = value
    if "positive_label" in out and "negative_label" in out and out["positive_label"] == out["negative_label"]:
        raise ValueError(f"{scorer}: positive_label and negative_label must differ, both are "
                         f"{out['positive_label']!r}")
    return out


def format_signature(scorer: str, resolved: Mapping[str, Any], version: str) -> str:
    """``name:<scorer>|param:value|...|version:<version>``, booleans as yes/no (like sacrebleu)."""
    parts = [f"name:{scorer}"]
    for key, value in resolved.items():
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, (list, tuple)):
            value = "+".join(str(v) for v in value)
        parts.append(f"{key}:{value}")
    parts.append(f"version:{version}")
    return "|".join(parts)


def require_type(scorer: str, predictions: Any, accepts: Sequence[str]) -> None:
    if predictions.type not in accepts:
        raise ValueError(f"{scorer} scores {' or '.join(accepts)} predictions, got {predictions.type!r} "
                         "predictions")


def single_references(scorer: str, references: Sequence[Any], n: int) -> list[str]:
    """One reference string per item; a one-element list counts as one reference."""
    if len(references) != n:
        raise ValueError(f"{scorer}: {n} predictions but {len(references)} references")
    out = list(references)
    for i, ref in enumerate(out):
        if isinstance(ref, str):
            continue
        if isinstance(ref, (list, tuple)) and len(ref) == 1 and isinstance(ref[0], str):
            out[i] = ref[0]
            continue
        raise ValueError(f"{scorer}: item {i} has {_describe(ref)}; {scorer} takes exactly one reference "
                         "string per item")
    return out


def reference_lists(scorer: str, references: Sequence[Any], n: int) -> list[list[str]]:
    """One or more reference strings per item, as lists. Empty cells of a multi-reference item (a
    blank column, an empty list entry) are missing references, not empty ones."""
    if len(references) != n:
        raise ValueError(f"{scorer}: {n} predictions but {len(references)} references")
    out: list[list[str]] = []
    for i, ref in enumerate(references):
        if isinstance(ref, str):
            out.append([ref])
        elif isinstance(ref, (list, tuple)) and all(isinstance(r, str) for r in ref) and any(ref):
            out.append([r for r in ref if r])
        else:
            raise ValueError(f"{scorer}: item {i} has {_describe(ref)}; give at least one reference "
                             "string per item")
    return out


def _describe(ref: Any) -> str:
    if isinstance(ref, (list, tuple)):
        return f"{len(ref)} references" if all(isinstance(r, str) for r in ref) else "a non-string reference"
    return f"a reference of type {type(ref).__name__}"


def binary_targets(scorer: str, references: Sequence[str], positive: str, negative: str) -> np.ndarray:
    """1.0 where the (stripped) reference is ``positive``, 0.0 where ``negative``; anything else is an error."""
    table: dict[str, float] = {}
    for ref in set(references):
        key = ref.strip()
        if key == positive:
            table[ref] = 1.0
        elif key == negative:
            table[ref] = 0.0
    if len(table) < len(set(references)):
        i, bad = next((i, r) for i, r in enumerate(references) if r not in table)
        raise ValueError(f"{scorer}: reference {bad!r} at item {i} is neither positive_label {positive!r} "
                         f"nor negative_label {negative!r}; set the positive_label/negative_label params "
                         "to the labels the reference uses")
    return np.fromiter((table[r] for r in references), dtype=np.float64, count=len(references))


def class_indices(scorer: str, references: Sequence[str], columns: Sequence[str]) -> np.ndarray:
    """Column index of each (stripped) reference label; a label that is no column is an error."""
    position = {c: j for j, c in enumerate(columns)}
    table = {ref: position.get(ref.strip(), -1) for ref in set(references)}
    missing = [r for r, j in table.items() if j < 0]
    if missing:
        i, bad = next((i, r) for i, r in enumerate(references) if table[r] < 0)
        raise ValueError(f"{scorer}: reference label {bad!r} at item {i} is not one of the prediction "
                         f"columns {list(columns)} ({len(missing)} unknown label(s) in all)")
    return np.fromiter((table[r] for r in references), dtype=np.intp, count=len(references))


def ratio(sums: Any, width: int, scorer: str) -> np.ndarray:
    """``sums[..., 0] / sums[..., 1]`` with a shape check; a zero denominator gives nan."""
    s = as_sums(sums, width, scorer)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (s[..., 0] / s[..., 1])[()]


def as_sums(sums: Any, width: int, scorer: str) -> np.ndarray:
    s = np.asarray(sums, dtype=np.float64)
    if s.ndim == 0 or s.shape[-1] != width:
        raise ValueError(f"{scorer}: aggregate expects summed statistics of shape (..., {width}), "
                         f"got shape {s.shape}")
    return s


def numeric_targets(scorer: str, references: Sequence[str]) -> np.ndarray:
    """Reference strings as finite floats; a reference that is no number is an error naming the item."""
    try:
        y = np.array(references, dtype=np.float64)
    except ValueError:
        for i, ref in enumerate(references):
            try:
                float(ref)
            except ValueError:
                raise ValueError(f"{scorer}: reference {ref!r} at item {i} is not a number; {scorer} compares "
                                 "numeric predictions with numeric references") from None
        raise
    bad = ~np.isfinite(y)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{scorer}: reference {references[i]!r} at item {i} is not a finite number")
    return y


def one_column(scorer: str, predictions: Any) -> np.ndarray:
    """The single numeric prediction column, shape (n,)."""
    values = np.asarray(predictions.values, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] != 1:
        raise ValueError(f"{scorer} compares one prediction column with the reference, got "
                         f"{values.shape[1]} columns {list(predictions.columns)}")
    return values.reshape(len(values))
