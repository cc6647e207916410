"""Submission intake: pick the kind, validate, enforce limits, store content-addressed.

A rejected submission leaves nothing behind but an event; an accepted one is a blob plus one row.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from referee.platform.core.errors import LimitExceeded, SubmissionRejected
from referee.platform.core.spec import Competition
from referee.platform.store import Store, utcnow
from referee.plugins.manager import get_plugin_manager

PREDICTIONS_KIND = "predictions"


def detect_kind(source: str | Path) -> str:
    """The first submission kind whose ``detect`` accepts ``source``; prediction files last."""
    kinds = get_plugin_manager().submission_kinds()
    for name, info in kinds.items():
        if name != PREDICTIONS_KIND and info.detect(source):
            return name
    return PREDICTIONS_KIND


def check_limits(store: Store, comp: Competition, team: str, now: dt.datetime, conn: Any) -> None:
    lim = comp.limits
    base = "SELECT COUNT(*) FROM submissions WHERE competition_id=? AND team=? AND counts_toward_quota=1"
    if lim.total is not None:
        n = conn.execute(base, (comp.id, team)).fetchone()[0]
        if n >= lim.total:
            raise LimitExceeded(f"team {team!r} has used all {lim.total} submissions for {comp.id!r}")
    if lim.per_team_per_day is not None:
        since = (now - dt.timedelta(days=1)).isoformat(timespec="microseconds")
        n = conn.execute(base + " AND created_at > ?", (comp.id, team, since)).fetchone()[0]
        if n >= lim.per_team_per_day:
            raise LimitExceeded(f"team {team!r} reached the limit of {lim.per_team_per_day} submissions per "
                                f"24 hours for {comp.id!r}; try again later")
    if lim.concurrent is not None:
        n = conn.execute("SELECT COUNT(*) FROM submissions WHERE competition_id=? AND team=? "
                         "AND status IN ('pending','running')", (comp.id, team)).fetchone()[0]
        if n >= lim.concurrent:
            raise LimitExceeded(f"team {team!r} already has {n} submission(s) waiting or running "
                                f"(limit {lim.concurrent}); wait for them to finish")


def submit(store: Store, comp: Competition, team: str, source: str | Path, *, kind: str | None = None,
           phase: str | None = None, now: dt.datetime | None = None, filename: str | None = None,
           metadata: dict | None = None, allow_closed_phase: bool = False) -> int:
    """Validate and store one submission; returns its id. Raises SubmissionRejected / LimitExceeded.

    The phase must be open at ``now``; only a host may pass ``allow_closed_phase`` (late entries).
    """
    team = team.strip()
    if not team:
        raise SubmissionRejected("team name is empty", hint="pass --team NAME")
    now = now or dt.datetime.now(dt.timezone.utc)
    ph = comp.phase(phase, when=now)
    if not ph.contains(now) and not allow_closed_phase:
        if phase is None:
            raise SubmissionRejected(f"no phase of {comp.id!r} is open now", code="phase_closed")
        window = f"{ph.start or 'the start'} to {ph.end or 'the end'}"
        raise SubmissionRejected(f"phase {ph.name!r} of {comp.id!r} is not open now (it runs from {window})",
                                 code="phase_closed")
    kind = kind or detect_kind(source)
    kinds = get_plugin_manager().submission_kinds()
    if kind not in kinds:
        raise SubmissionRejected(f"unknown submission kind {kind!r}; known: {sorted(kinds)}")
    # Check limits before the (possibly slow) validation, and again atomically at insert.
    with store.tx() as conn:
        check_limits(store, comp, team, now, conn)
    try:
        stored = kinds[kind].ingest(source, comp, store, filename=filename)
    except SubmissionRejected as exc:
        store.event("rejected", str(exc), competition_id=comp.id, team=team, submission_kind=kind, code=exc.code)
        raise
    meta = {**stored.get("metadata", {}), **(metadata or {})}
    created = now.isoformat(timespec="microseconds")
    with store.tx() as conn:
        check_limits(store, comp, team, now, conn)
        cur = conn.execute(
            """INSERT INTO submissions(competition_id, team, phase, kind, sha256, filename, size, status,
                   counts_toward_quota, created_at, updated_at, metadata_json)
               VALUES (?,?,?,?,?,?,?,'pending',1,?,?,?)""",
            (comp.id, team, ph.name, kind, stored["sha256"], stored.get("filename"), stored.get("size"),
             created, utcnow(), json.dumps(meta)))
        sid = int(cur.lastrowid)
    store.event("submitted", f"{kind} from {team}", competition_id=comp.id, submission_id=sid)
    return sid


def ingest_prediction_file(source: str | Path, comp: Competition, store: Store, *,
                           filename: str | None = None) -> dict:
    """The built-in kind: validate a prediction file against the ids, then store it."""
    from referee.scoring.reference import load_reference
    from referee.submissions.intake import validate_predictions

    path = Path(source)
    name = filename or path.name
    if not path.is_file():
        raise SubmissionRejected(f"{path} is not a file", source=name, hint="give the path of a prediction file")
    validate_predictions(path, comp, load_reference(comp), source=name)
    sha, size = store.put_blob_file(path)
    return {"sha256": sha, "size": size, "filename": name, "metadata": {}}
