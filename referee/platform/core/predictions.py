"""What every scorer receives: ``Predictions`` aligned to the reference order, and ``References``.

Intake (``referee.submissions.intake``) parses a prediction file against the competition's
``prediction`` spec and lines its rows up with the reference ids, so item ``i`` of the predictions
and item ``i`` of the references are the same test example.

Prediction types (``prediction.type`` in the competition YAML):

* ``probability`` — one or more numeric columns, every value a finite number in [0, 1]. One column
  is P(positive); several columns are one probability per class, named by the column.
* ``score`` — like ``probability`` but any finite number (regression outputs, ranking scores,
  decision-function values).
* ``label`` — one text column holding a class label (whitespace stripped).
* ``text`` — one text column, used as written (translations, transcripts).

References are one string per item (the reference column as written in the reference file), or a
list of strings per item when the competition names several reference columns or a JSONL column
holds a list (several references per item, as in translation).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Mapping, Union

import numpy as np

PREDICTION_TYPES = ("probability", "score", "label", "text")
NUMERIC_TYPES = ("probability", "score")

# One reference string per item, or several per item.
References = Union[Sequence[str], Sequence[list[str]]]

_BLOB_FORMAT = "referee-predictions/1"


@dataclass
class Predictions:
    """Predictions aligned to the reference order (item ``i`` answers reference ``i``).

    ``type``: one of ``PREDICTION_TYPES``.
    ``columns``: the prediction columns of the file, in spec order (class names for multi-class
    probabilities).
    ``values``: for ``probability`` and ``score`` a float64 array of shape (n_items, n_columns);
    for ``label`` and ``text`` a list of n_items strings (labels are stripped, text is as written).
    ``raw``: every prediction column as the text of the file, aligned the same way.
    """

    type: str
    columns: list[str]
    values: Any
    raw: Mapping[str, list[str]]  # every prediction column, aligned, as text (may be read on first use)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def numeric(self) -> bool:
        """True for ``probability`` and ``score`` predictions (``values`` is a float array)."""
        return self.type in NUMERIC_TYPES

    def take(self, index: Sequence[int] | np.ndarray) -> "Predictions":
        """The items at ``index`` (positions, or a boolean mask over the items), in that order."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"a mask over {len(self)} items has shape {idx.shape}")
            idx = np.flatnonzero(idx)
        positions = idx.astype(np.intp).tolist()
        if self.numeric:
            values: Any = np.asarray(self.values, dtype=np.float64)[idx.astype(np.intp)]
        else:
            values = [self.values[i] for i in positions]
        raw = {c: [col[i] for i in positions] for c, col in self.raw.items()}
        return Predictions(type=self.type, columns=list(self.columns), values=values, raw=raw)

    def mix(self, other: "Predictions", use_other: np.ndarray) -> "Predictions":
        """Item ``i`` from ``other`` where ``use_other[i]``, else from ``self`` (a swap of two systems'
        predictions, as approximate randomization does)."""
        if (other.type, other.columns, len(other)) != (self.type, self.columns, len(self)):
            raise ValueError("only predictions of the same type, columns and length can be mixed")
        swap = np.asarray(use_other, dtype=bool)
        if self.numeric:
            values: Any = np.where(swap[:, None], np.asarray(other.values, dtype=np.float64).reshape(len(self), -1),
                                   np.asarray(self.values, dtype=np.float64).reshape(len(self), -1))
        else:
            values = [b if s else a for a, b, s in zip(self.values, other.values, swap.tolist())]
        raw = {c: [b if s else a for a, b, s in zip(col, other.raw.get(c, col), swap.tolist())]
               for c, col in self.raw.items()}
        return Predictions(type=self.type, columns=list(self.columns), values=values, raw=raw)

    def to_bytes(self) -> bytes:
        """A self-describing, compressed serialisation (what the engine stores for general scorers)."""
        values = np.asarray(self.values, dtype=np.float64).tolist() if self.numeric else list(self.values)
        doc = {"format": _BLOB_FORMAT, "type": self.type, "columns": self.columns, "values": values,
               "raw": {c: list(v) for c, v in self.raw.items()}}
        # mtime=0: the same predictions always give the same bytes (and so the same blob)
        return gzip.compress(json.dumps(doc, separators=(",", ":")).encode("utf-8"), mtime=0)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Predictions":
        """Inverse of ``to_bytes``; floats come back bit for bit."""
        doc = json.loads(gzip.decompress(data).decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != _BLOB_FORMAT:
            raise ValueError("not a serialised Predictions object")
        values: Any = doc["values"]
        if doc["type"] in NUMERIC_TYPES:
            values = np.asarray(values, dtype=np.float64).reshape(len(values), len(doc["columns"]))
        return cls(type=doc["type"], columns=list(doc["columns"]), values=values, raw=dict(doc["raw"]))

    @staticmethod
    def is_serialised(data: bytes) -> bool:
        """True for bytes written by ``to_bytes`` (gzip), False for a NumPy ``.npy`` statistics blob."""
        return data[:2] == b"\x1f\x8b"


__all__ = ["NUMERIC_TYPES", "PREDICTION_TYPES", "Predictions", "References"]
