"""The leaderboard model: ranked entries of one phase and split, plus columns plugins add."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from referee.platform.core.text import safe_text


@dataclass
class Entry:
    rank: int
    team: str
    submission_id: int
    submitted_at: str
    metrics: dict[str, float | None]
    intervals: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    n_submissions: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for e in d["entries"]:
            e["intervals"] = {k: list(v) if v else None for k, v in e["intervals"].items()}
        return d

    def to_json(self) -> str:
        # exact strings; ensure_ascii escapes every control character, so nothing reaches a terminal raw
        return json.dumps(self.to_dict(), indent=2, default=str, ensure_ascii=True)

    def header(self) -> list[str]:
        return ["rank", "team", *self.metric_order, *self.columns_extra, "submission", "submitted_at"]

    def rows(self, digits: int = 5) -> list[list[str]]:
        out = []
        for e in self.entries:
            cells = [str(e.rank), safe_text(e.team)]
            for m in self.metric_order:
                v = e.metrics.get(m)
                cell = "" if v is None else f"{v:.{digits}f}"
                ci = e.intervals.get(m)
                if ci and v is not None:
                    cell += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
                cells.append(cell)
            cells += [_fmt(e.extra.get(c), digits) for c in self.columns_extra]
            cells += [f"#{e.submission_id}", e.submitted_at[:16].replace("T", " ")]
            out.append(cells)
        return out

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["rank", "team", *self.metric_order,
                    *[f"{m}_ci_low" for m in self.metric_order], *[f"{m}_ci_high" for m in self.metric_order],
                    *self.columns_extra, "submission_id", "submitted_at"])
        for e in self.entries:
            ci = [e.intervals.get(m) for m in self.metric_order]
            w.writerow([e.rank, safe_text(e.team), *[_raw(e.metrics.get(m)) for m in self.metric_order],
                        *[_raw(c[0]) if c else "" for c in ci], *[_raw(c[1]) if c else "" for c in ci],
                        *[_raw(e.extra.get(c)) for c in self.columns_extra], e.submission_id, e.submitted_at])
        return buf.getvalue()

    def to_markdown(self) -> str:
        head = self.header()
        lines = [safe_text(f"### {self.title} — {self.phase} / {self.split} ({self.mode}; "
                           f"primary: {self.primary}, {self.direction})"), "",
                 "| " + " | ".join(safe_text(h).replace("|", "\\|") for h in head) + " |",
                 "|" + "|".join("---" for _ in head) + "|"]
        for r in self.rows():
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
        lines += [""] + [f"> {safe_text(n)}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _raw(v: Any) -> str:
    if v is None:
        return ""
    return repr(v) if isinstance(v, float) else safe_text(v)


def _fmt(v: Any, digits: int) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e6 else f"{v:.4g}"
    return safe_text(v)
