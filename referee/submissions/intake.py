"""Intake validation of prediction files against a competition's ids and prediction spec.

Every rejection says which line and what to do. Validation never writes anything, and reads the file
one row at a time into compact arrays (ids resolved to reference positions as they are read, numbers
parsed a block of rows at a time), so its memory stays a small multiple of the file's size.

Checks, in the order their errors are reported: the columns; the ids (a duplicate at once, then the
first unknown id, then the missing ones); then per prediction column the first value that is not a
number, not finite or out of range (earliest line first); then rows that must sum to one.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from array import array
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Callable

import numpy as np

from referee.platform.core.errors import SubmissionRejected
from referee.platform.core.predictions import NUMERIC_TYPES, Predictions
from referee.platform.core.spec import Competition
from referee.platform.core.tables import Rows, open_rows
from referee.platform.core.text import clip, summarize
from referee.scoring.reference import ReferenceData

_BLOCK = 8192  # rows parsed together (small: a block's text is held until it is parsed)
_NUMBER = re.compile(r"[ \t\n\r\f\v]*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)"
                     r"[ \t\n\r\f\v]*\Z", re.IGNORECASE)
_CONFUSABLES = Path(__file__).with_name("confusables.json")


def validate_predictions(path: Path, comp: Competition, ref: ReferenceData, *,
                         source: str | None = None) -> Predictions:
    """Parse and check a prediction file; raise ``SubmissionRejected`` naming the line on any problem."""
    spec = comp.effective_prediction
    source = source or Path(path).name
    with open_rows(Path(path), spec.format, source=source, encoding=spec.encoding, max_bytes=spec.max_bytes,
                   txt_column=spec.columns[0]) as rows:
        if spec.type in NUMERIC_TYPES:
            parsed: _Columns = _NumberColumns(len(ref), spec.columns, probabilities=spec.type == "probability")
        else:
            parsed = _TextColumns(len(ref), spec.columns, strip=spec.type == "label")
        line_of = _scan(rows, parsed, comp, ref, source)
    reload = functools.partial(_raw_columns, Path(path), comp, ref, source)
    if spec.type in NUMERIC_TYPES:
        assert isinstance(parsed, _NumberColumns)
        parsed.check(source, line_of, spec.sum_to_one, spec.sum_tolerance)
        return Predictions(type=spec.type, columns=list(spec.columns), values=parsed.values, raw=_LazyRaw(reload))
    assert isinstance(parsed, _TextColumns)
    col = spec.columns[0]
    values = parsed.values[col]
    if spec.type == "label" and spec.labels is not None:
        allowed = set(spec.labels)
        bad = [p for p, v in enumerate(values) if v not in allowed]
        if bad:
            k = min(bad, key=lambda p: line_of[p])
            raise SubmissionRejected(f"label {clip(values[k])} in column {col!r} is not one of {spec.labels}",
                                     line=int(line_of[k]), source=source, code="bad_value")
    raw: Mapping[str, list[str]] = parsed.raw if spec.type == "text" else _LazyRaw(reload)
    return Predictions(type=spec.type, columns=list(spec.columns), values=values, raw=raw)


# -- the scan: ids to reference positions, values into columns ---------------------------------------
class _Columns:
    def take(self, pos: list[int], lines: list[int], texts: list[list[str]]) -> None:
        """A block of rows: their reference positions, source lines and column texts."""


def _scan(rows: Rows, parsed: _Columns, comp: Competition, ref: ReferenceData, source: str) -> np.ndarray:
    """Read every row into ``parsed``; the source line of each reference position."""
    spec = comp.effective_prediction
    n_ref = len(ref)
    line_of = array("q", [-1]) * n_ref
    block = _Block(parsed, len(spec.columns))
    if spec.format == "txt":
        count = 0
        for line, values in rows:
            if count < n_ref:
                block.add(count, line, values)
                line_of[count] = line
            count += 1
        if count != n_ref:
            raise SubmissionRejected(f"found {count} lines, expected {n_ref} (one prediction per line, "
                                     "in the order of the inputs)", source=source,
                                     line=min(count, n_ref) + 1, code="wrong_count")
        block.flush()
        return np.frombuffer(line_of, dtype=np.int64)
    header = rows.header
    want = [spec.id_column, *spec.columns]
    missing = [c for c in want if c not in header]
    extra = [c for c in header if c not in want]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) [{summarize(missing)}]")
        if extra:
            parts.append(f"unexpected column(s) [{summarize(extra)}]" if len(extra) > 5 else
                         f"unexpected column(s) {extra}")
        raise SubmissionRejected("; ".join(parts), line=1, source=source,
                                 hint=f"the header must be exactly: {','.join(want)}", code="wrong_columns")
    id_at = header.index(spec.id_column)
    at = [header.index(c) for c in spec.columns]
    index_get = ref.index.get
    unknown = 0
    first_unknown: tuple[int, str] | None = None
    pos_block, line_block = block.pos, block.lines
    col_blocks = list(zip(block.texts, at))
    for line, values in rows:
        i = values[id_at].strip()
        pos = index_get(i)
        if pos is None:
            unknown += 1
            if first_unknown is None:
                first_unknown = (line, i)
            continue
        if line_of[pos] != -1:
            raise SubmissionRejected(f"duplicate id {clip(i)} (first seen on line {line_of[pos]})", line=line,
                                     source=source, hint="keep exactly one row per id", code="duplicate_id")
        line_of[pos] = line
        pos_block.append(pos)
        line_block.append(line)
        for texts, c in col_blocks:
            texts.append(values[c])
        if len(pos_block) >= _BLOCK:
            block.flush()
    if first_unknown is not None:
        line, i = first_unknown
        raise SubmissionRejected(f"unknown id {clip(i)}" + (f" ({unknown:,} unknown ids in all)" if unknown > 1 else "")
                                 + _lookalike(i, ref), line=line, source=source,
                                 hint="only ids from the test inputs may appear", code="unknown_id")
    lines = np.frombuffer(line_of, dtype=np.int64)
    absent = np.flatnonzero(lines == -1)
    if len(absent):
        raise SubmissionRejected(f"{len(absent):,} id(s) missing: {summarize(ref.ids[p] for p in absent)}",
                                 source=source, hint="add a row for every id in the test inputs", code="missing_id")
    block.flush()
    return lines


class _Block:
    """Rows collected until there are enough to parse together; cleared in place."""

    def __init__(self, parsed: _Columns, n_columns: int):
        self.parsed = parsed
        self.pos: list[int] = []
        self.lines: list[int] = []
        self.texts: list[list[str]] = [[] for _ in range(n_columns)]

    def add(self, pos: int, line: int, values: list[str]) -> None:
        self.pos.append(pos)
        self.lines.append(line)
        for texts, v in zip(self.texts, values):
            texts.append(v)
        if len(self.pos) >= _BLOCK:
            self.flush()

    def flush(self) -> None:
        if self.pos:
            self.parsed.take(self.pos, self.lines, self.texts)
        self.pos.clear()
        self.lines.clear()
        for texts in self.texts:
            texts.clear()


class _NumberColumns(_Columns):
    """Probabilities (within [0, 1]) or scores (any finite number), parsed a block at a time into one
    float array aligned to the reference."""

    def __init__(self, n: int, columns: list[str], *, probabilities: bool = True):
        self.columns = columns
        self.probabilities = probabilities
        self.values = np.full((n, len(columns)), np.nan, dtype=np.float64)
        # per column: the earliest (line, text) that is not a number / not finite / outside [0, 1]
        self.bad: list[dict[str, tuple[int, str]]] = [{} for _ in columns]

    def take(self, pos: list[int], lines: list[int], texts: list[list[str]]) -> None:
        where = np.asarray(pos, dtype=np.int64)
        for j, column in enumerate(texts):
            arr = _parse_numbers(column)
            bad = self.bad[j]
            if arr is None:
                k = next((k for k, t in enumerate(column) if not _is_number(t)), 0)
                bad.setdefault("number", (lines[k], column[k]))
                continue
            checks = [("finite", ~np.isfinite(arr))]
            if self.probabilities:
                checks.append(("range", (arr < 0.0) | (arr > 1.0)))
            for kind, mask in checks:
                if kind not in bad and mask.any():
                    k = int(np.argmax(mask))
                    bad[kind] = (lines[k], column[k])
            self.values[where, j] = arr

    def check(self, source: str, line_of: np.ndarray, sum_to_one: bool, tol: float) -> None:
        what = "probability" if self.probabilities else "number"
        for col, bad in zip(self.columns, self.bad):
            if "number" in bad:
                line, v = bad["number"]
                raise SubmissionRejected(f"column {col!r}: {clip(v)} is not a number", line=line, source=source,
                                         hint=f"write {what}s as decimals with ASCII digits, e.g. 0.73",
                                         code="bad_value")
            if "finite" in bad:
                line, v = bad["finite"]
                raise SubmissionRejected(f"column {col!r}: {clip(v.strip())} is not a finite number", line=line,
                                         source=source, hint=f"replace NaN/inf with a {what}", code="bad_value")
            if "range" in bad:
                line, v = bad["range"]
                raise SubmissionRejected(f"column {col!r}: probability {v.strip()[:40]} is outside [0, 1]",
                                         line=line, source=source, code="bad_value")
        if sum_to_one and self.probabilities:
            sums = self.values.sum(axis=1)
            off = np.flatnonzero(np.abs(sums - 1.0) > tol)
            if len(off):
                k = int(off[np.argmin(line_of[off])])
                raise SubmissionRejected(f"probabilities sum to {sums[k]:.6g}, not 1", line=int(line_of[k]),
                                         source=source, hint="normalise each row so its probabilities sum to 1",
                                         code="bad_value")


def _is_number(text: str) -> bool:
    """A decimal number in ASCII (Python's float() also takes '０.５', '٠.٥' and '0.0_9': refused)."""
    return _NUMBER.match(text) is not None


def _parse_numbers(texts: list[str]) -> np.ndarray | None:
    """The block as floats, or None when one of them is not a plain ASCII decimal."""
    joined = "".join(texts)
    if not joined.isascii() or "_" in joined:
        return None  # float() would take non-ASCII digits and underscores
    try:
        return np.array(texts, dtype=np.float64)
    except ValueError:
        return None


class _TextColumns(_Columns):
    """Labels (stripped; equal labels share one string) or texts (as written), one list per column
    aligned to the reference."""

    def __init__(self, n: int, columns: list[str], *, strip: bool):
        self.strip = strip
        self.values: dict[str, list[str]] = {c: [""] * n for c in columns}
        self._lists = list(self.values.values())
        self._intern: dict[str, str] = {}

    @property
    def raw(self) -> dict[str, list[str]]:
        return self.values

    def take(self, pos: list[int], lines: list[int], texts: list[list[str]]) -> None:
        for col, column in zip(self._lists, texts):
            for p, v in zip(pos, column):
                if self.strip:
                    v = v.strip()
                    v = self._intern.setdefault(v, v) if len(self._intern) < 4096 else v
                col[p] = v


class _LazyRaw(Mapping[str, list[str]]):
    """``Predictions.raw`` for large validated files: the text columns, read again only when asked for."""

    def __init__(self, load: Callable[[], dict[str, list[str]]]):
        self._load = load
        self._data: dict[str, list[str]] | None = None

    def _get(self) -> dict[str, list[str]]:
        if self._data is None:
            self._data = self._load()
        return self._data

    def __getitem__(self, key: str) -> list[str]:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def _raw_columns(path: Path, comp: Competition, ref: ReferenceData, source: str) -> dict[str, list[str]]:
    spec = comp.effective_prediction
    columns = _TextColumns(len(ref), spec.columns, strip=False)
    with open_rows(path, spec.format, source=source, encoding=spec.encoding,
                   txt_column=spec.columns[0]) as rows:
        _scan(rows, columns, comp, ref, source)
    return columns.raw


# -- look-alike ids ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _confusables() -> dict[str, str]:
    return dict(json.loads(_CONFUSABLES.read_text(encoding="utf-8"))["map"])


def skeleton(text: str) -> str:
    """``text`` with look-alike characters folded to the ASCII they imitate and invisible ones dropped."""
    table = _confusables()
    folded = unicodedata.normalize("NFKC", text)
    return "".join(table.get(ch, ch) for ch in folded if unicodedata.category(ch) != "Cf")


def _lookalike(unknown: str, ref: ReferenceData) -> str:
    """A sentence naming the code points when ``unknown`` imitates a known id; '' otherwise."""
    if unknown.isascii() and unknown.isprintable():
        return ""
    target = skeleton(unknown)
    known = next((i for i in ref.ids if i != unknown and len(i) <= 4 * len(unknown) + 8 and skeleton(i) == target),
                 None)
    if known is None:
        return ""
    odd = [ch for ch in unknown if ch not in known]
    names = ", ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, 'an unnamed character')}" for ch in dict.fromkeys(odd))
    return (f"; it differs from the known id {clip(known)} only by look-alike or invisible characters"
            + (f": {names}" if names else ""))
