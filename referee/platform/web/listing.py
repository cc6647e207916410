"""Submission lists with scores, as each viewer may see them (the API's list and the Submissions page).

Each row carries the primary score of its phase on every split the viewer sees (a team: the splits
its phase's visibility shows, ``phases.team_score_splits``; organisers: both) and whether the team
picked it for its final entry; a running one also carries ``waiting``: a job of it stuck waiting for a
machine, with the backend's reason (``Store.stuck_jobs``).
"""

from __future__ import annotations

from typing import Any

from referee.platform.controller import phases
from referee.platform.reports.views import submission_row
from referee.platform.store import Store, SubmissionRow
from referee.platform.web import access


def scored_rows(store: Store, comp: Any, subs: list[SubmissionRow], place: access.Seat) -> list[dict[str, Any]]:
    """Submission rows with the primary score of their phase on each split the viewer sees, and
    whether the team picked them for its final entry."""
    out = []
    by_phase: dict[str, list[SubmissionRow]] = {}
    for s in subs:
        by_phase.setdefault(s.phase, []).append(s)
    values: dict[int, dict[str, float | None]] = {}
    picked: set[int] = set()
    for phase, group in by_phase.items():
        view = comp.for_phase(phase, strict=False)
        splits = ["public", "private"] if place.can_view_all else (
            phases.team_score_splits(store, comp, phase) if phase in comp.phase_names() else ["public"])
        ids = [s.id for s in group if s.status.value == "scored"]
        for split in splits:
            for sid, row in store.score_rows(ids, view.primary_metric.key, split).items():
                values.setdefault(sid, {})[split] = row.value
        picked |= {p.submission_id for p in store.picks(comp.id, phase)}
    stuck = store.stuck_jobs(comp.id) if any(s.status.value == "running" for s in subs) else {}
    for s in subs:
        view = comp.for_phase(s.phase, strict=False)
        out.append({**submission_row(s, stuck.get(s.id)), "primary": view.primary_metric.key, "scores": values.get(s.id, {}),
                    "picked": s.id in picked})
    return out
