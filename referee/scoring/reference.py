"""Reference data: the hidden answers, their ids, and the public/private split."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from referee.platform.core.errors import SpecError, SubmissionRejected
from referee.platform.core.hashing import file_sha256
from referee.platform.core.spec import Competition, DataSpec, SplitSpec
from referee.platform.core.tables import TXT_COLUMN, Table, guess_format, read_table
from referee.plugins.manager import get_runtime

SPLITS = ("public", "private")


@dataclass
class ReferenceData:
    ids: list[str]
    index: dict[str, int]
    columns: dict[str, list[str]]
    split: np.ndarray  # bool mask: True = public
    sha256: str
    path: Path
    list_columns: dict[str, bool] = dataclasses.field(default_factory=dict)  # JSONL columns of string lists

    def __len__(self) -> int:
        return len(self.ids)

    def mask(self, split: str) -> np.ndarray:
        if split == "public":
            return self.split
        if split == "private":
            return ~self.split
        if split == "all":
            return np.ones(len(self.ids), dtype=bool)
        raise ValueError(f"unknown split {split!r}")

    def splits(self) -> list[str]:
        """Splits with at least one row."""
        return [s for s in SPLITS if self.mask(s).any()]


def load_reference(comp: Competition) -> ReferenceData:
    """The competition's reference data (its effective data and split), cached by the runtime per file
    version and settings."""
    path = comp.reference_path
    data, split = comp.effective_data, comp.effective_split
    key = (str(path), path.stat().st_mtime_ns, data.model_dump_json(), split.model_dump_json(),
           str(comp.source_path))
    return get_runtime().cache("reference").get_or_compute(
        key, lambda: _load(path, data, split, comp.source_path or path))


def _load(path: Path, data: DataSpec, split_spec: SplitSpec, src: Path) -> ReferenceData:
    fmt = data.reference_format or guess_format(path)
    try:
        table: Table = read_table(path, fmt, source=str(path), txt_column=data.reference_columns[0])
    except SubmissionRejected as exc:
        raise SpecError(str(src), [("data.reference", str(exc))]) from None
    if fmt == "txt":
        ids = [str(i) for i in range(1, len(table) + 1)]
    else:
        id_col = data.reference_id_column
        if id_col not in table.columns:
            raise SpecError(str(src), [("data.reference_id_column",
                                        f"column {id_col!r} not in {path.name} (columns: {table.header})")])
        ids = table.columns[id_col]
    missing = [c for c in data.reference_columns if c not in table.columns]
    if missing:
        raise SpecError(str(src), [("data.reference_columns", f"{missing} not in {path.name} "
                                                               f"(columns: {table.header})")])
    index = {i: k for k, i in enumerate(ids)}
    if len(index) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise SpecError(str(src), [("data.reference", f"duplicate id {dup!r} in {path.name}")])
    split = _split_mask(split_spec, table, ids, src)
    lists = {c: fmt == "jsonl" and _is_string_lists(table.columns[c]) for c in data.reference_columns}
    return ReferenceData(ids=ids, index=index, columns=table.columns, split=split,
                         sha256=file_sha256(path), path=path, list_columns=lists)


def _is_string_lists(values: list[str]) -> bool:
    """True when every value of a JSONL column is a JSON list of strings (several references per item)."""
    if not values or not values[0].startswith("["):
        return False
    try:
        return all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in map(json.loads, values))
    except ValueError:
        return False


def _split_mask(s: SplitSpec, table: Table, ids: list[str], src: Path) -> np.ndarray:
    if s.column is not None:
        if s.column not in table.columns:
            raise SpecError(str(src), [("split.column", f"column {s.column!r} not in the reference file")])
        values = [v.strip().lower() for v in table.columns[s.column]]
        bad = sorted({v for v in values if v not in SPLITS})
        if bad:
            raise SpecError(str(src), [("split.column", f"values must be 'public' or 'private', found {bad[:5]}")])
        return np.array([v == "public" for v in values], dtype=bool)
    n = len(ids)
    n_public = int(round(n * float(s.public_fraction or 0.0)))
    order = np.random.default_rng(s.seed).permutation(n)
    mask = np.zeros(n, dtype=bool)
    mask[order[:n_public]] = True
    return mask


def reference_values(ref: ReferenceData, comp: Competition) -> list[str] | list[list[str]]:
    """The reference column(s) in reference order: one list, or one list per item (several columns,
    positional, or a JSONL column holding a list of strings)."""
    cols = comp.effective_data.reference_columns
    if len(cols) == 1:
        values = ref.columns[cols[0]]
        if ref.list_columns.get(cols[0]):
            return [json.loads(x) for x in values]
        return values
    return [list(t) for t in zip(*(ref.columns[c] for c in cols))]


__all__ = ["ReferenceData", "load_reference", "reference_values", "SPLITS", "TXT_COLUMN"]
