"""Leaderboards per phase and split: best-per-team or latest, ties, ranks, exports.

For the private split in ``best`` mode each team's entry is the submission that was best on the
*public* split (Kaggle's automatic selection), so private ranks are not chosen by peeking at private
scores. ``selection="split"`` picks by the split's own score instead.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from referee.platform.spec import Competition
from referee.platform.store import Store
from referee.plugins.manager import get_plugin_manager

TIE_RTOL = 1e-12

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
        return json.dumps(self.to_dict(), indent=2, default=str)

    def header(self) -> list[str]:
        return ["rank", "team", *self.metric_order, *self.columns_extra, "submission", "submitted_at"]

    def rows(self, digits: int = 5) -> list[list[str]]:
        out = []
        for e in self.entries:
            cells = [str(e.rank), e.team]
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
            w.writerow([e.rank, e.team, *[_raw(e.metrics.get(m)) for m in self.metric_order],
                        *[_raw(c[0]) if c else "" for c in ci], *[_raw(c[1]) if c else "" for c in ci],
                        *[_raw(e.extra.get(c)) for c in self.columns_extra], e.submission_id, e.submitted_at])
        return buf.getvalue()

    def to_markdown(self) -> str:
        head = self.header()
        lines = [f"### {self.title} — {self.phase} / {self.split} ({self.mode}; "
                 f"primary: {self.primary}, {self.direction})", "",
                 "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for r in self.rows():
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
        lines += [""] + [f"> {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _raw(v: Any) -> str:
    if v is None:
        return ""
    return repr(v) if isinstance(v, float) else str(v)


def _fmt(v: Any, digits: int) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


def metric_direction(comp: Competition, key: str) -> str:
    m = next(m for m in comp.metrics if m.key == key)
    if m.direction:
        return m.direction
    # a missing scorer plugin raises NotFound: guessing a direction could silently invert the ranking
    return "maximize" if get_plugin_manager().scorer(m.scorer).higher_is_better else "minimize"


def _better_key(direction: str) -> Callable[[float | None], float]:
    sign = -1.0 if direction == "maximize" else 1.0
    return lambda v: math.inf if v is None or math.isnan(v) else sign * v


def _tied(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=TIE_RTOL, abs_tol=1e-15)


def _scored_against_other_reference(store: Store, comp: Competition, sids: list[int], metric: str,
                                    split: str) -> list[int]:
    """Listed submissions whose score names a reference sha256 other than the current one."""
    if not sids:
        return []
    from referee.scoring.reference import load_reference
    current = load_reference(comp).sha256
    rows = store.query(f"SELECT submission_id, provenance_json FROM scores WHERE metric=? AND split=? "
                       f"AND submission_id IN ({','.join('?' * len(sids))})", (metric, split, *sids))
    return sorted(r["submission_id"] for r in rows
                  if json.loads(r["provenance_json"]).get("reference_sha256") != current)


def build(store: Store, comp: Competition, *, phase: str | None = None, split: str = "public",
          mode: str = "best", selection: str = "public", enrich: bool = True) -> Leaderboard:
    """Build the leaderboard for one phase and split (``mode``: best | latest | all)."""
    if mode not in ("best", "latest", "all"):
        raise ValueError(f"mode must be best, latest or all, not {mode!r}")
    if split not in ("public", "private"):
        raise ValueError(f"split must be public or private, not {split!r}")
    ph = comp.phase(phase).name if phase else comp.phase().name
    primary = comp.primary_metric.key
    direction = metric_direction(comp, primary)
    order = [primary] + [m.key for m in comp.metrics if m.key != primary]
    rows = store.query(
        "SELECT s.id, s.team, s.created_at, sc.metric, sc.split, sc.value, sc.ci_low, sc.ci_high "
        "FROM submissions s JOIN scores sc ON sc.submission_id = s.id "
        "WHERE s.competition_id=? AND s.phase=? AND s.status='scored' ORDER BY s.id", (comp.id, ph))
    subs: dict[int, dict[str, Any]] = {}
    for r in rows:
        d = subs.setdefault(r["id"], {"team": r["team"], "at": r["created_at"], "scores": {}, "ci": {}})
        d["scores"][(r["metric"], r["split"])] = r["value"]
        if r["ci_low"] is not None:
            d["ci"][(r["metric"], r["split"])] = (r["ci_low"], r["ci_high"])
    key = _better_key(direction)
    sel_split = split if (selection == "split" or split == "public") else "public"
    by_team: dict[str, list[int]] = {}
    for sid, d in subs.items():
        if (primary, split) in d["scores"]:
            by_team.setdefault(d["team"], []).append(sid)
    chosen: list[tuple[int, int]] = []  # (submission id, n submissions of team)
    for team, sids in by_team.items():
        if mode == "latest":
            chosen.append((max(sids), len(sids)))
        elif mode == "all":
            chosen += [(s, len(sids)) for s in sids]
        else:
            def sel(s: int) -> tuple[float, int]:
                v = subs[s]["scores"].get((primary, sel_split), subs[s]["scores"].get((primary, split)))
                return (key(v), s)
            chosen.append((min(sids, key=sel), len(sids)))
    chosen.sort(key=lambda t: (key(subs[t[0]]["scores"].get((primary, split))), subs[t[0]]["at"], t[0]))
    entries: list[Entry] = []
    prev: float | None = None
    for pos, (sid, n) in enumerate(chosen, start=1):
        d = subs[sid]
        v = d["scores"].get((primary, split))
        rank = entries[-1].rank if entries and _tied(v, prev) else pos
        prev = v
        entries.append(Entry(rank=rank, team=d["team"], submission_id=sid, submitted_at=d["at"],
                             metrics={m: d["scores"].get((m, split)) for m in order},
                             intervals={m: d["ci"].get((m, split)) for m in order}, n_submissions=n))
    lb = Leaderboard(competition_id=comp.id, title=comp.title, phase=ph, split=split, mode=mode, primary=primary,
                     direction=direction, metric_order=order, entries=entries)
    if split == "private" and mode == "best" and selection != "split":
        lb.notes.append("Each team's private entry is its best submission on the public split.")
    if any(e.rank == entries[i - 1].rank for i, e in enumerate(entries) if i):
        lb.notes.append("Tied entries share a rank and are listed by submission time.")
    stale = _scored_against_other_reference(store, comp, [e.submission_id for e in entries], primary, split)
    if stale:
        lb.notes.append(f"Entries {', '.join(f'#{s}' for s in stale)} were scored against different reference "
                        "data than the competition has now; `referee verify` shows the change and "
                        "`referee rerun` re-scores them.")
    if enrich:  # cost, tiers, CheckList columns come from plugins
        get_plugin_manager().hook.referee_leaderboard_enrich(store=store, competition=comp, leaderboard=lb)
    return lb
