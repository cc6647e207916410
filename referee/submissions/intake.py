"""Intake validation of prediction files against a competition's ids and prediction spec.

Every rejection says which line and what to do. Validation never writes anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from referee.platform.core.errors import SubmissionRejected
from referee.platform.core.predictions import Predictions
from referee.platform.core.spec import Competition
from referee.platform.core.tables import Table, read_table
from referee.scoring.reference import ReferenceData

_SHOW = 5


def _fmt_ids(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_SHOW])
    return shown + (f" and {len(ids) - _SHOW} more" if len(ids) > _SHOW else "")


def validate_predictions(path: Path, comp: Competition, ref: ReferenceData, *,
                         source: str | None = None) -> Predictions:
    """Parse and check a prediction file; raise ``SubmissionRejected`` naming the line on any problem."""
    spec = comp.effective_prediction
    source = source or Path(path).name
    table = read_table(Path(path), spec.format, source=source, encoding=spec.encoding,
                       max_bytes=spec.max_bytes, txt_column=spec.columns[0])
    order = _align(table, comp, ref, source)
    raw = {c: [table.columns[c][k] for k in order] for c in spec.columns}
    lines = [table.lines[k] for k in order]
    values: Any
    if spec.type in ("probability", "score"):
        values = _numbers(raw, spec.columns, lines, source, spec.type == "probability", spec.sum_to_one,
                          spec.sum_tolerance)
    elif spec.type == "label":
        col = spec.columns[0]
        values = [v.strip() for v in raw[col]]
        if spec.labels is not None:
            allowed = set(spec.labels)
            for k, v in enumerate(values):
                if v not in allowed:
                    raise SubmissionRejected(f"label {v!r} in column {col!r} is not one of {spec.labels}",
                                             line=lines[k], source=source, code="bad_value")
    else:
        values = raw[spec.columns[0]]
    return Predictions(type=spec.type, columns=list(spec.columns), values=values, raw=raw)


def _align(table: Table, comp: Competition, ref: ReferenceData, source: str) -> list[int]:
    """Row order that lines the table up with the reference ids; checks columns and ids."""
    spec = comp.prediction
    n_ref = len(ref)
    if spec.format == "txt":
        if len(table) != n_ref:
            raise SubmissionRejected(f"found {len(table)} lines, expected {n_ref} (one prediction per line, "
                                     "in the order of the inputs)", source=source,
                                     line=min(len(table), n_ref) + 1, code="wrong_count")
        return list(range(n_ref))
    want = [spec.id_column, *spec.columns]
    missing = [c for c in want if c not in table.columns]
    extra = [c for c in table.header if c not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(f"unexpected column(s) {extra}")
        raise SubmissionRejected("; ".join(parts), line=1, source=source,
                                 hint=f"the header must be exactly: {','.join(want)}", code="wrong_columns")
    ids = [i.strip() for i in table.columns[spec.id_column]]
    order = [-1] * n_ref
    unknown: list[tuple[int, str]] = []
    for k, i in enumerate(ids):
        pos = ref.index.get(i)
        if pos is None:
            unknown.append((table.lines[k], i))
            continue
        if order[pos] != -1:
            first = table.lines[order[pos]]
            raise SubmissionRejected(f"duplicate id {i!r} (first seen on line {first})", line=table.lines[k],
                                     source=source, hint="keep exactly one row per id", code="duplicate_id")
        order[pos] = k
    if unknown:
        line, i = unknown[0]
        raise SubmissionRejected(f"unknown id {i!r}" + (f" ({len(unknown)} unknown ids in all)"
                                                         if len(unknown) > 1 else ""),
                                 line=line, source=source, hint="only ids from the test inputs may appear",
                                 code="unknown_id")
    absent = [ref.ids[p] for p, k in enumerate(order) if k == -1]
    if absent:
        raise SubmissionRejected(f"{len(absent)} id(s) missing: {_fmt_ids(absent)}", source=source,
                                 hint="add a row for every id in the test inputs", code="missing_id")
    return order


def _numbers(raw: dict[str, list[str]], columns: list[str], lines: list[int], source: str,
             probabilities: bool, sum_to_one: bool, tol: float) -> np.ndarray:
    """Numeric prediction columns: finite numbers, and within [0, 1] for probabilities."""
    n = len(lines)
    what = "probabilities" if probabilities else "numbers"
    out = np.empty((n, len(columns)), dtype=np.float64)
    for j, col in enumerate(columns):
        values = raw[col]
        try:
            arr = np.array(values, dtype=np.float64)
        except ValueError:
            for k, v in enumerate(values):
                try:
                    float(v)
                except ValueError:
                    raise SubmissionRejected(f"column {col!r}: {v!r} is not a number", line=lines[k],
                                             source=source, hint=f"write {what} as decimals, e.g. 0.73",
                                             code="bad_value") from None
            raise
        bad = ~np.isfinite(arr)
        if bad.any():
            k = int(np.argmax(bad))
            raise SubmissionRejected(f"column {col!r}: {values[k].strip()!r} is not a finite number",
                                     line=lines[k], source=source, code="bad_value",
                                     hint="replace NaN/inf with a " + ("probability" if probabilities else "number"))
        outside = (arr < 0.0) | (arr > 1.0)
        if probabilities and outside.any():
            k = int(np.argmax(outside))
            raise SubmissionRejected(f"column {col!r}: probability {values[k].strip()} is outside [0, 1]",
                                     line=lines[k], source=source, code="bad_value")
        out[:, j] = arr
    if sum_to_one and probabilities:
        sums = out.sum(axis=1)
        off = np.abs(sums - 1.0) > tol
        if off.any():
            k = int(np.argmax(off))
            raise SubmissionRejected(f"probabilities sum to {sums[k]:.6g}, not 1", line=lines[k], source=source,
                                     hint="normalise each row so its probabilities sum to 1",
                                     code="bad_value")
    return out
