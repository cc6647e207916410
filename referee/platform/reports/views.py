"""Read-only views of submissions shared by the CLI and the web app."""

from __future__ import annotations

import json
from typing import Any

from referee.platform.store import Store


def submission_table(store: Store, competition_id: str, team: str | None = None) -> list[dict[str, Any]]:
    return [{"id": s.id, "team": s.team, "kind": s.kind, "phase": s.phase, "status": s.status,
             "failure_reason": s.failure_reason, "created_at": s.created_at, "filename": s.filename}
            for s in store.submissions(competition_id, team=team)]


def submission_detail(store: Store, sid: int) -> dict[str, Any]:
    s = store.get_submission(sid)
    scores = []
    for r in (store.scores(sid) if s.status == "scored" else []):  # a re-run's old scores wait to be replaced
        prov = json.loads(r["provenance_json"])
        scores.append({"metric": r["metric"], "split": r["split"], "value": r["value"], "ci_low": r["ci_low"],
                       "ci_high": r["ci_high"], "n_items": r["n_items"], "signature": prov.get("signature"),
                       "provenance": prov, "details": json.loads(r["details_json"])})
    jobs = [dict(j) for j in store.query("SELECT id, attempt, backend, state, failure_reason, message, exit_code, "
                                         "node, instance_type, started_at, finished_at FROM jobs "
                                         "WHERE submission_id=? ORDER BY attempt", (sid,))]
    from referee.platform.core.jobs import FailureReason
    explanation = None
    if s.failure_reason:
        try:
            explanation = FailureReason(s.failure_reason).explanation
        except ValueError:
            explanation = None
    return {"id": s.id, "competition_id": s.competition_id, "team": s.team, "phase": s.phase, "kind": s.kind,
            "sha256": s.sha256, "filename": s.filename, "size": s.size, "status": s.status,
            "failure_reason": s.failure_reason, "failure_explanation": explanation,
            "failure_message": s.failure_message, "log_tail": s.log_tail,
            "counts_toward_quota": bool(s.counts_toward_quota), "created_at": s.created_at,
            "updated_at": s.updated_at, "scores": scores, "jobs": jobs, "metadata": s.metadata}
