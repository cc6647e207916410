"""Predictions: what every scorer receives, aligned to the reference order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass
class Predictions:
    """Predictions aligned to reference order."""

    type: str  # probability | label | text
    columns: list[str]
    values: Any  # float array (n, c) for probability; list[str] for label/text
    raw: Mapping[str, list[str]]  # every prediction column, aligned, as text (may be read on first use)

    def __len__(self) -> int:
        return len(self.values)
