"""Submission intake: pick the kind, validate, enforce limits, store content-addressed.

A rejected submission leaves nothing behind but an event; an accepted one is a blob plus one row.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from referee.platform.core.errors import SubmissionRejected
from referee.platform.core.jobs import FailureReason
from referee.platform.core.spec import Competition
from referee.platform.runtime.registry import publish_image
from referee.platform.store import Store
from referee.plugins.manager import get_plugin_manager

PREDICTIONS_KIND = "predictions"


def detect_kind(source: str | Path) -> str:
    """The first submission kind whose ``detect`` accepts ``source``; prediction files last."""
    kinds = get_plugin_manager().submission_kinds()
    for name, info in kinds.items():
        if name != PREDICTIONS_KIND and info.detect(source):
            return name
    return PREDICTIONS_KIND


def submit(store: Store, comp: Competition, team: str, source: str | Path, *, kind: str | None = None,
           phase: str | None = None, now: dt.datetime | None = None, filename: str | None = None,
           metadata: dict | None = None, allow_closed_phase: bool = False, description: str | None = None,
           baseline: bool = False) -> int:
    """Validate and store one submission; returns its id. Raises SubmissionRejected / LimitExceeded.

    The phase must be open at ``now``; only a host may pass ``allow_closed_phase`` (late entries).
    The file is checked against that phase's data, and its limits count that phase's submissions.
    This is the host's own programmatic entry: ``team`` becomes a team of the competition if it is
    not one yet (``Store.add_submission``); every command and page that takes a team name from a
    person checks that it names an existing team first. A ``baseline`` is a host's reference entry
    filed under the label ``team``: shown for comparison, ranked as no team, counted in no quota.
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
    comp = comp.for_phase(ph.name)  # the phase's data, metrics and limits
    kind = kind or detect_kind(source)
    kinds = get_plugin_manager().submission_kinds()
    if kind not in kinds:
        raise SubmissionRejected(f"unknown submission kind {kind!r}; known: {sorted(kinds)}")
    # Check limits before the (possibly slow) validation, and again atomically at insert.
    if not baseline:
        store.check_limits(comp.id, comp.limits, team, now, ph.name)
    try:
        stored = kinds[kind].ingest(source, comp, store, filename=filename)
    except SubmissionRejected as exc:
        store.event("rejected", str(exc), competition_id=comp.id, team=team, submission_kind=kind, code=exc.code,
                    charged=exc.charged)
        if exc.charged:  # a refused or failed build: recorded as a failed submission, counted like one
            source_name = filename or (exc.source.split("/")[0] if exc.source else Path(str(source)).name)
            store.add_submission(cid=comp.id, limits=comp.limits, team=team, phase=ph.name, kind=kind,
                                 sha256=exc.sha256 or "", filename=source_name, size=None, now=now,
                                 metadata={"refused_at_intake": exc.code, **(metadata or {})},
                                 failure=(FailureReason.BUILD_FAILED.value, str(exc)))
        raise
    meta = publish_image(comp, {**stored.get("metadata", {}), **(metadata or {})}, workspace=store.root)
    sid = store.add_submission(cid=comp.id, limits=comp.limits, team=team, phase=ph.name, kind=kind,
                               sha256=stored["sha256"], filename=stored.get("filename"), size=stored.get("size"),
                               now=now, metadata=meta, description=description, baseline=baseline)
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
