"""Read-only views of submissions shared by the CLI and the web app."""

from __future__ import annotations

from typing import Any

from referee.platform.core.jobs import FailureReason, SubmissionStatus
from referee.platform.store import Store, SubmissionRow
from referee.scoring.engine import SCORER_ERROR_EVENT


def submission_row(s: SubmissionRow) -> dict[str, Any]:
    """One line of a submission list."""
    return {"id": s.id, "team": s.team, "kind": s.kind, "phase": s.phase, "status": s.status.value,
            "failure_reason": s.failure_reason, "created_at": s.created_at, "filename": s.filename,
            "description": s.description, "hidden_reason": s.hidden_reason, "baseline": bool(s.baseline)}


def submission_table(store: Store, competition_id: str, team: str | None = None,
                     limit: int | None = None) -> list[dict[str, Any]]:
    """A competition's (or one team's) submissions, oldest first; ``limit``: the newest N, newest first."""
    if limit is not None:
        rows, _ = store.submissions_page(competition_id, team=team, limit=limit)
        return [submission_row(s) for s in rows]
    return [submission_row(s) for s in store.submissions(competition_id, team=team)]


def submission_detail(store: Store, sid: int) -> dict[str, Any]:
    s = store.get_submission(sid)
    scores = []
    # a re-run's old scores wait to be replaced
    for r in (store.scores(sid) if s.status is SubmissionStatus.SCORED else []):
        prov = r.provenance
        scores.append({"metric": r.metric, "split": r.split, "value": r.value, "ci_low": r.ci_low,
                       "ci_high": r.ci_high, "n_items": r.n_items, "signature": prov.get("signature"),
                       "provenance": prov, "details": r.details})
    jobs = [{"id": j.id, "attempt": j.attempt, "backend": j.backend, "state": j.state.value,
             "failure_reason": j.failure_reason, "message": j.message, "exit_code": j.exit_code, "node": j.node,
             "instance_type": j.instance_type, "started_at": j.started_at, "finished_at": j.finished_at}
            for j in store.jobs_of(sid)]
    explanation = None
    if s.failure_reason:
        try:
            explanation = FailureReason(s.failure_reason).explanation
        except ValueError:
            explanation = None
    # what only the host sees: a failing scorer's traceback (teams are told the host knows)
    host_notes = [{"at": e["at"], "kind": e["kind"], "message": e["message"]}
                  for e in store.events(kind=SCORER_ERROR_EVENT, submission_id=sid)]
    return {"id": s.id, "competition_id": s.competition_id, "team": s.team, "phase": s.phase, "kind": s.kind,
            "sha256": s.sha256, "filename": s.filename, "size": s.size, "status": s.status.value,
            "failure_reason": s.failure_reason, "failure_explanation": explanation,
            "failure_message": s.failure_message, "log_tail": s.log_tail,
            "counts_toward_quota": bool(s.counts_toward_quota), "created_at": s.created_at,
            "updated_at": s.updated_at, "scores": scores, "jobs": jobs, "metadata": s.metadata,
            "host_notes": host_notes,
            "description": s.description, "hidden_reason": s.hidden_reason, "hidden_at": s.hidden_at,
            "baseline": bool(s.baseline)}
