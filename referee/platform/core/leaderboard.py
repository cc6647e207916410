"""The leaderboard model: ranked entries of one phase and split, the host's baselines as unranked
rows below them, plus the columns plugins add.

A plugin adds a column as a ``LeaderboardColumn`` record: its values per entry (by submission id)
and how to show them (``kind``: number, percent, rate, currency, tier, p-value, flag or text).
Renderers (``referee.platform.leaderboard.render``) format cells by kind only; they never know a
plugin's column by its key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

ColumnKind = Literal["number", "percent", "rate", "currency", "tier", "p-value", "flag", "text"]
COLUMN_KINDS: tuple[str, ...] = ("number", "percent", "rate", "currency", "tier", "p-value", "flag", "text")


@dataclass(frozen=True)
class LeaderboardColumn:
    """A column a plugin adds to a leaderboard.

    ``values``: submission id -> value (entries left out get no value: an empty cell).
    ``kind``: how renderers format and style the value — ``number``; ``percent`` (a fraction shown as
    12.3%); ``rate`` (a fraction where lower is better, coloured good/mid/bad on the web page);
    ``currency`` (USD); ``tier`` (an integer rank group, shown as a badge and colouring the plots);
    ``p-value``; ``flag`` (true/"yes" marks an entry); ``text``.
    ``terminal``: whether the compact terminal table shows it (every export always does).
    ``help``: one line that explains the column (a tooltip on the web page).
    ``notes``: sentences shown under the leaderboard while the column is on it.
    """

    key: str
    values: Mapping[int, Any]
    label: str = ""
    kind: ColumnKind = "number"
    terminal: bool = True
    help: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a leaderboard column needs a key")
        if self.kind not in COLUMN_KINDS:
            raise ValueError(f"column {self.key!r}: kind must be one of {COLUMN_KINDS}, not {self.kind!r}")

    @property
    def title(self) -> str:
        """The header text: the label, else the key."""
        return self.label or self.key


@dataclass
class Entry:
    rank: int | None  # None for a baseline (``Leaderboard.baselines``): shown for comparison, ranked as no team
    team: str
    submission_id: int
    submitted_at: str
    metrics: dict[str, float | None]
    intervals: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    n_submissions: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False


@dataclass
class Leaderboard:
    competition_id: str
    title: str
    phase: str
    split: str
    mode: str
    primary: str
    direction: str
    metric_order: list[str]
    entries: list[Entry]
    columns_extra: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    columns: list[LeaderboardColumn] = field(default_factory=list)
    baselines: list[Entry] = field(default_factory=list)  # the host's reference entries, unranked

    def rows(self) -> list[Entry]:
        """What a renderer lists: the ranked entries, then the baselines (rank None)."""
        return [*self.entries, *self.baselines]

    def add_column(self, column: LeaderboardColumn) -> None:
        """Put a plugin's column on the board: its key after the existing extra columns (a column with
        the same key is replaced), its values into each entry's ``extra``, its notes under the board."""
        self.columns = [c for c in self.columns if c.key != column.key] + [column]
        if column.key not in self.columns_extra:
            self.columns_extra.append(column.key)
        for e in self.entries:
            if e.submission_id in column.values:
                e.extra[column.key] = column.values[e.submission_id]
        for note in column.notes:
            if note not in self.notes:
                self.notes.append(note)

    def column(self, key: str) -> LeaderboardColumn:
        """The record of an extra column; one inferred from its values when nobody declared it."""
        for c in self.columns:
            if c.key == key:
                return c
        values = {e.submission_id: e.extra[key] for e in self.entries if key in e.extra}
        sample = next((v for v in values.values() if v is not None), None)
        kind: ColumnKind = "flag" if isinstance(sample, bool) else \
            "number" if isinstance(sample, (int, float)) else "text"
        return LeaderboardColumn(key=key, values=values, kind=kind)

    def column_of_kind(self, kind: str) -> LeaderboardColumn | None:
        """The first extra column of ``kind`` (e.g. the ``tier`` column plots colour by), if any."""
        return next((c for c in (self.column(k) for k in self.columns_extra) if c.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in fields(self):
            if f.name != "columns":
                v = getattr(self, f.name)
                d[f.name] = [asdict(e) for e in v] if f.name in ("entries", "baselines") else \
                    list(v) if isinstance(v, list) else v
        for e in [*d["entries"], *d["baselines"]]:
            e["intervals"] = {k: list(v) if v else None for k, v in e["intervals"].items()}
        d["column_info"] = {k: {"label": c.title, "kind": c.kind, "help": c.help}
                            for k, c in ((k, self.column(k)) for k in self.columns_extra)}
        return d

    def to_json(self) -> str:
        # exact strings; ensure_ascii escapes every control character, so nothing reaches a terminal raw
        return json.dumps(self.to_dict(), indent=2, default=str, ensure_ascii=True)
